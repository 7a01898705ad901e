"""``clipfsar calibrate``, ``--precision`` on run/eval, and their bad input: clear errors, bundle unchanged."""
import json
import shutil
import subprocess
import sys

import pytest

from clipfsar.runtime.bundle.reader import Bundle

CLI = [sys.executable, "-m", "clipfsar"]


def _cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_calibrate_folder_of_videos_skips_unreadable(tmp_path, bundle_copy, synth_data):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, clip in enumerate(sorted((synth_data / "a_circle_growing").iterdir())[:4]):
        shutil.copy(clip, videos / f"{i}{clip.suffix}")
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    r = _cli("calibrate", bundle_copy, "--data", videos, "--precision", "fp16", "--frames", 16, "--holdout", 8)
    assert r.returncode == 0, r.stderr
    assert "broken.mp4" in r.stderr  # listed and skipped
    assert "image_encoder fp16" in r.stdout and "not measured" in r.stdout  # no split: no accuracy
    m = Bundle.open(bundle_copy).manifest
    assert [u["clip"] for u in m.precision_report["calibration"]["unreadable"]][0].endswith("broken.mp4")
    assert m.precision_report["episodes"] is None


def test_too_few_frames(bundle_copy, synth_data):
    before = (bundle_copy / "manifest.json").read_bytes()
    r = _cli("calibrate", bundle_copy, "--data", synth_data, "--split", "test", "--frames", 100000)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error:" in r.stderr and "readable clips give" in r.stderr and "need" in r.stderr
    assert (bundle_copy / "manifest.json").read_bytes() == before


def test_bad_arguments(bundle_copy, synth_data, tmp_path):
    r = _cli("calibrate", bundle_copy, "--data", synth_data, "--precision", "int4")
    assert r.returncode == 2 and "unknown precision int4" in r.stderr
    r = _cli("calibrate", bundle_copy, "--data", tmp_path / "nowhere")
    assert r.returncode == 2 and "nowhere" in r.stderr and "not a folder" in r.stderr
    r = _cli("calibrate", tmp_path / "nobundle", "--data", synth_data)
    assert r.returncode == 2 and "bundle folder not found" in r.stderr
    before = (bundle_copy / "manifest.json").read_bytes()
    for option, value, message in (("--episodes", 0, "--episodes must be >= 1"),
                                   ("--max-drop", "nan", "--max-drop must be a finite number"),
                                   ("--max-drop", -1, "--max-drop must be a finite number")):
        r = _cli("calibrate", bundle_copy, "--data", synth_data, "--split", "test", option, value)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (bundle_copy / "manifest.json").read_bytes() == before


def test_run_with_a_precision_the_bundle_lacks(bundle_copy, stream_file):
    r = _cli("run", bundle_copy, "--source", stream_file, "--precision", "int8", "--backend", "cpu")
    assert r.returncode == 2 and "has no int8 variant (it has fp32)" in r.stderr


@pytest.mark.slow
def test_run_and_eval_with_variants(calibrated, stream_file, synth_data):
    r = _cli("run", calibrated, "--source", stream_file, "--precision", "int8", "--backend", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    assert "(int8)" in r.stderr and json.loads(r.stdout.splitlines()[0])["label"]
    r = _cli("eval", "--bundle", calibrated, "--data", synth_data, "--episodes", 20, "--precision", "fp16", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["precisions"]["image_encoder"] == "fp16"
