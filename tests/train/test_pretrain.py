"""Contrastive pretraining: captions of the synthetic clips, the loss going down, the weights file loading through
every path local weights take, the train split alone being read, and each bad captions file refused."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipfsar.train.captions import CaptionsError, read_captions, split_clip_filter
from clipfsar.train.data import display_name, load_split
from clipfsar.train.pretrain import WEIGHTS_FILE, FrameStore, PretrainConfig, Pretrainer, contrastive_loss, encode_video
from clipfsar.train.synth import MOTIONS, SHAPES, make_dataset

CLI = [sys.executable, "-m", "clipfsar"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, synth_data):
    """A short pretraining run on the shared synthetic set; returns the Pretrainer (its model stays in memory)."""
    out = tmp_path_factory.mktemp("pre") / "run"
    trainer = Pretrainer(PretrainConfig(data=str(synth_data), out=str(out), steps=40, batch=16, lr=2e-3,
                                        warmup_steps=5, seed=0))
    trainer.run()
    return trainer


def test_synth_captions_match_their_clips(synth_data):
    rows = read_captions(synth_data / "captions.txt")
    clips = {}
    for r in rows:
        if r.frame is None:  # clip rows (frame rows: test_frame_captions.py)
            clips.setdefault(r.path, []).append(r.caption)
    every_clip = [p.resolve() for s in ("train", "val", "test")
                  for c in load_split(synth_data, s, scan=False).clips.values() for p, _ in c]
    assert sorted(clips) == sorted(every_clip)  # every clip captioned, nothing else
    for path, caps in clips.items():
        name = display_name(path.parent.name)  # "a circle moving left"
        shape, motion = name[2:].split(" ", 1)
        assert caps[0] == f"a photo of {name}"  # the class name in the default prompt comes first
        assert len(caps) >= 3 and len(set(caps)) == len(caps)
        for cap in caps:
            assert shape in cap.split() and not {s for s in SHAPES if s != shape} & set(cap.split())
        motion_word = {"moving left": "left", "moving right": "right", "moving up": ("up", "rising", "to top"),
                       "moving down": ("down", "falling", "to bottom"), "rotating clockwise": "clockwise",
                       "rotating anticlockwise": "anticlockwise", "growing": ("grow", "big", "expand", "swell"),
                       "shrinking": ("shrink", "small", "contract", "dwindl"), "bouncing": ("bounc", "hop", "jump")}
        assert motion in MOTIONS
        for cap in caps[1:]:
            words = motion_word[motion]
            assert any(w in cap for w in ((words,) if isinstance(words, str) else words)), (cap, motion)


def test_pretraining_lowers_the_contrastive_loss(pretrained, synth_data):
    import open_clip

    from clipfsar.train.backbone import create_clip
    from clipfsar.train.factory import preprocess_config_of
    torch.manual_seed(0)
    clip0 = create_clip("tiny")  # the run's initial model: same seed, same init
    tok = open_clip.get_tokenizer("clipfsar-tiny")
    rows = read_captions(synth_data / "captions.txt", keep=split_clip_filter(synth_data, "train"))
    by_clip = {}
    for r in rows:
        by_clip.setdefault(r.path, r.caption)
    paths = list(by_clip)[::7][:24]
    store = FrameStore(paths, preprocess_config_of(clip0), 512, 1)
    frames = store.batch(range(len(paths)), 8, np.random.default_rng(5))
    store.close()
    tokens = tok([by_clip[p] for p in paths])
    loss_fn = open_clip.loss.ClipLoss()
    with torch.no_grad():
        before = float(contrastive_loss(clip0.eval(), loss_fn, frames, tokens))
        after = float(contrastive_loss(pretrained.clip.eval(), loss_fn, frames, tokens))
    assert after < before - 0.3, (before, after)


def test_weights_load_like_any_local_weights_file(pretrained):
    import open_clip

    from clipfsar.train import create_model_and_transforms
    file = Path(pretrained.cfg.out) / WEIGHTS_FILE
    ref = pretrained.clip.eval()
    x = torch.randn(2, 8, 3, 64, 64)
    tokens = open_clip.get_tokenizer("clipfsar-tiny")(["a photo of a star growing", "a circle"])
    model, _ = create_model_and_transforms("tiny", weights=str(file))  # what `clipfsar train --weights` does
    plain = open_clip.create_model("clipfsar-tiny", pretrained=str(file))  # any open_clip loading path
    with torch.no_grad():
        want_v, want_t = encode_video(ref, x), ref.encode_text(tokens)
        for clip in (model.clip.eval(), plain.eval()):
            # equal up to float rounding: a frozen text tower takes PyTorch's fused attention path
            assert (encode_video(clip, x) - want_v).abs().max() <= 1e-5
            assert (clip.encode_text(tokens) - want_t).abs().max() <= 1e-5
        assert torch.equal(plain.logit_scale, ref.logit_scale)


def test_pretraining_reads_only_the_train_split(tmp_path):
    data = tmp_path / "data"
    make_dataset(data, seed=0, clips_per_class=2, size=32, length=8)
    held_out = [p for s in ("val", "test") for c in load_split(data, s, scan=False).clips.values() for p, _ in c]
    for p in held_out:  # any attempt to decode a val or test clip would now fail
        p.write_bytes(b"not a video")
    trainer = Pretrainer(PretrainConfig(data=str(data), out=str(tmp_path / "run"), steps=2, batch=8))
    trainer.run()
    train_clips = {p.resolve() for c in load_split(data, "train", scan=False).clips.values() for p, _ in c}
    assert set(trainer.clip_paths) == train_clips
    assert (tmp_path / "run" / WEIGHTS_FILE).is_file()


def test_rows_outside_the_split_are_counted_in_a_warning(tmp_path, synth_data, caplog):
    from clipfsar.train.captions import read_captions
    file = tmp_path / "captions.txt"
    file.write_text("a_circle_moving_left/0000.mp4\ta circle\na_circel_typo/0000.mp4\ta typo\n")
    with caplog.at_level("WARNING"):
        rows = read_captions(file, synth_data, keep=lambda path: "typo" not in str(path))
    assert len(rows) == 1
    assert "1 of 2 rows skipped" in caplog.text and str(file) in caplog.text


def test_a_captions_file_with_a_byte_order_mark_and_crlf_reads_like_a_plain_one(tmp_path, synth_data):
    from clipfsar.train.captions import read_captions
    plain = "a_circle_moving_left/0000.mp4\ta circle\r\na_circle_moving_left/0001.mp4\ta circle moving\r\n"
    file = tmp_path / "captions.txt"
    file.write_bytes(b"\xef\xbb\xbf" + plain.encode())  # what Notepad writes
    rows = read_captions(file, synth_data)
    assert [(r.path.name, r.caption, r.line) for r in rows] == [("0000.mp4", "a circle", 1),
                                                                 ("0001.mp4", "a circle moving", 2)]


BAD_CAPTIONS = [
    ("a_circle_moving_left/9999.mp4\ta circle\n", "line 2: clip 'a_circle_moving_left/9999.mp4' not found"),
    ("{clip}\t   \n", "line 2: the caption of '{clip}' is empty"),
    ("{clip}\t" + "a very long caption " * 10 + "\n", "line 2: the caption needs"),
    ("{clip}\ta circle\tmoving left\n", "line 2: the frame column must be a 0-based frame index"),
    ("{clip}\t0\ta\tb\n", "line 2: expected 2 or 3 tab-separated columns"),
    ("{clip} a circle moving left\n", "line 2: expected 2 or 3 tab-separated columns"),
    # per-frame rows: a frame the clip does not have (the shared set's clips have 16 frames), a bad index
    ("{clip}\t16\ta circle at the left\n", "line 2: frame 16 of '{clip}' does not exist: the clip has 16 frame(s)"),
    ("{clip}\t-1\ta circle at the left\n", "line 2: the frame index must be >= 0"),
    ("a_circle_moving_left/9999.mp4\t3\ta circle\n", "line 2: clip 'a_circle_moving_left/9999.mp4' not found"),
    ("# only a comment\n\n", "has no usable rows"),
]


@pytest.mark.parametrize("text,message", BAD_CAPTIONS)
def test_bad_captions_file_is_refused_with_file_and_line(tmp_path, synth_data, text, message):
    clip = next(iter(load_split(synth_data, "train", scan=False).clips.values()))[0][0]
    rel = clip.relative_to(synth_data).as_posix()
    captions = tmp_path / "captions.txt"
    captions.write_text("# path<TAB>caption\n" + text.format(clip=rel))
    out = tmp_path / "run"
    cfg = PretrainConfig(data=str(synth_data), out=str(out), captions=str(captions), steps=1, batch=2)
    with pytest.raises(CaptionsError) as err:
        Pretrainer(cfg).run()
    assert str(captions) in str(err.value) and message.format(clip=rel) in str(err.value)
    assert not out.exists()  # nothing written, no partial weights


def test_no_usable_rows_when_every_row_is_outside_the_train_split(tmp_path, synth_data):
    test_clip = next(iter(load_split(synth_data, "test", scan=False).clips.values()))[0][0]
    captions = tmp_path / "captions.txt"
    captions.write_text(f"{test_clip.relative_to(synth_data).as_posix()}\ta photo of a thing\n")
    with pytest.raises(CaptionsError, match="no usable rows .*outside the split"):
        Pretrainer(PretrainConfig(data=str(synth_data), out=str(tmp_path / "run"), captions=str(captions))).run()


def test_cli_bad_captions_exit_2_no_weights(tmp_path, synth_data):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    with open(data / "captions.txt", "a") as f:
        f.write("a_circle_moving_left/missing.mp4\ta circle moving left\n")
    n = len((data / "captions.txt").read_text().splitlines())
    r = subprocess.run(CLI + ["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1"],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr
    assert f"error: {data / 'captions.txt'}, line {n}: clip 'a_circle_moving_left/missing.mp4' not found" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_shipped_weights_load_by_tag():
    from clipfsar.train.backbone import BUILTIN_WEIGHTS, create_clip
    file = BUILTIN_WEIGHTS["clipfsar-tiny", "synth"]
    assert file.is_file() and file.stat().st_size <= 20 * 2 ** 20
    by_tag, by_file = create_clip("tiny", "synth"), create_clip("tiny", str(file))
    for (k, a), (_, b) in zip(by_tag.state_dict().items(), by_file.state_dict().items()):
        assert torch.equal(a, b), k


def test_pretraining_on_images_and_clips_without_splits(tmp_path, synth_data):
    import cv2
    data = tmp_path / "plain"  # no splits/: every row is used
    (data / "imgs").mkdir(parents=True)
    rows = []
    for i, colour in enumerate(((40, 40, 220), (220, 40, 40), (40, 220, 40))):
        img = np.zeros((48, 80, 3), np.uint8)
        img[10:38, 20 + i * 10:50 + i * 10] = colour
        cv2.imwrite(str(data / "imgs" / f"{i}.png"), img)
        rows.append(f"imgs/{i}.png\ta photo of a coloured block")
    clip = next(iter(load_split(synth_data, "train", scan=False).clips.values()))[0][0]
    rows.append(f"{clip}\ta photo of a moving shape")  # an absolute path to a video
    (data / "captions.txt").write_text("\n".join(rows) + "\n")
    trainer = Pretrainer(PretrainConfig(data=str(data), out=str(tmp_path / "run"), steps=2, batch=4))
    trainer.run()
    assert len(trainer.clip_paths) == 4 and (tmp_path / "run" / WEIGHTS_FILE).is_file()


@pytest.mark.parametrize("option, value, message", [
    ("--lr", "nan", "lr must be a finite number > 0"), ("--lr", "inf", "lr must be a finite number > 0"),
    ("--warmup-steps", "-1", "warmup_steps must be >= 0"), ("--cache-mb", "-1", "cache_mb must be >= 0")])
def test_cli_bad_numbers_exit_2_before_the_run_folder(tmp_path, synth_data, option, value, message):
    r = subprocess.run(CLI + ["pretrain", "--data", str(synth_data), "--out", str(tmp_path / "run"), "--steps", "1",
                              option, value], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_diverged_pretraining_writes_no_weights(tmp_path, synth_data):
    from clipfsar.runtime.base.errors import ClipFsarError
    from clipfsar.train.pretrain import PretrainConfig, Pretrainer
    out = tmp_path / "run"
    cfg = PretrainConfig(data=str(synth_data), out=str(out), steps=3, batch=4, lr=1e30, warmup_steps=0, seed=0)
    with pytest.raises(ClipFsarError, match="diverged"):
        Pretrainer(cfg).run()
    assert not list(out.glob("*.safetensors"))


def test_an_interrupted_run_folder_is_named_as_such(tmp_path, synth_data):
    """A run killed before its weights were written keeps its logs; reusing its --out says what it is."""
    from clipfsar.runtime.base.errors import ClipFsarError
    from clipfsar.train.pretrain import PretrainConfig, Pretrainer
    out = tmp_path / "run"
    out.mkdir()
    (out / "pretrain.json").write_text("{}")
    (out / "log.csv").write_text("step,lr,loss,logit_scale,clips_per_s\n")
    with pytest.raises(ClipFsarError, match="interrupted run .no weights.safetensors.: delete it, or choose"):
        Pretrainer(PretrainConfig(data=str(synth_data), out=str(out), steps=1, batch=4)).run()
    assert sorted(p.name for p in out.iterdir()) == ["log.csv", "pretrain.json"]  # nothing touched


def test_documented_open_clip_loading_works_in_a_fresh_interpreter():
    """The README's line for loading a tiny weights file with open_clip alone, in a process that has not
    registered the tiny config before (open_clip does not know it until resolve_arch registers it)."""
    import os
    import subprocess
    import sys

    from clipfsar.train.backbone import BUILTIN_WEIGHTS, TINY_ARCH
    file = BUILTIN_WEIGHTS[(TINY_ARCH, "synth")]
    code = ("import open_clip, torch; from safetensors.torch import load_file; "
            "from clipfsar.train.backbone import resolve_arch; "
            f"m = open_clip.create_model(resolve_arch('tiny'), pretrained={str(file)!r}); "
            f"w = load_file({str(file)!r}); sd = m.state_dict(); "
            "assert all(torch.equal(sd[k], w[k]) for k in w), 'weights differ'; print('loaded', len(w))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0 and r.stdout.startswith("loaded"), r.stderr[-2000:]


def test_kmeans_finds_separated_groups():
    from clipfsar.train.pretrain import kmeans
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 5
    x = np.concatenate([c + rng.normal(0, 0.1, (30, 8)) for c in centres])
    ids = kmeans(x, 4, rng)
    truth = np.repeat(np.arange(4), 30)
    assert all(len(set(ids[truth == g])) == 1 for g in range(4)) and len(set(ids)) == 4
    assert len(set(kmeans(x[:3], 10, rng))) <= 3  # k capped at the number of points


def test_hard_negative_batches_come_from_two_embedding_neighbourhoods(tmp_path, synth_data):
    """With hard_fraction 1 every frame pair of a step comes from the clips of two k-means groups of the image
    embedding; the run trains and writes its weights, and pretrain.json records the split of the batch."""
    import json

    from clipfsar.train.pretrain import HardNegativeSampler
    cfg = PretrainConfig(data=str(synth_data), out=str(tmp_path / "run"), steps=3, batch=16, clip_fraction=0.25,
                         hard_fraction=1.0, mine_every=2, mine_clusters=3, warmup_steps=0, seed=0)
    trainer = Pretrainer(cfg)
    trainer.run()
    info = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert info["hard_frame_pairs_per_step"] == info["frame_pairs_per_step"] == 12
    clip, tokenizer, prep, items, caps, _ = Pretrainer(PretrainConfig(data=str(synth_data),
                                                                      out=str(tmp_path / "r2")))._prepare()
    paths = list(dict.fromkeys(p for p, _ in items))
    where = {p: i for i, p in enumerate(paths)}
    store = FrameStore(paths, prep, 256, 1)
    try:
        sampler = HardNegativeSampler([k for k, (_, f) in enumerate(items) if f is not None], items, where, store, 3)
        rng = np.random.default_rng(0)
        sampler.regroup(clip, "cpu", rng)
        assert 2 <= len(sampler.groups) <= 3 and sum(map(len, sampler.groups)) == sum(f is not None for _, f in items)
        group_of = {k: j for j, g in enumerate(sampler.groups) for k in g}
        drawn = sampler.draw(10, rng)
        assert len(drawn) == 10 and len({group_of[k] for k in drawn}) == 2
        assert all(items[k][1] is not None for k in drawn)  # frame rows only
    finally:
        store.close()


@pytest.mark.parametrize("option, value, message", [
    ("--hard-fraction", "1.5", "hard_fraction must be in [0, 1]"), ("--mine-clusters", "1", "mine_clusters must be"),
    ("--mine-every", "0", "mine_every must be >= 1")])
def test_cli_bad_hard_negative_options_exit_2(tmp_path, synth_data, option, value, message):
    r = subprocess.run(CLI + ["pretrain", "--data", str(synth_data), "--out", str(tmp_path / "run"), "--steps", "1",
                              option, value], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
