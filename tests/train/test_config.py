import json
import subprocess
import sys

import pytest

from clipfsar.runtime.base.errors import ConfigError
from clipfsar.runtime.base.jsonconfig import from_dict
from clipfsar.train.config import PRESETS, TrainConfig, preset


def test_step_schedule_matches_the_papers_shape():
    cfg = TrainConfig(lr=5e-5, warmup_lr=1e-5, warmup_steps=100, milestones=[200, 300], schedule="step")
    assert cfg.lr_at(0) == pytest.approx(1e-5)
    assert cfg.lr_at(50) == pytest.approx(3e-5)
    assert cfg.lr_at(150) == pytest.approx(5e-5)
    assert cfg.lr_at(250) == pytest.approx(5e-6)
    assert cfg.lr_at(350) == pytest.approx(5e-7)


def test_cosine_schedule_ends_at_zero():
    cfg = TrainConfig(lr=1e-3, steps=100, warmup_steps=10, warmup_lr=0.0, schedule="cosine")
    assert cfg.lr_at(10) == pytest.approx(1e-3)
    assert cfg.lr_at(100) == pytest.approx(0.0, abs=1e-12)


def test_presets_are_valid_configs():
    for name in PRESETS:
        cfg = from_dict(TrainConfig, {**preset(name), "data": "d", "out": "o"})
        assert cfg.arch == "RN50" and cfg.weights == "openai" and cfg.episodes_per_step == 16
    assert preset("hmdb51")["alpha"] == 1.2 and preset("ssv2-full")["alpha"] == 3.0
    with pytest.raises(ConfigError, match="unknown preset 'kinetics'"):
        preset("kinetics")


def test_bad_config_values_and_keys():
    with pytest.raises(ConfigError, match="optimizer must be one of adam, adamw"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        from_dict(TrainConfig, {"step": 3})


def test_cli_config_file_with_unknown_key(tmp_path, synth_data):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"learning_rate": 1e-3}))
    r = subprocess.run([sys.executable, "-m", "clipfsar", "train", "--data", str(synth_data), "--out",
                        str(tmp_path / "run"), "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown key 'learning_rate'" in r.stderr
    assert not (tmp_path / "run").exists()


def test_json_files_with_a_byte_order_mark_read_and_non_utf8_refused(tmp_path):
    """User JSON (a --config written by a Windows editor) with a BOM reads; one in another encoding is a clear
    ConfigError naming the file, not a traceback."""
    from clipfsar.runtime.base.jsonconfig import read_json
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"steps": 3}).encode())
    assert read_json(bom, "training config") == {"steps": 3}
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"steps": 3, "note": "caf\xe9"}')
    with pytest.raises(ConfigError, match=r"training config .*latin.json is not UTF-8 text"):
        read_json(latin, "training config")
