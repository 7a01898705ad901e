"""The pure checks of runtime/engines/trt_engine.py: TensorRT's version (< 10 refused, JetPack >= 6.1), a driver too
old for cuda-python, the Jetson workspace cap, the build-time warning; and the TensorRT < 10 refusal end to end
through the CLI with a stand-in `tensorrt` 8.6 package (this machine has no TensorRT)."""
import enum
import subprocess
import sys

import pytest

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.engines.trt_cache import DeviceInfo
from clipfsar.runtime.engines.trt_engine import (
    INSTALL_HINT,
    cuda_check,
    default_workspace_mb,
    driver_problem,
    expected_build_time,
    tensorrt_version_problem,
)

CLI = [sys.executable, "-m", "clipfsar"]
H100 = DeviceInfo("NVIDIA H100 80GB HBM3", "9.0", "10.13.3.9+cu12", 132, 81559, False)
AGX_ORIN = DeviceInfo("Orin", "8.7", "10.3.0.30", 16, 62800, True)
ORIN_NANO_4GB = DeviceInfo("Orin", "8.7", "10.3.0.30", 4, 3500, True)


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0.30", "10.13.3.9", "11.4.0.106"])
def test_tensorrt_10_and_newer_are_accepted(version):
    assert tensorrt_version_problem(version) is None


@pytest.mark.parametrize("version", ["8.6.2.3", "8.5.2", "7.1.3"])
def test_tensorrt_older_than_10_is_refused_with_the_way_out(version):
    msg = tensorrt_version_problem(version)
    assert f"TensorRT {version} is too old" in msg and "JetPack >= 6.1" in msg and "--backend cuda or cpu" in msg


def test_unreadable_version():
    assert "cannot read TensorRT's version" in tensorrt_version_problem("dev")


def test_driver_too_old_names_cuda_python():
    msg = driver_problem("cudaErrorInsufficientDriver", "13.0.1")
    assert "driver is too old for cuda-python 13.0.1" in msg and "cuda-python>=12.6,<13" in msg
    assert "driver is too old for cuda-python 12.6.2" in driver_problem("cudaErrorInsufficientDriver", "12.6.2")
    assert driver_problem("cudaErrorNoDevice", "13.0.1") is None

    class cudaError_t(enum.IntEnum):  # the shape of cuda-python's error enum
        cudaSuccess = 0
        cudaErrorInsufficientDriver = 35

    with pytest.raises(ClipFsarError, match="driver is too old for cuda-python"):
        cuda_check((cudaError_t.cudaErrorInsufficientDriver, 0))


def test_install_hint_names_both_cuda_majors_and_jetpack():
    assert "clip-fsar[tensorrt]" in INSTALL_HINT and "clip-fsar[tensorrt-cu13]" in INSTALL_HINT
    assert "JetPack >= 6.1" in INSTALL_HINT


def test_workspace_is_capped_on_shared_memory_gpus_only():
    assert default_workspace_mb(H100) is None  # TensorRT's own default on a discrete GPU
    assert default_workspace_mb(AGX_ORIN) == 1024
    assert default_workspace_mb(ORIN_NANO_4GB) == 3500 // 8
    assert default_workspace_mb(DeviceInfo("Orin", "8.7", "10.3", 8, 0, True)) == 1024


def test_build_time_warning_scales_with_device_and_graph():
    assert expected_build_time(H100, 330) == "1 to 5 minutes"
    assert expected_build_time(H100, 2) == "under a minute"
    assert expected_build_time(ORIN_NANO_4GB, 330) == "5 to 20 minutes"
    assert expected_build_time(AGX_ORIN, 330) == "2 to 10 minutes"


def test_tensorrt_8_is_refused_by_the_cli(tmp_path, tiny_bundle, stream_file, snapshot):
    """JetPack 6.0's TensorRT 8.6 (stand-in package): `engine` and `run --backend trt` say 'too old', exit 2,
    and write nothing."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("__version__ = '8.6.2.3'\n")
    (tmp_path / "cuda").mkdir()
    (tmp_path / "cuda" / "__init__.py").write_text("")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    before, cache = snapshot(tiny_bundle), tmp_path / "cache"
    for args in (["engine", str(tiny_bundle), "--cache-dir", str(cache)],
                 ["run", str(tiny_bundle), "--source", str(stream_file), "--backend", "trt",
                  "--cache-dir", str(cache)]):
        r = subprocess.run(CLI + args, capture_output=True, text=True, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "TensorRT 8.6.2.3 is too old" in r.stderr and "JetPack >= 6.1" in r.stderr, r.stderr
    assert snapshot(tiny_bundle) == before and not cache.exists()


def test_external_weights_are_part_of_the_key(tmp_path):
    """A graph saved with external data (as the exporter writes graphs over 2 GB): changing only the weights
    changes the key's external_data digest, while the .onnx file itself stays byte-identical."""
    import hashlib

    import numpy as np
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from clipfsar.runtime.engines.trt_engine import external_data_sha256

    def save(path, w, external):
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(w, "w")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        onnx.save(m, str(path), save_as_external_data=external, location=path.name + ".data", size_threshold=0)

    w = np.ones((64, 64), np.float32)
    save(tmp_path / "one.onnx", w, external=False)
    assert external_data_sha256(tmp_path / "one.onnx") == ""
    save(tmp_path / "big.onnx", w, external=True)
    first, onnx_bytes = external_data_sha256(tmp_path / "big.onnx"), (tmp_path / "big.onnx").read_bytes()
    (tmp_path / "big.onnx.data").unlink()  # onnx.save appends to an existing data file
    save(tmp_path / "big.onnx", 2 * w, external=True)
    assert (tmp_path / "big.onnx").read_bytes() == onnx_bytes  # the graph file alone would not tell
    second = external_data_sha256(tmp_path / "big.onnx")
    assert len(first) == len(second) == 64 and first != second
    assert hashlib.sha256((tmp_path / "big.onnx.data").read_bytes()).hexdigest() not in ("", first)
