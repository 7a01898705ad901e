"""``clipfsar export --precision ... --calib-data``: export and calibration in one step."""
import subprocess
import sys

import pytest

from clipfsar.runtime.bundle.reader import Bundle

CLI = [sys.executable, "-m", "clipfsar"]


def _export(tiny_checkpoint, synth_data, out, *extra):
    return subprocess.run(CLI + ["export", "--checkpoint", str(tiny_checkpoint), "--support", str(synth_data),
                                 "--out", str(out), "--shots", "2", "--classes",
                                 str(synth_data / "splits" / "test.txt"), *map(str, extra)],
                          capture_output=True, text=True, timeout=600)


def test_precision_needs_calibration_data(tmp_path, tiny_checkpoint, synth_data):
    r = _export(tiny_checkpoint, synth_data, tmp_path / "b", "--precision", "fp32,int8")
    assert r.returncode == 2 and "needs --calib-data" in r.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_export_with_variants(tmp_path, tiny_checkpoint, synth_data):
    out = tmp_path / "b"
    r = _export(tiny_checkpoint, synth_data, out, "--precision", "fp32,fp16,int8", "--calib-data", synth_data,
                "--calib-split", "val", "--calib-frames", 32, "--calib-method", "entropy")
    assert r.returncode == 0, r.stderr
    b = Bundle.open(out)
    assert b.precisions("image_encoder") == ("fp32", "fp16", "int8")
    assert b.manifest.precision_report["calibration"]["split"] == "val"
    assert "int8" in r.stdout and "top-1 agreement" in r.stdout
