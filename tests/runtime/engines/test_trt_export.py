"""``clipfsar export --engine``: the request is checked before exporting, so nothing is written when it is bad."""
import subprocess
import sys

import pytest

from clipfsar.export.engine_hook import engine_request
from clipfsar.runtime.base.errors import ConfigError
from clipfsar.runtime.engines.trt_engine import TensorRTUnavailable, trt_usable

TRT_OK, TRT_WHY = trt_usable()
DEFAULTS = dict(max_batch=16, max_classes=64, max_shots=8, opt_batch=None, opt_classes=None, opt_shots=None,
                workspace_mb=None, cache_dir=None)


def test_no_engine_requested():
    assert engine_request(False, **DEFAULTS) is None


def test_engine_options_without_engine_are_refused():
    with pytest.raises(ConfigError, match="--workspace-mb only applies with --engine"):
        engine_request(False, **{**DEFAULTS, "workspace_mb": 512})


@pytest.mark.parametrize("change, message", [({"max_batch": 0}, "--max-batch"), ({"opt_shots": 9}, "--opt-shots"),
                                             ({"workspace_mb": -1}, "--workspace-mb must be >= 1")])
def test_bad_engine_options(change, message):
    with pytest.raises(ConfigError, match=message):
        engine_request(True, **{**DEFAULTS, **change})


@pytest.mark.skipif(TRT_OK, reason="TensorRT works here")
def test_export_engine_without_tensorrt_fails_before_exporting(tmp_path, tiny_checkpoint, synth_data):
    with pytest.raises(TensorRTUnavailable, match="--engine: cannot build TensorRT engines here"):
        engine_request(True, **DEFAULTS)
    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "clipfsar", "export", "--checkpoint", str(tiny_checkpoint),
                        "--support", str(synth_data), "--out", str(out), "--engine"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot build TensorRT engines here" in r.stderr and "clipfsar engine" in r.stderr
    assert not out.exists()
