"""Build TensorRT engines on the device with TensorRT's own Python API, and find them again in the cache.

One code path for TensorRT 10 (JetPack 6) and TensorRT 11 (pip): the network is created strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x; on 11.x strong typing is always on and the flag, where
still present, is ignored), so the precision the ONNX graph carries (fp32, fp16 casts, int8 Q/DQ) is the precision
the engine runs; no builder precision flags (removed in 11.x) are used, and TF32 is cleared so fp32 is fp32. Every
dynamic axis gets an optimisation profile, the builder reuses a per-device timing cache, and the workspace is
limited with a memory pool limit (1 GiB by default on a Jetson, whose GPU shares the CPU's memory). TensorRT older
than 10 (JetPack 6.0's 8.6) is refused with a message that says so.

``tensorrt`` and NVIDIA's ``cuda-python`` are imported only when called, so this module imports anywhere.

Example:
    >>> blob, decision = ensure_engine(Path("bundle/image_encoder.onnx"), "image_encoder", bundle_inputs,
    ...                                precision="fp16", cache_dir=Path("bundle/engines"))
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.reader import sha256_of
from clipfsar.runtime.engines.trt_cache import (
    BuildSettings,
    CacheDecision,
    DeviceInfo,
    engine_key,
    lookup,
    store,
    timing_cache_path,
)
from clipfsar.runtime.engines.trt_profile import ProfileOptions, ProfileShapes, load_profile_options, profile_shapes

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'clip-fsar[tensorrt]' on desktop Linux with a CUDA 12 driver (R525+), "
                "'clip-fsar[tensorrt-cu13]' with a CUDA 13 driver (R580+); on a Jetson (JetPack >= 6.1), TensorRT "
                "comes with JetPack and 'clip-fsar[tensorrt]' adds cuda-python 12.6 (docs/tensorrt.md)")
MIN_TENSORRT = (10, 0)  # strongly typed networks and explicit batch by default: JetPack 6.1 ships 10.3
# CUDA errors that mean the driver is older than what cuda-python's bindings were built for
_DRIVER_TOO_OLD = {"cudaErrorInsufficientDriver": 35, "cudaErrorCallRequiresNewerDriver": 36}


class TensorRTUnavailable(ClipFsarError):
    """TensorRT or cuda-python is missing or too old, or no CUDA GPU is usable."""


class EngineBuildError(ClipFsarError):
    """TensorRT could not parse a graph or build an engine from it."""


def tensorrt_version_problem(version: str) -> Optional[str]:
    """Why TensorRT ``version`` cannot run this backend (None when it can).

    TensorRT 8.x (JetPack 5, JetPack 6.0's 8.6) has no strongly typed networks and makes implicit-batch networks
    from ``create_network(0)``; its parser then fails without naming the cause, so it is refused here.
    """
    try:
        major, minor = (int(x) for x in str(version).split(".")[:2])
    except ValueError:
        return f"cannot read TensorRT's version '{version}'"
    if (major, minor) < MIN_TENSORRT:
        return (f"TensorRT {version} is too old: this backend needs TensorRT >= {MIN_TENSORRT[0]} (strongly typed "
                f"networks). On a Jetson, flash JetPack >= 6.1 (TensorRT 10.3); on a desktop, pip install "
                f"'clip-fsar[tensorrt]'; or run with --backend cuda or cpu (onnxruntime)")
    return None


def cuda_python_version() -> str:
    """The installed cuda-python's version ("12.6.2", "13.0.1"; "unknown" when its metadata is missing)."""
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("cuda-python", "cuda-bindings"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def driver_problem(error_name: str, cuda_python: str) -> Optional[str]:
    """The message for a CUDA error that means the driver is too old for cuda-python (None for other errors)."""
    if error_name not in _DRIVER_TOO_OLD:
        return None
    major = cuda_python.split(".")[0]
    fix = ("pip install 'cuda-python>=12.6,<13' (what clip-fsar[tensorrt] pins), or update the driver to R580+"
           if major == "13" else "update the NVIDIA driver (or flash a newer JetPack)")
    return f"the NVIDIA driver is too old for cuda-python {cuda_python} ({error_name}): {fix}"


def import_tensorrt():
    """``import tensorrt``, refusing versions older than 10 (see ``tensorrt_version_problem``)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"TensorRT's Python package is not installed ({e}): {INSTALL_HINT}") from e
    problem = tensorrt_version_problem(getattr(trt, "__version__", "0"))
    if problem:
        raise TensorRTUnavailable(problem)
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
        ClipFsarError: naming the CUDA error (and, for an insufficient driver, which cuda-python it was too
        old for).
    """
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    code = int(getattr(err, "value", err))
    if code != 0:
        name = str(getattr(err, "name", err))
        hint = driver_problem(name, cuda_python_version())
        raise ClipFsarError(hint or f"CUDA call failed: {name} ({code})")
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


def tensorrt_flavour() -> str:
    """The CUDA flavour of a pip-installed TensorRT (``cu12``, ``cu13``), "" for JetPack's or a tarball's."""
    from importlib.metadata import distributions
    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in distributions()}
    for flavour in ("cu13", "cu12", "cu11"):
        if any(n.startswith("tensorrt-" + flavour) for n in names):
            return flavour
    return ""


def device_info(device: int = 0) -> DeviceInfo:
    """This device's cache-key facts: GPU name, compute capability, SM count, memory, TensorRT version."""
    trt, cudart = import_tensorrt(), import_cudart()
    prop = cuda_check(cudart.cudaGetDeviceProperties(device))
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    flavour = tensorrt_flavour()
    version = str(trt.__version__) + (f"+{flavour}" if flavour else "")
    return DeviceInfo(str(name).strip(), f"{prop.major}.{prop.minor}", version, int(prop.multiProcessorCount),
                      int(prop.totalGlobalMem) >> 20, bool(prop.integrated))


JETSON_WORKSPACE_MB = 1024


def default_workspace_mb(device: DeviceInfo) -> Optional[int]:
    """The workspace limit when none is given: on a GPU that shares memory with the CPU (a Jetson) 1 GiB, or an
    eighth of the memory if that is less (an Orin Nano 4GB: 472 MiB), so a build leaves the camera pipeline and the
    OS room; None (TensorRT's default, all of the GPU's memory) on a discrete GPU."""
    if not device.integrated:
        return None
    return max(64, min(JETSON_WORKSPACE_MB, device.memory_mb // 8)) if device.memory_mb else JETSON_WORKSPACE_MB


def expected_build_time(device: DeviceInfo, graph_mb: float) -> str:
    """A rough range for building one engine, for the warning before a build (not measured by this project: the
    ranges are the orders of magnitude NVIDIA's and users' reports give for CLIP-sized encoders)."""
    if device.integrated:
        small = device.sm_count and device.sm_count <= 8
        return ("5 to 20 minutes" if small else "2 to 10 minutes") if graph_mb > 20 else "under 2 minutes"
    return "1 to 5 minutes" if graph_mb > 20 else "under a minute"


@functools.lru_cache(maxsize=None)
def trt_logger():
    """One TensorRT logger per process (TensorRT expects a single one), warnings and errors only."""
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def strongly_typed_flags(trt) -> int:
    """``create_network`` flags: STRONGLY_TYPED where the enum has it (10.x; ignored or gone in 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _timing_cache(trt, config, timing_cache: Optional[Path]):
    """The timing cache to build with: the file's when TensorRT accepts it, else a fresh one (never None)."""
    blob = b""
    if timing_cache is not None and timing_cache.is_file():
        try:
            blob = timing_cache.read_bytes()
        except OSError as e:
            log.warning("cannot read the timing cache %s (%s); starting a new one", timing_cache, e)
    cache = config.create_timing_cache(blob) if blob else None
    if cache is None or not config.set_timing_cache(cache, False):  # unreadable, another device or version
        if blob:
            log.warning("timing cache %s does not fit this device or TensorRT; starting a new one", timing_cache)
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, False):
            raise EngineBuildError("TensorRT could not create an empty timing cache")
    return cache


def build_engine(onnx_path: Path, shapes: ProfileShapes, workspace_mb: Optional[int] = None,
                 timing_cache: Optional[Path] = None) -> bytes:
    """Parse an ONNX graph into a strongly typed network and build a serialized engine (TF32 off).

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
    # TF32 is on by default: fp32 MatMuls/Convs would round their inputs to 10-bit mantissas on Ampere and newer;
    # cleared, so an "fp32" engine (and the fp32 layers of the fp16 variants) computes in fp32 (BuildSettings.tf32)
    config.clear_flag(trt.BuilderFlag.TF32)
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
    _timing_cache(trt, config, timing_cache)
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


def check_int8_graph(onnx_path: Path, graph: str, bundle_root: Optional[Path] = None) -> None:
    """Refuse an int8 variant TensorRT's parser would reject (runtime/engines/trt_qdq.py), before any build.

    Raises:
        EngineBuildError: naming the graph, the file, what is wrong and the way out. Without the ``onnx``
        package (part of ``clip-fsar[tensorrt]``) the check is skipped with a warning.
    """
    from clipfsar.runtime.engines.trt_qdq import qdq_problems
    try:
        problems = qdq_problems(onnx_path)
    except ImportError:
        log.warning("%s: the onnx package is missing, so the int8 graph %s is not linted for TensorRT "
                    "(pip install onnx)", graph, onnx_path)
        return
    if problems:
        raise EngineBuildError(
            f"the int8 variant of {graph} ({onnx_path}) is not TensorRT's Q/DQ form: {'; '.join(problems[:3])}"
            f"{f' (+{len(problems) - 3} more)' if len(problems) > 3 else ''}; make one with `clipfsar calibrate "
            f"{bundle_root or 'BUNDLE'} --precision int8 --int8 static`, or use fp16/fp32 engines")


def external_data_sha256(onnx_path: Path) -> str:
    """sha256 over the external weight files a graph over 2 GB references ("" for a one-file graph), for the key.

    The locations are read from the graph's initializers (``onnx``, without loading the weights); without the
    onnx package, the exporter's own naming (``<file>.data`` beside the graph) is used.
    """
    onnx_path = Path(onnx_path)
    try:
        import onnx
        model = onnx.load(str(onnx_path), load_external_data=False)
        locations = sorted({e.value for t in model.graph.initializer
                            if t.data_location == onnx.TensorProto.EXTERNAL for e in t.external_data
                            if e.key == "location"})
    except ImportError:
        guess = onnx_path.with_name(onnx_path.name + ".data")
        locations = [guess.name] if guess.is_file() else []
    if not locations:
        return ""
    h = hashlib.sha256()
    for loc in locations:
        h.update(f"{loc}\0{sha256_of(onnx_path.parent / loc)}\0".encode())
    return h.hexdigest()


def ensure_engine(onnx_path: Path, graph: str, inputs: Sequence[Any], precision: str = "fp32",
                  cache_dir: Optional[Path] = None, options: Optional[ProfileOptions] = None,
                  workspace_mb: Optional[int] = None, graph_sha256: Optional[str] = None,
                  rebuild: bool = False) -> Tuple[bytes, CacheDecision]:
    """The engine of one graph for this device: loaded from the cache when its key and hash match, else built
    (and stored; a cache folder that cannot be written only costs a warning). A build is announced with a
    warning naming the graph and a rough time; an int8 variant is linted for TensorRT's Q/DQ rules first.

    Args:
        onnx_path: the graph file of the wanted precision variant.
        graph: the graph's name (``image_encoder``...), for file names and messages.
        inputs: the graph's input specs from the manifest (names, shapes with named dynamic axes).
        precision: the variant's precision (part of the key).
        cache_dir: where engines live (None: build without caching).
        options: profile options (None: those saved in ``cache_dir`` by ``clipfsar engine``, else defaults).
        workspace_mb: workspace limit for a build (None: ``options.workspace_mb``, else the device's default,
            see ``default_workspace_mb``); part of the key.
        graph_sha256: the graph file's sha256 if known (the manifest's), else it is computed.
        rebuild: build even when a matching engine is cached.
    Returns:
        (engine bytes, the decision taken, with its reason).
    Raises:
        EngineBuildError: an int8 graph TensorRT cannot build, or a failed build.
    """
    options = options or load_profile_options(cache_dir)
    shapes = profile_shapes(inputs, options)
    device = device_info()
    if workspace_mb is None:
        workspace_mb = options.workspace_mb if options.workspace_mb is not None else default_workspace_mb(device)
    settings = BuildSettings(workspace_mb=workspace_mb)
    key = engine_key(device, graph_sha256 or sha256_of(Path(onnx_path)), precision, shapes, settings,
                     external_data_sha256(Path(onnx_path)))
    if cache_dir is not None and not rebuild:
        decision, blob = lookup(Path(cache_dir), graph, key)
        if blob is not None:
            log.info("%s (%s): %s", graph, precision, decision.reason)
            return blob, decision
    else:
        target = Path(cache_dir or ".") / f"{key.stem(graph)}.engine"
        decision = CacheDecision("build", "rebuild asked for" if rebuild else "no cache folder", target)
    if precision == "int8":
        check_int8_graph(Path(onnx_path), graph)
    size_mb = Path(onnx_path).stat().st_size / 2**20
    log.warning("%s (%s): building a TensorRT engine on %s, TensorRT %s (%s); this may take %s. Build ahead with "
                "`clipfsar engine BUNDLE`%s", graph, precision, device.gpu_name, device.tensorrt_version,
                decision.reason, expected_build_time(device, size_mb),
                f"; cached in {cache_dir}" if cache_dir is not None else "; not cached (no cache folder)")
    t0 = time.perf_counter()
    blob = build_engine(Path(onnx_path), shapes, workspace_mb,
                        timing_cache_path(cache_dir, device) if cache_dir is not None else None)
    log.warning("%s (%s): engine built in %.1f s (%.1f MB)", graph, precision, time.perf_counter() - t0,
                len(blob) / 2**20)
    if cache_dir is not None:
        try:
            store(Path(cache_dir), graph, key, blob)
        except OSError as e:
            log.warning("could not cache the engine in %s (%s); it will be built again next time", cache_dir, e)
    return blob, decision
