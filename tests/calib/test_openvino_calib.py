"""Calibration on OpenVINO: the variants measured where they will run, bf16 (no file) in the report, the symmetric
Q/DQ int8 form, ``precision auto`` choosing by that report, and the errors of a backend or precision that cannot
run."""
import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("openvino")

from clipfsar.runtime.engines.openvino_backend import has_bf16  # noqa: E402


@pytest.fixture(scope="module")
def ov_calibrated(tmp_path_factory, tiny_bundle, synth_data):
    from clipfsar.calib.calibrate import calibrate_bundle
    root = tmp_path_factory.mktemp("ovcal") / "b"
    shutil.copytree(tiny_bundle, root)
    calibrate_bundle(root, synth_data, ("auto",), frames=32, holdout=16, seed=0, split="test", episodes=40,
                     backend="auto")
    return root


def test_report_is_measured_on_openvino(ov_calibrated):
    from clipfsar.runtime.bundle.reader import Bundle
    b = Bundle.open(ov_calibrated)
    rep = b.manifest.precision_report
    assert rep["backend"] == "openvino" and rep["provider"] == "OpenVINO CPU"
    enc = b.manifest.graphs["image_encoder"].variants["int8"]
    assert enc.method.startswith("int8-qdq-minmax") and enc.report["backend"] == "openvino"  # symmetric Q/DQ
    assert enc.report["cosine_min"] > 0.99
    if has_bf16("CPU"):
        bf16 = rep["execution_precisions"]["image_encoder"]["bf16"]
        assert bf16["backend"] == "openvino" and bf16["cosine_min"] > 0.99
        assert "bf16" in rep["variants"] and "accuracy" in rep["variants"]["bf16"]
        assert not list((ov_calibrated / "variants").glob("*bf16*"))  # no file: the fp32 graph runs at bf16


def _set_speedups(root, tmp_path, int8: float, bf16: float, fp16: float = 0.9):
    dst = tmp_path / "b"
    shutil.copytree(root, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for g in m["graphs"].values():  # every measured variant slower than fp32 unless set below
        for v in g.get("variants", {}).values():
            v["report"]["speedup"] = 0.9
    m["graphs"]["image_encoder"]["variants"]["int8"]["report"]["speedup"] = int8
    m["graphs"]["image_encoder"]["variants"]["fp16"]["report"]["speedup"] = fp16
    ex = m["precision_report"].setdefault("execution_precisions", {}).setdefault("image_encoder", {})
    if "bf16" in ex:
        ex["bf16"]["speedup"] = bf16
    for p in m["precision_report"]["variants"].values():
        p["flagged"] = False
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_auto_picks_the_fastest_measured_on_openvino(ov_calibrated, tmp_path):
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.engines.precision import choose_precisions
    graphs = ["image_encoder", "query_head"]
    fast_int8 = Bundle.open(_set_speedups(ov_calibrated, tmp_path / "a", int8=2.5, bf16=1.5))
    assert choose_precisions(fast_int8, "auto", "openvino", graphs) == {"image_encoder": "int8", "query_head": "fp32"}
    assert choose_precisions(fast_int8, "auto", "cpu", graphs)["image_encoder"] == "fp32"  # not measured there
    if has_bf16("CPU"):
        fast_bf16 = Bundle.open(_set_speedups(ov_calibrated, tmp_path / "b", int8=1.2, bf16=1.6))
        assert choose_precisions(fast_bf16, "auto", "openvino", graphs)["image_encoder"] == "bf16"
    slow = Bundle.open(_set_speedups(ov_calibrated, tmp_path / "c", int8=0.9, bf16=0.8))
    assert choose_precisions(slow, "auto", "openvino", graphs)["image_encoder"] == "fp32"
    fp16 = Bundle.open(_set_speedups(ov_calibrated, tmp_path / "d", int8=0.9, bf16=0.8, fp16=1.1))
    assert choose_precisions(fp16, "auto", "openvino", graphs)["image_encoder"] == "fp16"  # measured faster: it


def test_classifier_runs_the_choice_on_openvino(ov_calibrated, tmp_path):
    import numpy as np

    from clipfsar.runtime.classify.classifier import Classifier
    root = _set_speedups(ov_calibrated, tmp_path, int8=2.0, bf16=1.0)
    clf = Classifier.load(root, backend="auto", precision="auto")
    assert clf.backend == "openvino" and clf.precisions["image_encoder"] == "int8"
    assert clf.providers["image_encoder"].startswith("OpenVINO CPU")
    frames = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(8)]
    assert clf.classify_clip(frames).label in clf.class_names


def test_calibrate_backend_openvino_not_installed_exit_2(tiny_bundle, synth_data, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    before = (root / "manifest.json").read_bytes()
    code = ("import sys; sys.modules['openvino'] = None; from clipfsar.cli import main; "
            f"sys.argv = ['clipfsar', 'calibrate', {str(root)!r}, '--data', {str(synth_data)!r}, "
            "'--backend', 'openvino']; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "pip install 'clip-fsar[openvino]'" in r.stderr and "Traceback" not in r.stderr
    assert (root / "manifest.json").read_bytes() == before


def test_calibrate_bf16_on_onnxruntime_is_refused(tiny_bundle, synth_data, tmp_path):
    from clipfsar.calib.calibrate import calibrate_bundle
    from clipfsar.runtime.base.errors import ClipFsarError
    with pytest.raises(ClipFsarError, match="bf16 needs OpenVINO"):
        calibrate_bundle(tiny_bundle, synth_data, ("bf16",), backend="cpu")
