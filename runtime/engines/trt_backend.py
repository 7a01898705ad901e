"""The native TensorRT backend (``--backend trt``): torch-free and onnxruntime-free.

``tensorrt`` runs the engine (built or loaded by ``trt_engine.ensure_engine``); NVIDIA's ``cuda-python`` gives the
device memory, pinned host buffers and the CUDA stream. Buffers are allocated once at the profile's largest
shapes; each call sets the input shapes it really has (within the profile), copies inputs in, runs
``execute_async_v3`` on the stream and copies the outputs back. A batch larger than the profile's runs in pieces.
The interface is ``OnnxGraph``'s (``run(**inputs) -> dict``, ``backend``, ``providers``, ``input_names``,
``output_names``), so the classifier does not know which one it has. On a Jetson this runs with JetPack's TensorRT.

Example:
    >>> g = TrtGraph(Path("bundle/image_encoder.onnx"), spec.inputs, spec.outputs, precision="fp32",
    ...              cache_dir=Path("bundle/engines"))
    >>> g.run(images=x)["features"].shape
    (8, 512)
"""
from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.engines.trt_engine import cuda_check, ensure_engine, import_cudart, import_tensorrt, trt_logger
from clipfsar.runtime.engines.trt_profile import (
    ProfileOptions,
    batch_slices,
    load_profile_options,
    profile_shapes,
    shape_problem,
)

log = logging.getLogger(__name__)


def _spec_fields(spec: Any):
    return (spec["name"], spec["shape"]) if isinstance(spec, dict) else (spec.name, spec.shape)


class _Buffer:
    """One tensor's pinned host buffer and device buffer, sized for the profile's largest shape."""

    def __init__(self, cudart, nbytes: int, dtype: np.dtype):
        self.cudart, self.dtype, self.nbytes = cudart, dtype, max(int(nbytes), dtype.itemsize)
        self.host_ptr = self.device_ptr = None
        self.host_ptr = cuda_check(cudart.cudaMallocHost(self.nbytes))
        self.device_ptr = cuda_check(cudart.cudaMalloc(self.nbytes))
        raw = (ctypes.c_byte * self.nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=np.uint8)  # a byte view of the pinned memory

    def view(self, shape: Sequence[int]) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        return self.host[:n].view(self.dtype).reshape(tuple(shape))

    def free(self) -> None:
        if self.device_ptr is not None:
            self.cudart.cudaFree(self.device_ptr)
            self.device_ptr = None
        if self.host_ptr is not None:
            self.host = None
            self.cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = None


class TrtGraph:
    """One graph as a TensorRT engine on this GPU.

    Args:
        path: the ONNX graph (of the precision variant to run).
        inputs, outputs: the graph's I/O specs from the manifest (names; shapes with named dynamic axes).
        precision: the variant's precision (part of the engine's cache key).
        cache_dir: the engine cache folder (None: build in memory every time).
        options: optimisation profile options (None: those ``clipfsar engine`` saved in ``cache_dir``, else
            the defaults).
        graph_sha256: the graph's sha256 from the manifest (else computed).
    Raises:
        TensorRTUnavailable: TensorRT or cuda-python is missing. EngineBuildError: the engine cannot be built.
    """

    backend = "trt"

    def __init__(self, path: Path, inputs: Sequence[Any], outputs: Sequence[Any] = (), precision: str = "fp32",
                 cache_dir: Optional[Path] = None, options: Optional[ProfileOptions] = None,
                 graph_sha256: Optional[str] = None, name: Optional[str] = None):
        trt, self._cudart = import_tensorrt(), import_cudart()
        self.path = Path(path)
        self.name = name or self.path.stem
        self.precision = precision
        options = options or load_profile_options(cache_dir)
        self._profile = profile_shapes(inputs, options)
        self._batch_inputs = [n for n, s in map(_spec_fields, inputs) if s and s[0] == "batch"]
        out_specs = [_spec_fields(o) for o in outputs]
        self._batch_outputs = {n for n, s in out_specs if s and s[0] == "batch"}
        self._max_batch = options.max_batch
        self._buffers: Dict[str, _Buffer] = {}
        self._stream = None
        self._lock = threading.Lock()  # one execution context and one set of buffers: one call at a time
        blob, decision = ensure_engine(self.path, self.name, inputs, precision, cache_dir, options,
                                       graph_sha256=graph_sha256)
        self._runtime = trt.Runtime(trt_logger())
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None and decision.action == "load":  # TensorRT refused a cached engine: build anew
            log.warning("%s: TensorRT could not deserialize the cached engine %s; rebuilding", self.name,
                        decision.engine_path.name)
            blob, _ = ensure_engine(self.path, self.name, inputs, precision, cache_dir, options,
                                    graph_sha256=graph_sha256, rebuild=True)
            self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise ClipFsarError(f"{self.name}: TensorRT could not deserialize the engine it built from {self.path}")
        self.context = self.engine.create_execution_context()
        if self.context is None:  # TensorRT returns None when it cannot allocate the context's device memory
            raise ClipFsarError(f"{self.name}: TensorRT could not create an execution context for {self.path} (out "
                                f"of GPU memory?); free GPU memory, or rebuild with a smaller --max-batch or "
                                f"--workspace-mb (clipfsar engine)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        missing = set(self.input_names) - set(self._profile)
        if missing:
            raise ClipFsarError(f"{self.name}: engine inputs {sorted(missing)} are not in the manifest's I/O contract")
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._stream = cuda_check(self._cudart.cudaStreamCreate())
        for n in self.input_names:  # the largest shapes, to size every buffer once
            if not self.context.set_input_shape(n, self._profile[n][2]):
                raise ClipFsarError(f"{self.name}: TensorRT refused shape {self._profile[n][2]} for input '{n}'")
        for n in names:
            shape = self._profile[n][2] if n in self.input_names else tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise ClipFsarError(f"{self.name}: output '{n}' has a data-dependent shape {shape}; not supported")
            self._buffers[n] = _Buffer(self._cudart, int(np.prod(shape, dtype=np.int64)) * self._dtypes[n].itemsize,
                                       self._dtypes[n])
            self.context.set_tensor_address(n, int(self._buffers[n].device_ptr))
        self.providers = [f"TensorRT {trt.__version__} (native, {precision})"]
        log.info("%s runs on %s", self.path.name, self.providers[0])

    def run(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the engine on named inputs; returns the named outputs (host numpy arrays).

        Raises:
            ClipFsarError: a missing input, or a shape outside the engine's profile (other than the batch axis,
            which runs in pieces).
        """
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ClipFsarError(f"{self.path.name}: missing inputs {sorted(missing)}")
        arrays = {n: np.ascontiguousarray(inputs[n], dtype=self._dtypes[n]) for n in self.input_names}
        batch = {arrays[n].shape[0] for n in self._batch_inputs if arrays[n].ndim}
        n = max(batch, default=0)
        if len(batch) == 1 and n > self._max_batch and self._batch_outputs >= set(self.output_names):
            parts = [self._run_once({k: (v[sl] if k in self._batch_inputs else v) for k, v in arrays.items()})
                     for sl in batch_slices(n, self._max_batch)]
            return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}
        return self._run_once(arrays)

    def _run_once(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._lock:
            return self._execute(arrays)

    def _execute(self, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n in self.input_names:
            a = arrays[n]
            problem = shape_problem(n, a.shape, self._profile[n])
            if problem:
                raise ClipFsarError(f"{self.path.name}: {problem}")
            if not self.context.set_input_shape(n, a.shape):
                raise ClipFsarError(f"{self.path.name}: TensorRT refused shape {a.shape} for input '{n}'")
            buf = self._buffers[n]
            buf.view(a.shape)[...] = a
            cuda_check(cudart.cudaMemcpyAsync(buf.device_ptr, buf.host_ptr, a.nbytes, h2d, self._stream))
        if not self.context.execute_async_v3(int(self._stream)):
            raise ClipFsarError(f"{self.path.name}: TensorRT execution failed (see TensorRT's log)")
        shapes: Dict[str, tuple] = {}
        for n in self.output_names:
            shapes[n] = tuple(self.context.get_tensor_shape(n))
            buf = self._buffers[n]
            nbytes = int(np.prod(shapes[n], dtype=np.int64)) * buf.dtype.itemsize
            cuda_check(cudart.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, nbytes, d2h, self._stream))
        cuda_check(cudart.cudaStreamSynchronize(self._stream))
        return {n: self._buffers[n].view(shapes[n]).copy() for n in self.output_names}

    def close(self) -> None:
        """Free the buffers and the stream (also done when the object is collected)."""
        self.context = None  # no execution can use the buffers any more
        for buf in self._buffers.values():
            buf.free()
        self._buffers = {}
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the CUDA bindings may be gone already
            pass
