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

from clipfsar.runtime.base.errors import ClipFsarError

log = logging.getLogger(__name__)

# trt: native TensorRT (trt_backend); tensorrt: onnxruntime's EP; openvino: OpenVINO on the CPU (openvino_backend)
BACKENDS = ("auto", "trt", "tensorrt", "cuda", "openvino", "cpu")
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
    try:
        import onnxruntime as ort
        available = ort.get_available_providers()
    except ImportError:  # a Jetson with TensorRT and no onnxruntime
        available = []
    out = []
    if cuda_device_count() > 0:
        from clipfsar.runtime.engines.trt_engine import trt_usable
        if trt_usable()[0]:
            out.append("trt")
        if _PROVIDERS["tensorrt"] in available and tensorrt_libraries_present():
            out.append("tensorrt")
        if _PROVIDERS["cuda"] in available:
            out.append("cuda")
    if openvino_on_x86():
        out.append("openvino")
    return out + (["cpu"] if available else [])


def openvino_on_x86() -> bool:
    """Whether OpenVINO is installed and has a CPU device on this x86-64 machine (where ``auto`` prefers it)."""
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    from clipfsar.runtime.engines.openvino_backend import openvino_usable
    return openvino_usable("CPU")[0]


def _provider_list(backend: str, cache_dir: Optional[Path], precision: str = "fp32", profile=None) -> List:
    # TensorRT EP: no precision flags (the variant carries its precision), the native engines' profile, caches in
    # <cache>/ort-tensorrt/<precision> or none (runtime/engines/trt_ep.py)
    if backend == "tensorrt":
        from clipfsar.runtime.engines.trt_ep import tensorrt_ep_options
        return [("TensorrtExecutionProvider", tensorrt_ep_options(cache_dir, precision, profile)),
                "CUDAExecutionProvider", "CPUExecutionProvider"]
    if backend == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxGraph:
    """One ONNX graph in an onnxruntime session.

    Example:
        >>> g = OnnxGraph("bundle/image_encoder.onnx", backend="cpu")
        >>> feats = g.run(images=x)["features"]
    """

    def __init__(self, path: Path, backend: str = "auto", cache_dir: Optional[Path] = None, threads: int = 0,
                 spinning: bool = True, precision: str = "fp32", profile=None):
        try:
            import onnxruntime as ort
        except ImportError as e:  # a Jetson with TensorRT only: auto gets here when TensorRT cannot run either
            raise BackendUnavailableError(f"no backend can run {path}: onnxruntime is not installed ({e}) and the "
                                          f"native TensorRT backend is not usable; pip install onnxruntime, or "
                                          f"see docs/tensorrt.md") from e

        if backend not in BACKENDS or backend in ("trt", "openvino"):
            raise ClipFsarError(f"unknown onnxruntime backend '{backend}'; choose one of "
                                f"{', '.join(b for b in BACKENDS if b not in ('trt', 'openvino'))} "
                                f"(trt, openvino: use create_graph)")
        ort.set_default_logger_severity(3)
        available = ort.get_available_providers()
        if backend == "auto":
            order = [b for b in usable_backends() if b not in ("trt", "openvino")]
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
        if not spinning:  # idle pool threads sleep instead of spinning: they leave the cores to the video decoder
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        last_error: Optional[Exception] = None
        for b in order:
            try:
                # onnxruntime 1.31's CPU NCHWc layout pass crashes (SIGSEGV) on fp16 graphs with a Conv; it only
                # re-lays fp32 Convs, so an fp16 variant loses nothing without it
                sess = ort.InferenceSession(str(path), opts, providers=_provider_list(b, cache_dir, precision, profile),
                                           disabled_optimizers=["NchwcTransformer"] if precision == "fp16" else None)
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


def create_graph(path: Path, backend: str = "auto", cache_dir: Optional[Path] = None, threads: int = 0,
                 precision: str = "fp32", spec=None, spinning: bool = True, graph_sha256: Optional[str] = None):
    """One graph on the best backend: the native TensorRT engine (``trt``) or an onnxruntime session.

    Args:
        path: the ONNX graph (of the precision variant to run).
        backend: ``auto`` (``trt`` where TensorRT and a GPU truly work, else onnxruntime's best), ``trt``,
            ``tensorrt`` (onnxruntime's TensorRT EP), ``cuda`` or ``cpu``; or a Triton server's URL
            (``grpc://HOST:PORT``, ``http://HOST:PORT``: runtime/engines/triton_client.py).
        cache_dir: engine cache folder (native engines, and the EP's under ``ort-tensorrt/<precision>``).
        threads: CPU threads per onnxruntime session (0 = its default).
        precision: the variant's precision (the engine key; the EP's fp16/int8 flags).
        spec: the graph's manifest entry (``GraphSpec``: inputs/outputs with named dynamic axes); ``trt`` needs it
            for its optimisation profile.
        graph_sha256: the variant's sha256 from the manifest (else computed for the engine key).
    Returns:
        ``TrtGraph`` or ``OnnxGraph``; both have ``run(**inputs) -> dict``, ``backend``, ``providers``,
        ``input_names``, ``output_names``.
    Raises:
        BackendUnavailableError: the backend asked for cannot run here (the message says why).

    Example:
        >>> g = create_graph(b.graph_path("image_encoder"), "auto", b.root / "engines",
        ...                  spec=b.manifest.graphs["image_encoder"])
    """
    from clipfsar.runtime.engines.triton_client import is_remote
    if is_remote(backend):  # grpc:// triton:// http://: the graph runs on a Triton server (runtime/serving/server.py)
        from clipfsar.runtime.engines.triton_client import remote_graph
        return remote_graph(backend, path, spec)
    if backend not in BACKENDS:
        raise ClipFsarError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)} or a server URL "
                            f"(grpc://HOST:PORT, http://HOST:PORT)")
    if backend == "trt" or (backend == "auto" and spec is not None and cuda_device_count() > 0):
        from clipfsar.runtime.engines.trt_engine import trt_usable
        ok, why = trt_usable()
        if backend == "trt" and not ok:
            raise BackendUnavailableError(f"backend 'trt' cannot run here: {why}")
        if backend == "trt" and spec is None:
            raise BackendUnavailableError(f"backend 'trt' needs the manifest's I/O spec of {path}")
        if ok:
            from clipfsar.runtime.engines.trt_backend import TrtGraph
            try:
                return TrtGraph(Path(path), spec.inputs, spec.outputs, precision, cache_dir,
                                graph_sha256=graph_sha256, name=_graph_name(path))
            except Exception as e:
                if backend == "trt":
                    if isinstance(e, ClipFsarError):
                        raise
                    raise BackendUnavailableError(f"backend 'trt' did not start for {path}: {e}") from e
                log.warning("native TensorRT did not start for %s (%s); using onnxruntime", Path(path).name, e)
    # auto: OpenVINO for the encoders; the heads (a few small MatMuls around OTAM's loop) stay on onnxruntime,
    # whose per-call overhead is lower (docs/cpu.md)
    if backend == "openvino" or (backend == "auto" and _graph_name(path) in ("image_encoder", "text_encoder")
                                 and cuda_device_count() == 0 and openvino_on_x86()):
        from clipfsar.runtime.engines.openvino_backend import openvino_graph
        return openvino_graph(Path(path), precision, cache_dir, threads, graph_sha256, _graph_name(path), spec,
                              announce=backend == "auto")
    profile = None
    if backend in ("tensorrt", "auto") and spec is not None:  # the EP gets the native engines' profile
        from clipfsar.runtime.engines.trt_profile import load_profile_options, profile_shapes
        profile = profile_shapes(spec.inputs, load_profile_options(cache_dir))
    return OnnxGraph(Path(path), backend, cache_dir, threads, spinning, precision=precision, profile=profile)


def _graph_name(path: Path) -> str:
    """``image_encoder`` from ``image_encoder.onnx`` or ``variants/image_encoder.fp16.<sha12>.onnx``."""
    return Path(path).name.split(".", 1)[0]
