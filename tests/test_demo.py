"""`clipfsar demo --out DIR` runs the whole chain and writes DIR/summary.json with every number it prints."""
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_writes_summary(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "clipfsar", "demo", "--out", str(out), "--steps", "20",
                        "--episodes", "100"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["zero_shot_before_training"]["weights 'synth'"]["accuracy"] > 30  # the shipped prior
    assert 10 < s["zero_shot_before_training"]["random init"]["accuracy"] < 30  # chance is 20
    for shot in ("1-shot", "5-shot"):
        for branch in ("zero_shot", "few_shot", "fusion"):
            acc = s["evaluation"][shot][branch]
            assert 0 <= acc["accuracy"] <= 100 and acc["ci95"] >= 0  # 0 when a 20-step model ties every episode
            assert f"{acc['accuracy']:.1f} +- {acc['ci95']:.1f}" in r.stdout  # the printed number is the stored one
    assert set(s["goals"]) == {"zero-shot >= 35 %", "fusion >= few-shot"}
    assert max(s["export"]["parity_max_abs_diff"].values()) <= 1e-4
    assert s["streaming"]["windows_inside_one_action"] > 0
    assert s["streaming"]["encoder_images_per_decision"] < 8  # T = 8: each sampled frame is encoded once
    assert (out / "done").is_file()
