"""The runtime tokenizer gives exactly open_clip's token ids (export writes its file; the runtime never imports
open_clip)."""
import json
from pathlib import Path

import numpy as np
import pytest

from clipfsar.runtime.teaching.tokenizer import ClipTokenizer, TokenizerError, build_tokenizer_json

open_clip = pytest.importorskip("open_clip")
DATA = Path(__file__).parent / "data" / "action_class_names.json"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(open_clip's tokenizer, ours built from its vocabulary), context 77."""
    oc = open_clip.get_tokenizer("ViT-B-16")
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    build_tokenizer_json(oc.encoder, sorted(oc.bpe_ranks, key=oc.bpe_ranks.get), path)
    return oc, ClipTokenizer(path, oc.context_length, oc.sot_token_id, oc.eot_token_id)


def corpus():
    data = json.loads(DATA.read_text())
    names = [n for k in ("hmdb51", "ucf101", "kinetics400", "ssv2_templates") for n in data[k]]
    assert (len(data["hmdb51"]), len(data["ucf101"]), len(data["kinetics400"]), len(data["ssv2_templates"])) == \
        (51, 101, 400, 174)
    texts = list(names)
    texts += ["a photo of " + n for n in names[::3]]  # the prompt as enrolment uses it
    texts += [n.upper() for n in names[::4]]
    texts += [f"  {n}\t\n  {n[::-1]}  " for n in names[::9]]  # extra and odd whitespace
    texts += [f"{n} {i} x{i * 37} 2.5kg 1/2 v3" for i, n in enumerate(names[::11])]  # digits
    texts += ["café au lait", "naïve jalapeño piñata", "Zürich Straße", "ÅNGSTRÖM façade", "crème brûlée",
              "e\u0301cole (combining accent)", "İstanbul ıi", "ǅemal Œuvre ﬁnal ﬀ", "Ã©tÃ© (mojibake)"]
    texts += ["打羽毛球", "跳绳 和 跑步", "ジャンプする", "축구를 하다", "бег трусцой", "Ελληνικά χορός", "רוקד",
              "يرقص بسرعة", "नृत्य करना", "เต้นรำ", "ქართული"]
    texts += ["waving 👋 hand", "🏀🏀 dunk", "👨‍👩‍👧 family walk", "🇫🇷 flag", "❤️ heart ✨", "☃ snowman"]
    texts += ["rock &amp; roll", "&lt;b&gt;bold&lt;/b&gt;", "it&#39;s &quot;fine&quot;", "&amp;amp;lt;",
              "caf&eacute;", "a&nbsp;b", "&#x1F600; smile", "R&D", "x &unknown; y"]
    texts += ["don't", "DON'T STOP", "it's", "'s 'S 'ſ 'Ve", "we'll they'd I'm", "rock'n'roll", "‘quoted’ “double”"]
    texts += [" ".join(names[i:i + 20]) for i in range(0, 400, 20)]  # longer than the context
    texts += ["x" * 500, "a" * 77, "supercalifragilisticexpialidocious " * 10, "", " ", "\u3000\u200b", "_", "--"]
    texts += ["tab\tseparated\tvalues", "line\nbreak", "nul\x00byte", "bell\x07", "\ufeffbom", "soft\u00adhyphen"]
    return texts


def test_same_ids_as_open_clip_on_1000_names(pair):
    oc, ours = pair
    texts = corpus()
    assert len(texts) >= 1000
    expected = oc(texts).numpy()
    got = ours(texts)
    bad = [t for t, e, g in zip(texts, expected, got) if not np.array_equal(e, g)]
    assert not bad, f"{len(bad)} texts differ, e.g. {bad[:5]}"
    assert got.dtype == np.int32 and got.shape == (len(texts), 77)


def test_truncation_at_a_short_context(tmp_path):
    """The tiny model's context (32): rows cut to the context end with the end-of-text id, as open_clip's."""
    oc = open_clip.SimpleTokenizer(context_length=32)
    path = tmp_path / "tokenizer.json"
    build_tokenizer_json(oc.encoder, sorted(oc.bpe_ranks, key=oc.bpe_ranks.get), path)
    ours = ClipTokenizer(path, 32, oc.sot_token_id, oc.eot_token_id)
    texts = corpus()[::7]
    np.testing.assert_array_equal(ours(texts), oc(texts).numpy())
    long = "a photo of " + " ".join(["juggling"] * 40)
    assert ours(long)[0, -1] == oc.eot_token_id


def test_check_fits_names_count_and_limit(pair):
    _, ours = pair
    assert ours.count("a photo of waving") == 6
    ours.check_fits("a photo of " + "x " * 70)  # 73 + 2 = 75 tokens: fits
    with pytest.raises(TokenizerError, match=r"takes 82 tokens; the text encoder's context is 77"):
        ours.check_fits("a photo of " + "x " * 77)


def test_reserved_tokens_refused(pair):
    _, ours = pair
    for text in ("a <end_of_text> b", "<START_OF_TEXT>", "&lt;end_of_text&gt;"):
        with pytest.raises(TokenizerError, match="reserved token"):
            ours(text)


def test_missing_or_corrupt_file(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        ClipTokenizer(tmp_path / "nope.json", 77, 49406, 49407)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="unreadable"):
        ClipTokenizer(tmp_path / "bad.json", 77, 49406, 49407)
