"""The Z-normalised open-set score (teaching/cohort.py): its math, the cohort in the bundle, the runtime using it."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from clipfsar.runtime import Classifier
from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.bundle.edit import set_cohort, update_manifest
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.teaching.calibration import video_text_cos
from clipfsar.runtime.teaching.cohort import ZNorm, class_distances, load_cohort, sample_cohort
from clipfsar.runtime.teaching.openset import build_cohort, encode_split
from clipfsar.runtime.video.clips import read_clip

CLI = [sys.executable, "-m", "clipfsar"]


# ----- numpy units ------------------------------------------------------------------------------------------------
def test_known_is_phi_of_the_smallest_z():
    rng = np.random.default_rng(0)
    cohort_d = rng.normal([2.0, 5.0, 0.0], [0.5, 2.0, 1.0], (400, 3))  # third class zero-shot: uses -cos
    cohort_cos = -cohort_d
    shots = np.array([1, 3, 0])
    z = ZNorm.from_cohort_distances(cohort_d, cohort_cos, shots)
    np.testing.assert_allclose(z.mu, cohort_d.mean(0), atol=1e-12)
    np.testing.assert_allclose(z.sd, cohort_d.std(0), atol=1e-12)
    d = np.array([[2.0 - 1.0, 5.0, 0.0], [z.mu[0], z.mu[1], z.mu[2]]])  # 2 sd below class 0's cohort mean
    cos = np.array([[0.0, 0.0, -z.mu[2]], [0.0, 0.0, -z.mu[2]]])
    k = z.known(d, cos, shots)
    zmin = -(2.0 - 1.0 - z.mu[0]) / z.sd[0]
    assert k[0] == pytest.approx((0.5 * (1 + math.erf(zmin / math.sqrt(2)))) ** 3, abs=1e-9)  # Sidak, N = 3
    assert k[1] == pytest.approx(0.5 ** 3, abs=1e-9)  # at every class's cohort mean
    # the correction keeps cohort-like clips near median 0.5 whatever the number of classes (independent z's)
    for n in (2, 10, 40):
        zs = ZNorm(np.zeros(n), np.ones(n))
        draws = np.random.default_rng(n).normal(size=(4000, n))
        assert np.median(zs.known(draws, draws, np.ones(n))) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(BundleError, match="do not vary"):  # identical cohort clips: no scale
        ZNorm.from_cohort_distances(np.ones((5, 2)), np.ones((5, 2)), np.array([1, 1]))
    # a zero-shot class is scored by its (negated) video-text cosine, whatever its OTAM distance column says
    np.testing.assert_array_equal(class_distances(d, cos, shots)[:, 2], -cos[:, 2])


def test_sample_cohort_spreads_over_classes_and_caps():
    clips = [np.full((n, 2, 3), i, np.float32) for i, n in enumerate((10, 10, 3, 0))]
    feats, classes = sample_cohort(clips, max_clips=9, seed=0)
    assert feats.shape == (9, 2, 3) and classes == 3
    assert sorted(np.unique(feats[:, 0, 0]).tolist()) == [0.0, 1.0, 2.0]
    with pytest.raises(BundleError, match="at least 2 clips"):
        sample_cohort([np.zeros((1, 2, 3), np.float32)])


# ----- the cohort in a bundle -------------------------------------------------------------------------------------
def test_build_cohort_is_stored_hashed_and_replaced(bundle, synth_data):
    b = build_cohort(Bundle.open(bundle), synth_data, "train", max_clips=20)
    entry = b.manifest.cohort
    assert entry["split"] == "train" and entry["clips"] == 20 and (bundle / entry["file"]).is_file()
    assert not set(entry["class_names"]) & set(b.store.class_names)
    feats = load_cohort(Bundle.open(bundle))
    assert feats.shape == (20, b.manifest.model.frames, b.manifest.model.embed_dim)
    old = entry["file"]
    b = build_cohort(b, synth_data, "train", max_clips=12, seed=1)
    assert b.manifest.cohort["clips"] == 12 and not (bundle / old).exists()  # the old file is removed
    assert len(list(bundle.glob("cohort.*"))) == 1
    assert (bundle / b.manifest.cohort["file"]).stat().st_mode & 0o777 == 0o644  # readable by every user


def test_a_changed_or_malformed_cohort_is_refused(bundle, synth_data):
    b = build_cohort(Bundle.open(bundle), synth_data, "train", max_clips=8)
    path = bundle / b.manifest.cohort["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="open-set cohort file .* does not match its sha256"):
        Bundle.open(bundle)
    with pytest.raises(BundleError, match=r"cohort features \[4, 3\] must be finite"):
        set_cohort(bundle, np.zeros((4, 3), np.float32), {})
    with pytest.raises(BundleError, match="must be finite"):
        set_cohort(bundle, np.full((4, 8, b.manifest.model.embed_dim), np.nan, np.float32), {})


def test_classifier_gates_on_known_and_recomputes_it_after_enrolment(bundle, synth_data, stream_file):
    b = build_cohort(Bundle.open(bundle), synth_data, "train", max_clips=30)
    cal = dict(b.manifest.calibration, threshold={"score": "znorm", "value": 0.7})
    update_manifest(bundle, "calibration", cal)
    clf = Classifier.load(bundle, backend="cpu")
    assert clf.open_set_score == "znorm" and clf.default_threshold == 0.7
    # the score by hand: cohort distances through the query head, then Phi(-min z)
    store, cohort = clf.bundle.store, load_cohort(clf.bundle)
    dist = clf.query_head.run(query=cohort, prototypes=store.prototypes, text=store.text_features)["distances"]
    z = ZNorm.from_cohort_distances(dist, video_text_cos(cohort, store.text_features), store.shots)
    clip = sorted((synth_data / b.store.class_names[0].replace(" ", "_")).glob("*.mp4"))[0]
    frames = read_clip(clip, 8)
    res = clf.classify_clip(frames)
    feats = clf.encode(frames)[None]
    out = clf.query_head.run(query=feats, prototypes=store.prototypes, text=store.text_features)
    expected = z.known(out["distances"], video_text_cos(feats, store.text_features), store.shots)[0]
    assert res.known == pytest.approx(expected, abs=1e-5)
    assert (res.label == "unknown") == (res.known < 0.7)
    decisions = list(clf.stream(stream_file, hop=0.25, smooth=2))
    assert decisions and all((d.label == "unknown") == (d.known < 0.7) for d in decisions)
    # a new class gets its own cohort statistics at once (no refit of the threshold needed to score it)
    n = len(clf.class_names)
    val_class = (synth_data / "splits" / "val.txt").read_text().split()[0]
    clf.enroll(val_class.replace("_", " "), sorted((synth_data / val_class).glob("*.mp4"))[:2])
    assert len(clf.class_names) == n + 1 and clf._znorm.mu.shape == (n + 1,)
    assert 0 <= clf.classify_clip(frames).known <= 1


def test_a_znorm_threshold_without_its_cohort_is_a_clear_error(bundle, synth_data):
    b = Bundle.open(bundle)
    update_manifest(bundle, "calibration", dict(b.manifest.calibration, threshold={"score": "znorm", "value": 0.5}))
    with pytest.raises(BundleError, match="no open-set cohort"):
        Classifier.load(bundle, backend="cpu")
    r = subprocess.run(CLI + ["run", str(bundle), "--source", str(synth_data / "splits" / "val.txt")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no open-set cohort" in r.stderr and "Traceback" not in r.stderr


def test_open_set_metrics_measure_znorm_with_a_cohort(tiny_bundle, synth_data):
    from clipfsar.runtime.teaching.openset import open_set_metrics
    b = Bundle.open(tiny_bundle)
    cohort, _ = sample_cohort(encode_split(b, synth_data, "train").clips, 24)
    m = open_set_metrics(b, encode_split(b, synth_data, "val"), b.manifest.calibration, 1, 20, cohort=cohort)
    assert 0 <= m["scores"]["znorm"]["auroc"] <= 1 and 0 <= m["scores"]["znorm"]["oscr"] <= 1


def test_dry_run_stores_nothing_and_enrolling_a_cohort_class_is_flagged(bundle, synth_data):
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--episodes", "5",
                              "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "--dry-run: nothing stored" in r.stdout
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before
    r = subprocess.run(CLI + ["calibrate-threshold", str(bundle), "--data", str(synth_data), "--episodes", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = Bundle.open(bundle).manifest
    assert m.calibration["threshold"]["score"] == "znorm" and m.cohort  # one manifest write holds both
    train_class = (synth_data / "splits" / "train.txt").read_text().split()[0]
    clips = [str(p) for p in sorted((synth_data / train_class).glob("*.mp4"))[:2]]
    r = subprocess.run(CLI + ["enroll", str(bundle), "--name", train_class.replace("_", " "), *clips],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "the open-set cohort holds clips of" in r.stderr and "re-measure" in r.stderr


def test_triton_repository_carries_the_cohort_statistics(bundle, synth_data, tmp_path):
    from clipfsar.export.triton_repo import export_triton_repo
    b = build_cohort(Bundle.open(bundle), synth_data, "train", max_clips=16)
    update_manifest(bundle, "calibration", dict(b.manifest.calibration, threshold={"score": "znorm", "value": 0.8}))
    export_triton_repo(bundle, tmp_path / "repo", kind="cpu")
    info = json.loads((tmp_path / "repo" / "bundle_info" / "1" / "info.json").read_text())["scores"]
    clf = Classifier.load(bundle, backend="cpu")
    assert info["threshold"] == {"score": "znorm", "value": 0.8}
    np.testing.assert_allclose(info["znorm"]["mu"], clf._znorm.mu, atol=1e-5)
    np.testing.assert_allclose(info["znorm"]["sd"], clf._znorm.sd, atol=1e-5)
    assert info["znorm"]["shots"] == clf.bundle.store.shots.tolist() and "Phi" in info["znorm"]["formula"]
