import shutil

import pytest


@pytest.fixture(scope="package")
def calibrated(tmp_path_factory, tiny_bundle, synth_data):
    """The tiny bundle with fp16 and int8 variants and the end-to-end report (60 episodes on 'test'), measured on
    onnxruntime's CPU (OpenVINO's calibration: tests/calib/test_openvino_calib.py)."""
    from clipfsar.calib.calibrate import calibrate_bundle
    root = tmp_path_factory.mktemp("calib") / "b"
    shutil.copytree(tiny_bundle, root)
    calibrate_bundle(root, synth_data, ("fp16", "int8"), frames=32, holdout=16, seed=0, split="test", episodes=60,
                     backend="cpu")
    return root
