"""The official cos_sim epsilon (stored in checkpoints and bundles; older ones keep theirs), class names that do
not fit the text context or tokenise alike, and class-name maps stored with a checkpoint."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from data_media import write_video  # noqa: E402

from clipfsar.train import create_model_and_transforms, save_checkpoint  # noqa: E402
from clipfsar.train.checkpoint import load_checkpoint  # noqa: E402
from clipfsar.train.class_names import ClassNameError, check_prompts  # noqa: E402
from clipfsar.train.otam import cosine_distances  # noqa: E402


def official_cos_sim(x, y, epsilon=0.01):
    """The official CLIP-FSAR ``cos_sim``: x.y / (|x| |y| + epsilon)."""
    num = torch.matmul(x, y.transpose(-1, -2))
    den = torch.matmul(torch.norm(x, dim=-1).unsqueeze(-1), torch.norm(y, dim=-1).unsqueeze(-1).transpose(-1, -2))
    return num / (den + epsilon)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, prep = create_model_and_transforms("tiny", frames=8)
    return model.eval(), prep


@pytest.mark.parametrize("scale", [1.0, 0.01])  # unit-scale and small-norm features
def test_default_is_the_official_cos_sim(tiny, scale):
    model, _ = tiny
    assert (model.cfg.cos_eps, model.cfg.cos_mode) == (0.01, "product")
    g = torch.Generator().manual_seed(1)
    q, p = scale * torch.randn(3, 8, 64, generator=g), scale * torch.randn(5, 8, 64, generator=g)
    want = 1 - official_cos_sim(q[:, None], p[None])  # (3, 5, 8, 8)
    assert torch.allclose(cosine_distances(q, p), want, atol=1e-6)
    text = torch.randn(5, 64, generator=g)
    with torch.no_grad():
        got = model.video_text_logits(q, text)
    assert torch.allclose(got, model.vt_scale * official_cos_sim(q.mean(1), text), atol=1e-6)
    legacy = 1 - torch.einsum("qld,nmd->qnlm", q / (q.norm(dim=-1, keepdim=True) + 1e-8),
                              p / (p.norm(dim=-1, keepdim=True) + 1e-8))
    gap = (want - legacy).abs().max().item()
    assert gap > (1e-2 if scale < 1 else 1e-5)  # what the old eps got wrong


def test_checkpoints_keep_the_eps_they_were_made_with(tiny, tmp_path):
    model, prep = tiny
    new = save_checkpoint(tmp_path / "new", model, prep)
    assert json.loads((new / "config.json").read_text())["model"]["cos_eps"] == 0.01
    m_new, _, _ = load_checkpoint(new)
    assert (m_new.cfg.cos_eps, m_new.cfg.cos_mode) == (0.01, "product")
    old = save_checkpoint(tmp_path / "old", model, prep)  # as written before the keys existed
    meta = json.loads((old / "config.json").read_text())
    del meta["model"]["cos_eps"], meta["model"]["cos_mode"]
    (old / "config.json").write_text(json.dumps(meta))
    m_old, _, _ = load_checkpoint(old)
    assert (m_old.cfg.cos_eps, m_old.cfg.cos_mode) == (1e-8, "norms")
    q, p = torch.randn(2, 8, 64), torch.randn(3, 8, 64)
    legacy = 1 - torch.einsum("qld,nmd->qnlm", q / (q.norm(dim=-1, keepdim=True) + 1e-8),
                              p / (p.norm(dim=-1, keepdim=True) + 1e-8))
    assert torch.allclose(cosine_distances(q, p, m_old.cfg.cos_eps, m_old.cfg.cos_mode), legacy, atol=1e-6)


def test_bundles_state_their_eps(tiny_bundle):
    from clipfsar.runtime.bundle.reader import Bundle, Manifest
    facts = Bundle.open(tiny_bundle).manifest.model
    assert (facts.cos_eps, facts.cos_mode) == (0.01, "product")
    data = json.loads((tiny_bundle / "manifest.json").read_text())
    del data["model"]["cos_eps"], data["model"]["cos_mode"]  # a bundle exported before the keys existed
    old = Manifest.from_json(data, "old manifest").model
    assert (old.cos_eps, old.cos_mode) == (1e-8, "norms")


LONG_A = "person " * 30 + "waving the left hand"
LONG_B = "person " * 30 + "waving the right hand"


@pytest.mark.parametrize("names,error", [
    ([LONG_A, "kick ball"], r"class name 'person person .*: the prompt .* is 39 tokens, longer than the text "
                            r"encoder's context of 32"),
    ([LONG_A, LONG_B], r"is 39 tokens"),
    (["Kick Ball", "kick  ball"], r"classes 'Kick Ball' and 'kick  ball' tokenise identically"),
    (["kick ball", " "], r"a class name is empty"),
])
def test_class_names_the_text_encoder_cannot_take(tiny, names, error):
    model, _ = tiny
    with pytest.raises(ClassNameError, match=error):
        model.text_features(names)


def test_distinct_names_pass(tiny):
    model, _ = tiny
    check_prompts(model.tokenizer, "a photo of {}", ["kick ball", "kick balls", "brush hair"])
    assert model.text_features(["kick ball", "brush hair"]).shape == (2, 64)


def test_export_refuses_classes_that_tokenise_alike(tiny_checkpoint, tmp_path):
    from clipfsar.export.bundle_export import export_bundle
    for folder in ("kick_ball", "Kick_Ball"):
        write_video(tmp_path / "support" / folder / "a.avi", 8)
    with pytest.raises(ClassNameError, match="tokenise identically"):
        export_bundle(tiny_checkpoint, tmp_path / "support", tmp_path / "bundle", parity_episodes=1)
    assert not (tmp_path / "bundle").exists()


def test_class_map_stored_with_checkpoint_is_used_by_eval(tiny, tmp_path, caplog):
    from clipfsar.train.evaluate import evaluate_checkpoint
    model, prep = tiny
    root = tmp_path / "ssv2"
    for c in range(5):
        for i in range(2):
            write_video(root / f"test{c}" / f"{1000 * c + i}.avi", 8)
    (root / "splits").mkdir()
    (root / "splits" / "test.txt").write_text("".join(f"test{c}/{1000 * c + i}\n" for c in range(5) for i in range(2)))
    names = {f"test{c}": f"moving something {w}" for c, w in enumerate(["left", "right", "up", "down", "away"])}
    ckpt = save_checkpoint(tmp_path / "ckpt", model, prep, {"class_names": names})
    caplog.set_level(logging.WARNING)
    report = evaluate_checkpoint(ckpt, root, "test", way=5, shot=1, episodes=4)
    assert report["episodes"] == 4 and "look like ids" not in caplog.text
    caplog.clear()
    bare = save_checkpoint(tmp_path / "bare", model, prep)
    evaluate_checkpoint(bare, root, "test", way=5, shot=1, episodes=4)
    assert "5 class names look like ids" in caplog.text
    assert dataclasses.asdict(model.cfg)["cos_eps"] == 0.01
