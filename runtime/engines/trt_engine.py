"""Build TensorRT engines on the device with TensorRT's own Python API, and find them again in the cache.

One code path for TensorRT 10 (JetPack 6) and TensorRT 11 (pip): the network is created strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x; on 11.x strong typing is always on and the flag, where
still present, is ignored), so the precision the ONNX graph carries (fp32, fp16 casts, int8 Q/DQ) is the precision
the engine runs; no builder precision flags (removed in 11.x) are used. Every dynamic axis gets an optimisation
profile, the builder reuses a per-device timing cache, and the workspace is limited with a memory pool limit.

``tensorrt`` and NVIDIA's ``cuda-python`` are imported only when called, so this module imports anywhere.

Example:
    >>> blob, decision = ensure_engine(Path("bundle/image_encoder.onnx"), "image_encoder", bundle_inputs,
    ...                                precision="fp16", cache_dir=Path("bundle/engines"))
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.reader import sha256_of
from clipfsar.runtime.engines.trt_cache import CacheDecision, DeviceInfo, engine_key, lookup, store, timing_cache_path
from clipfsar.runtime.engines.trt_profile import ProfileOptions, ProfileShapes, load_profile_options, profile_shapes

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'clip-fsar[tensorrt]' on desktop Linux; on a Jetson, TensorRT comes with JetPack and "
                "cuda-python from pip (see the README)")


class TensorRTUnavailable(ClipFsarError):
    """TensorRT or cuda-python is missing, or no CUDA GPU is usable."""


class EngineBuildError(ClipFsarError):
    """TensorRT could not parse a graph or build an engine from it."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"TensorRT's Python package is not installed ({e}): {INSTALL_HINT}") from e
    return trt


def import_cudart():
    """NVIDIA cuda-python's runtime API: ``cuda.bindings.runtime`` (cuda-python >= 12.6) or ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise TensorRTUnavailable(f"NVIDIA cuda-python is not installed ({e}): {INSTALL_HINT}") from e
    return cudart


def cuda_check(result: Any) -> Any:
    """Unpack a cuda-python call's ``(error, *values)`` tuple; raise on an error code.

    Raises:
        ClipFsarError: naming the CUDA error.
    """
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    code = int(getattr(err, "value", err))
    if code != 0:
        raise ClipFsarError(f"CUDA call failed: {getattr(err, 'name', err)} ({code})")
    return values[0] if len(values) == 1 else (values or None)


@functools.lru_cache(maxsize=None)
def trt_usable() -> Tuple[bool, str]:
    """Whether the native TensorRT backend can truly run here, and if not, why (checked once per process)."""
    for module, what in (("tensorrt", "TensorRT's Python package"), ("cuda", "NVIDIA cuda-python")):
        if importlib.util.find_spec(module) is None:
            return False, f"{what} is not installed ({INSTALL_HINT})"
    try:
        import_tensorrt()
        count = cuda_check(import_cudart().cudaGetDeviceCount())
    except ClipFsarError as e:
        return False, str(e)
    except Exception as e:  # a broken install (e.g. a library that fails to load)
        return False, f"TensorRT or CUDA failed to start: {e}"
    if not count:
        return False, "no CUDA GPU found"
    return True, "ok"


def device_info(device: int = 0) -> DeviceInfo:
    """This device's cache-key facts: GPU name, compute capability and TensorRT version."""
    trt, cudart = import_tensorrt(), import_cudart()
    prop = cuda_check(cudart.cudaGetDeviceProperties(device))
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return DeviceInfo(str(name).strip(), f"{prop.major}.{prop.minor}", str(trt.__version__))


@functools.lru_cache(maxsize=None)
def trt_logger():
    """One TensorRT logger per process (TensorRT expects a single one), warnings and errors only."""
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def strongly_typed_flags(trt) -> int:
    """``create_network`` flags: STRONGLY_TYPED where the enum has it (10.x; ignored or gone in 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine(onnx_path: Path, shapes: ProfileShapes, workspace_mb: Optional[int] = None,
                 timing_cache: Optional[Path] = None) -> bytes:
    """Parse an ONNX graph into a strongly typed network and build a serialized engine.

    Args:
        onnx_path: the graph (its precision is the engine's precision).
        shapes: input name -> (min, opt, max) shapes (see ``trt_cache.profile_shapes``).
        workspace_mb: limit of TensorRT's workspace memory pool (None: TensorRT's default, the GPU's memory).
        timing_cache: a timing cache file to start from and to update (per device; see ``timing_cache_path``).
    Returns:
        The serialized engine (plan) bytes.
    Raises:
        EngineBuildError: the parser rejects the graph, an input has no profile, or the build fails.
    """
    trt = import_tensorrt()
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {'; '.join(errors) or 'no detail'}")
    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in shapes:
            raise EngineBuildError(f"{onnx_path}: input '{tensor.name}' has no optimisation profile "
                                   f"(profiles given for {sorted(shapes)})")
        lo, opt, hi = shapes[tensor.name]
        net_shape = tuple(tensor.shape)
        if len(net_shape) != len(lo) or any(d >= 0 and d != h for d, h in zip(net_shape, hi)):
            raise EngineBuildError(f"{onnx_path}: input '{tensor.name}' has shape {net_shape} in the graph, "
                                   f"the manifest says {hi} at most")
        profile.set_shape(tensor.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False):  # a cache from another device or version: start afresh
        log.warning("timing cache %s does not fit this device; starting a new one", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see TensorRT's log above)")
    if timing_cache is not None:
        try:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            with staged_file(timing_cache) as tmp:
                tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError as e:
            log.warning("could not save the timing cache %s: %s", timing_cache, e)
    return bytes(memoryview(plan))


def ensure_engine(onnx_path: Path, graph: str, inputs: Sequence[Any], precision: str = "fp32",
                  cache_dir: Optional[Path] = None, options: Optional[ProfileOptions] = None,
                  workspace_mb: Optional[int] = None, graph_sha256: Optional[str] = None,
                  rebuild: bool = False) -> Tuple[bytes, CacheDecision]:
    """The engine of one graph for this device: loaded from the cache when its key and hash match, else built
    (and stored; a cache folder that cannot be written only costs a warning).

    Args:
        onnx_path: the graph file of the wanted precision variant.
        graph: the graph's name (``image_encoder``...), for file names and messages.
        inputs: the graph's input specs from the manifest (names, shapes with named dynamic axes).
        precision: the variant's precision (part of the key).
        cache_dir: where engines live (None: build without caching).
        options: profile options (None: those saved in ``cache_dir`` by ``clipfsar engine``, else defaults).
        workspace_mb: workspace limit for a build.
        graph_sha256: the graph file's sha256 if known (the manifest's), else it is computed.
        rebuild: build even when a matching engine is cached.
    Returns:
        (engine bytes, the decision taken, with its reason).
    """
    options = options or load_profile_options(cache_dir)
    shapes = profile_shapes(inputs, options)
    device = device_info()
    key = engine_key(device, graph_sha256 or sha256_of(Path(onnx_path)), precision, shapes)
    if cache_dir is not None and not rebuild:
        decision, blob = lookup(Path(cache_dir), graph, key)
        if blob is not None:
            log.info("%s (%s): %s", graph, precision, decision.reason)
            return blob, decision
    else:
        target = Path(cache_dir or ".") / f"{key.stem(graph)}.engine"
        decision = CacheDecision("build", "rebuild asked for" if rebuild else "no cache folder", target)
    log.info("%s (%s): building a TensorRT engine on %s, TensorRT %s: %s", graph, precision, device.gpu_name,
             device.tensorrt_version, decision.reason)
    t0 = time.perf_counter()
    blob = build_engine(Path(onnx_path), shapes, workspace_mb,
                        timing_cache_path(cache_dir, device) if cache_dir is not None else None)
    log.info("%s (%s): engine built in %.1f s (%.1f MB)", graph, precision, time.perf_counter() - t0, len(blob) / 2**20)
    if cache_dir is not None:
        try:
            store(Path(cache_dir), graph, key, blob)
        except OSError as e:
            log.warning("could not cache the engine in %s (%s); it will be built again next time", cache_dir, e)
    return blob, decision
