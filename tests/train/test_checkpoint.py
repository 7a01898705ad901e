import json
import shutil

import pytest
import torch

from clipfsar.runtime.base.errors import CheckpointError
from clipfsar.train import create_model_and_transforms, load_checkpoint, save_checkpoint


def test_round_trip_bit_identical_logits(tmp_path):
    torch.manual_seed(0)
    model, prep = create_model_and_transforms("tiny", beta=0.9, depth=2)
    with torch.no_grad():
        model.vt_scale.fill_(3.5)
    path = save_checkpoint(tmp_path / "ck", model, prep, {"note": "x"})
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded, prep2, meta = load_checkpoint(path)
    assert prep2 == prep and loaded.cfg == model.cfg and meta["train"] == {"note": "x"}
    model.eval()
    frames = torch.randn(4, 8, 3, 64, 64)
    with torch.no_grad():
        f1, f2 = model.encode_frames(frames), loaded.encode_frames(frames)
        assert torch.equal(f1, f2)
        t1, t2 = model.text_features(["a", "b"]), loaded.text_features(["a", "b"])
        assert torch.equal(t1, t2)
        o1 = model.classify(f1[:2, None], f1[2:], t1)
        o2 = loaded.classify(f2[:2, None], f2[2:], t2)
    for k in o1:
        assert torch.equal(o1[k], o2[k])


def test_rewrite_replaces_atomically(tmp_path, tiny_checkpoint):
    dst = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, dst)
    model, prep, _ = load_checkpoint(dst)
    save_checkpoint(dst, model, prep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary folders left behind


def test_missing_weights(tmp_path, tiny_checkpoint):
    dst = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, dst)
    (dst / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete.*model.safetensors"):
        load_checkpoint(dst)


def test_missing_config_and_folder(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    dst = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, dst)
    (dst / "config.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        load_checkpoint(dst)


def test_corrupt_weights(tmp_path, tiny_checkpoint):
    dst = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, dst)
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(dst)


def test_newer_format_refused(tmp_path, tiny_checkpoint):
    dst = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, dst)
    meta = json.loads((dst / "config.json").read_text())
    meta["format_version"] = 99
    (dst / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99, newer"):
        load_checkpoint(dst)


def test_unknown_config_key_did_you_mean(tmp_path, tiny_checkpoint):
    from clipfsar.runtime.base.errors import ConfigError
    dst = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, dst)
    meta = json.loads((dst / "config.json").read_text())
    meta["model"]["frame"] = 8
    (dst / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="did you mean 'frames'"):
        load_checkpoint(dst)


def test_no_pickle_in_checkpoint(tiny_checkpoint):
    for p in tiny_checkpoint.iterdir():
        assert p.suffix in (".json", ".safetensors")
