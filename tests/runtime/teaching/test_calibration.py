"""Calibrated probabilities, zero-shot scores, the "unknown" threshold and open-set metrics."""
import json
import subprocess
import sys

import numpy as np
import pytest

from clipfsar.runtime import Classifier
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.teaching.calibration import (
    auroc,
    expected_calibration_error,
    fit_temperature,
    fit_zero_shot,
    oscr,
    softmax,
    threshold_at_far,
    video_text_cos,
)
from clipfsar.runtime.teaching.enroll import Enroller
from clipfsar.runtime.video.clips import read_clip

CLI = [sys.executable, "-m", "clipfsar"]


# ----- numpy units ------------------------------------------------------------------------------------------------
def _draw(rng, n, tau):
    """Distances whose true labels follow softmax(-D / tau) exactly: a calibrated ground truth."""
    d = rng.uniform(0, 3, (n, 5))
    p = softmax(-d / tau)
    labels = np.array([rng.choice(5, p=row) for row in p])
    return d, labels


def test_fit_temperature_recovers_the_true_one_and_lowers_ece():
    rng = np.random.default_rng(0)
    d, y = _draw(rng, 4000, 0.4)
    tau = fit_temperature(d, y)
    assert abs(tau - 0.4) < 0.04
    assert expected_calibration_error(softmax(-d / tau), y) < expected_calibration_error(softmax(-d / 8), y)


def test_fit_zero_shot_recovers_the_map():
    rng = np.random.default_rng(1)
    n = 6000
    few = rng.normal(0, 1, (n, 5))
    cos = rng.uniform(-1, 1, (n, 5))
    zero = rng.integers(0, 5, n)
    z = few.copy()
    z[np.arange(n), zero] = 4.0 * cos[np.arange(n), zero] - 1.0
    y = np.array([rng.choice(5, p=row) for row in softmax(z)])
    fit = fit_zero_shot(few, cos, zero, y)
    assert abs(fit["a"] - 4.0) < 0.5 and abs(fit["b"] + 1.0) < 0.2


def test_threshold_at_far_accepts_at_most_far():
    rng = np.random.default_rng(2)
    for far in (0.01, 0.05, 0.2):
        s = rng.normal(size=997)
        t = threshold_at_far(s, far)
        assert (s >= t).mean() <= far and (s >= np.nextafter(t, -np.inf) - 1e-3).mean() > far - 0.01
    with pytest.raises(ValueError):
        threshold_at_far(s, 1.5)


def test_auroc_and_oscr_against_brute_force():
    rng = np.random.default_rng(3)
    k, u = rng.normal(1, 1, 200), np.round(rng.normal(0, 1, 150), 1)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in k for b in u])
    assert auroc(k, u) == pytest.approx(brute)
    correct = rng.random(200) < 0.7
    o = oscr(k, correct, u)
    assert 0 < o <= correct.mean() + 1e-9
    assert oscr(k, np.ones(200, bool), u) == pytest.approx(auroc(k, u), abs=0.01)  # all correct: OSCR ~ AUROC


# ----- through a bundle -----------------------------------------------------------------------------------------
def _clip(synth_data, cls, i=-1):
    return sorted((synth_data / cls.replace(" ", "_")).glob("*.mp4"))[i]


def test_export_fits_the_temperature_on_val(tiny_bundle):
    cal = Bundle.open(tiny_bundle).manifest.calibration
    assert cal["temperature"] > 0 and cal["fitted_on"]["split"] == "val" and cal["fitted_on"]["episodes"] > 0
    assert cal["nll_calibrated"] <= cal["nll_paper"] + 1e-9  # the paper's probability is the tau = T point
    assert {"ece_paper", "ece_calibrated", "zero_shot"} <= set(cal)


def test_classify_clip_reports_calibrated_probabilities(bundle, synth_data):
    clf = Classifier.load(bundle, backend="cpu")
    assert clf.calibrated
    b = clf.bundle
    cls = b.store.class_names[0]
    frames = read_clip(_clip(synth_data, cls), 8)
    res = clf.classify_clip(frames, threshold=0)
    feats = clf.encode(frames)[None]
    out = clf.query_head.run(query=feats, prototypes=b.store.prototypes, text=b.store.text_features)
    expected = softmax(-out["distances"][0] / b.manifest.calibration["temperature"])
    np.testing.assert_allclose(res.scores, expected, atol=1e-5)
    np.testing.assert_allclose(res.fused, out["probs"][0], atol=1e-6)
    assert res.score == max(res.scores) and abs(sum(res.scores) - 1) < 1e-5


def test_zero_shot_class_is_scored_by_video_text_and_can_win(bundle, synth_data):
    """A name-only class gets ``a cos + b`` (the fitted map) beside ``-D / tau``; a clip of it can win."""
    e = Enroller(Bundle.open(bundle))
    val = (synth_data / "splits" / "val.txt").read_text().split()
    name = val[0].replace("_", " ")
    e.enroll(name, [])
    clf = Classifier.load(bundle, backend="cpu")
    cal = clf.bundle.manifest.calibration
    store = clf.bundle.store
    wins = 0
    for clip in sorted((synth_data / val[0]).glob("*.mp4")):
        frames = read_clip(clip, 8)
        feats = clf.encode(frames)[None]
        out = clf.query_head.run(query=feats, prototypes=store.prototypes, text=store.text_features)
        z = -out["distances"][0] / cal["temperature"]
        z[-1] = cal["zero_shot"]["a"] * video_text_cos(feats, store.text_features)[0, -1] + cal["zero_shot"]["b"]
        res = clf.classify_clip(frames, threshold=0)
        np.testing.assert_allclose(res.scores, softmax(z), atol=1e-5)
        wins += res.label == name
    assert wins >= 1


def test_calibrate_threshold_then_run_uses_it(bundle, synth_data, stream_file):
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--split", "val",
                              "--far", "0.1", "--episodes", "60"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "AUROC" in r.stdout and "OSCR" in r.stdout
    assert "open-set cohort:" in r.stdout  # built from the data's train split by default (runtime/teaching/cohort.py)
    thr = Bundle.open(bundle).manifest.calibration["threshold"]
    assert thr["score"] == "znorm" and thr["far"] == 0.1 and thr["accepted_unknown"] <= 0.1
    assert set(thr["open_set"]["scores"]) == {"max_prob", "neg_min_distance", "max_fused", "znorm"}
    clf = Classifier.load(bundle, backend="cpu")
    assert clf.default_threshold == thr["value"] and clf.open_set_score == "znorm"
    decisions = list(clf.stream(stream_file, hop=0.25))
    assert all(0 <= d.known <= 1 for d in decisions)
    assert all((d.label == "unknown") == (d.known < thr["value"]) for d in decisions)
    assert all(d.label != "unknown" for d in clf.stream(stream_file, hop=0.25, threshold=0))
    r = subprocess.run(CLI + ["run", str(bundle), "--source", str(stream_file), "--json", "--threshold", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "calibrated probabilities" in r.stderr
    first = json.loads(r.stdout.splitlines()[0])
    assert first["label"] != "unknown" and abs(sum(first["scores"].values()) - 1) < 1e-3
    assert 0 <= first["known"] <= 1


def test_calibrate_threshold_without_cohort_thresholds_the_probability(bundle, synth_data, stream_file):
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--split", "val",
                              "--far", "0.1", "--episodes", "20", "--cohort-split", "none"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = Bundle.open(bundle).manifest
    assert not m.cohort and m.calibration["threshold"]["score"] == "max_prob"
    clf = Classifier.load(bundle, backend="cpu")
    decisions = list(clf.stream(stream_file, hop=0.25))
    assert all(d.known is None for d in decisions)
    assert all((d.label == "unknown") == (d.score < clf.default_threshold) for d in decisions)


def test_calibrate_threshold_bad_inputs(bundle, synth_data, tmp_path):
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--far", "1.5"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Invalid value for '--far'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "split list not found" in r.stderr
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--split", "test"],
                       capture_output=True, text=True)  # every test class is enrolled: no unknown clips
    assert r.returncode == 2 and "no class outside the bundle's enrolled classes" in r.stderr
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--cohort-split", "val"],
                       capture_output=True, text=True)  # the cohort would hold the unknowns the threshold is fit on
    assert r.returncode == 2 and "(--cohort-split 'val') is the split the threshold is fitted on" in r.stderr
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--cohort-split",
                              "nosuch"], capture_output=True, text=True)
    assert r.returncode == 2 and "nosuch.txt" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--cohort-split",
                              "test"], capture_output=True, text=True)  # every test class is enrolled
    assert r.returncode == 2 and "only enrolled classes" in r.stderr
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "is not a folder" in r.stderr and "note:" not in r.stderr
    assert not Bundle.open(bundle).manifest.cohort  # nothing stored by the refused runs


def test_open_set_metrics_on_a_calibrated_store(synth_data, tiny_bundle):
    from clipfsar.runtime.teaching.openset import encode_split, open_set_metrics
    b = Bundle.open(tiny_bundle)
    m = open_set_metrics(b, encode_split(b, synth_data, "val"), b.manifest.calibration, shot=1, episodes=40)
    assert m["way"] == 5 and 0 <= m["closed_set_accuracy"] <= 100
    for s in m["scores"].values():
        assert 0 <= s["auroc"] <= 1 and 0 <= s["oscr"] <= 1
