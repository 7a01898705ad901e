"""`clipfsar demo --out DIR` runs the appearance family end to end and writes DIR/summary.json with every number it
prints, per family; the teach step's classes share a factor with the bundle's; the open-set measurement's two kinds
of unknowns."""
import json
import subprocess
import sys

import numpy as np
import pytest

from clipfsar.demo_enroll import pick_classes
from clipfsar.train.synth import class_factors, shares_a_factor, split_classes


@pytest.mark.parametrize("family", ["appearance", "motion"])
def test_the_teach_step_classes_share_a_factor_with_the_bundle(family):
    splits = split_classes(0, family)
    p = pick_classes(splits)
    assert p["held"] in splits["val"] and p["other"] in splits["val"] and p["held"] != p["other"]
    assert p["held_shares_with_bundle"] and p["other_shares_with_bundle"]  # a shape or a motion / scene
    for name, shared in ((p["held"], p["held_shares_with_bundle"]), (p["other"], p["other_shares_with_bundle"])):
        assert set(shared) <= set(class_factors(name))
        assert all(any(f in class_factors(t) for t in splits["test"]) for f in shared)
    assert p["other_shares_with_held"] and shares_a_factor(p["held"], p["other"])  # the hard unknown


def test_open_set_episodes_measure_protocol_and_factor_sharing_unknowns(tiny_bundle, synth_data):
    from clipfsar.demo_openset import open_set_episodes
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.openset import encode_split, make_cohort
    b = Bundle.open(tiny_bundle)
    known, unknown = encode_split(b, synth_data, "test"), encode_split(b, synth_data, "val")
    cohort, _ = make_cohort(b, synth_data, "train", max_clips=32)
    out = open_set_episodes(b, known, unknown, shares_a_factor, shot=1, episodes=6, seed=0, cohort=cohort)
    for kind in ("protocol", "factor_sharing"):
        m = out[kind]
        assert m["unknown_queries"] == 6 * 5 and 0 <= m["closed_set_accuracy"] <= 100
        assert set(m["scores"]) == {"znorm", "max_prob", "neg_min_distance", "max_fused"}
        assert all(0 <= v["auroc"] <= 1 and 0 <= v["oscr"] <= 1 for v in m["scores"].values())
    again = open_set_episodes(b, known, unknown, shares_a_factor, shot=1, episodes=6, seed=0, cohort=cohort)
    assert np.isclose(again["factor_sharing"]["scores"]["znorm"]["auroc"],
                      out["factor_sharing"]["scores"]["znorm"]["auroc"])  # seeded


@pytest.mark.slow
def test_demo_writes_summary(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "clipfsar", "demo", "--out", str(out), "--steps", "20",
                        "--episodes", "100", "--open-set-episodes", "10"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    f = s["families"]["appearance"]
    assert f["frozen_backbone"]
    assert f["zero_shot_before_training"]["weights 'synth'"]["accuracy"] >= 60  # the frame-level prior
    assert 5 < f["zero_shot_before_training"]["random init"]["accuracy"] < 35  # chance is 20
    for shot in ("1-shot", "5-shot"):
        for branch in ("zero_shot", "few_shot", "fusion"):
            acc = f["evaluation"][shot][branch]
            assert 0 <= acc["accuracy"] <= 100 and acc["ci95"] >= 0
            assert f"{acc['accuracy']:.1f} +- {acc['ci95']:.1f}" in r.stdout  # the printed number is the stored one
    assert max(f["export"]["parity_max_abs_diff"].values()) <= 1e-4
    assert f["streaming"]["windows_inside_one_action"] > 0
    assert f["streaming"]["encoder_images_per_decision"] < 8  # T = 8: each sampled frame is encoded once
    e = f["enrolment"]
    assert e["enrolled_windows"] == 5 and e["unknown_windows"] == 5 and e["held_shares_with_bundle"]
    assert e["goal_met"] == (e["enrolled_ok"] >= 4 and e["unknown_ok"] >= 4)
    for kind in ("protocol", "factor_sharing"):
        for shot in ("1-shot", "5-shot"):
            m = f["open_set"][kind][shot]["scores"]["znorm"]
            assert 0 <= m["auroc"] <= 1 and f"{kind:<15}{shot}" in r.stdout
    assert f["open_set"]["protocol"]["1-shot"]["scores"]["znorm"]["auroc"] >= 0.9  # measured 0.995 (docs)
    assert (out / "done").is_file()


@pytest.mark.parametrize("cmd", [["demo", "--out", "OUT"], ["ablation", "--out", "OUT", "--steps", "1"]])
@pytest.mark.parametrize("extra, message", [(["--arch", "nope"], "unknown architecture 'nope'"),
                                            (["--weights", "/nonexistent.safetensors"], "weights file not found")])
def test_a_bad_arch_or_weights_fails_before_anything_is_made(tmp_path, cmd, extra, message):
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else a for a in cmd] + extra
    r = subprocess.run([sys.executable, "-m", "clipfsar", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not out.exists()  # no half-made data set left behind
