"""Inference backends for ONNX graphs: onnxruntime with the TensorRT, CUDA or CPU execution provider.

``auto`` picks the best provider that truly runs: a session is created and the providers it really got are
checked (onnxruntime silently falls back to the CPU when a GPU provider cannot start).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .errors import ClipFsarError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "cuda", "cpu")
_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class BackendUnavailableError(ClipFsarError):
    """The requested backend cannot run on this machine."""


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees (0 without a driver): checked before onnxruntime is asked for a GPU provider."""
    import ctypes
    try:
        lib = ctypes.CDLL("libcuda.so.1" if os.name != "nt" else "nvcuda.dll")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def tensorrt_libraries_present() -> bool:
    """Whether TensorRT's runtime library can be loaded (onnxruntime's TensorRT provider needs it)."""
    import ctypes
    for name in ("libnvinfer.so.10", "libnvinfer.so.11", "libnvinfer.so", "nvinfer_10.dll", "nvinfer.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def usable_backends() -> List[str]:
    """Backends that can truly run here, best first (GPU providers only where a GPU and their libraries are)."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    out = []
    if cuda_device_count() > 0:
        if _PROVIDERS["tensorrt"] in available and tensorrt_libraries_present():
            out.append("tensorrt")
        if _PROVIDERS["cuda"] in available:
            out.append("cuda")
    return out + ["cpu"]


def _provider_list(backend: str, cache_dir: Optional[Path]) -> List:
    trt_opts = {"trt_engine_cache_enable": True, "trt_fp16_enable": False}
    if cache_dir is not None:
        trt_opts["trt_engine_cache_path"] = str(cache_dir)
    if backend == "tensorrt":
        return [("TensorrtExecutionProvider", trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
    if backend == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxGraph:
    """One ONNX graph in an onnxruntime session.

    Example:
        >>> g = OnnxGraph("bundle/image_encoder.onnx", backend="cpu")
        >>> feats = g.run(images=x)["features"]
    """

    def __init__(self, path: Path, backend: str = "auto", cache_dir: Optional[Path] = None, threads: int = 0):
        import onnxruntime as ort

        if backend not in BACKENDS:
            raise ClipFsarError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        ort.set_default_logger_severity(3)
        available = ort.get_available_providers()
        if backend == "auto":
            order = usable_backends()
        else:
            if _PROVIDERS[backend] not in available:
                raise BackendUnavailableError(
                    f"backend '{backend}' needs onnxruntime's {_PROVIDERS[backend]}, which this onnxruntime "
                    f"does not have (available: {', '.join(available)})")
            if backend != "cpu" and backend not in usable_backends():
                raise BackendUnavailableError(
                    f"backend '{backend}' cannot run here: "
                    + ("no CUDA GPU found" if cuda_device_count() == 0 else "TensorRT libraries not found"))
            order = [backend]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        last_error: Optional[Exception] = None
        for b in order:
            try:
                sess = ort.InferenceSession(str(path), opts, providers=_provider_list(b, cache_dir))
            except Exception as e:  # a GPU provider that fails to start: try the next one
                last_error = e
                continue
            got = sess.get_providers()
            if _PROVIDERS[b] == got[0]:
                self.session, self.backend, self.providers = sess, b, got
                break
            if backend != "auto":
                raise BackendUnavailableError(f"backend '{backend}' did not start for {path} "
                                              f"(onnxruntime fell back to {got[0]})")
        else:
            raise BackendUnavailableError(f"no backend could run {path}: {last_error}")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("%s runs on %s", self.path.name, self.providers[0])

    def run(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the graph on named inputs; returns the named outputs."""
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ClipFsarError(f"{self.path.name}: missing inputs {sorted(missing)}")
        outs = self.session.run(self.output_names, {k: inputs[k] for k in self.input_names})
        return dict(zip(self.output_names, outs))
