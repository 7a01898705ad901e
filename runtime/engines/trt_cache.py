"""The TensorRT engine cache: pure Python, no TensorRT needed (tested on the CPU).

TensorRT engines are not portable across GPUs or TensorRT versions, so each engine is stored under a key of
(GPU name, compute capability, SM count, memory, TensorRT version and CUDA flavour, graph sha256, precision,
optimisation profile, builder settings); ``KEY_FIELDS`` says why each is there. A cache folder (see
runtime/engines/cache_dir.py: ``--cache-dir``, ``$CLIPFSAR_CACHE_DIR``, the bundle's ``engines/``, a per-user
folder) holds, per engine::

    <graph>.<precision>.<digest16>.engine   the serialized engine (TensorRT's plan bytes)
    <graph>.<precision>.<digest16>.json     its record: the key's fields and the engine file's sha256

plus one TensorRT timing cache per device (``timing-<device digest16>.cache``) and ``profile.json``, the profile
options ``clipfsar engine`` built with (engines/trt_profile.py; the runtime reuses them, so it finds those engines).
An engine is loaded
only when its record's key equals this device's key and its bytes match the recorded sha256; anything else is
rebuilt, and :func:`lookup` says why.

Example:
    >>> opts = ProfileOptions(max_batch=16)
    >>> shapes = profile_shapes([{"name": "images", "shape": ["batch", 3, 224, 224]}], opts)
    >>> shapes["images"]
    ((1, 3, 224, 224), (1, 3, 224, 224), (16, 3, 224, 224))
    >>> key = engine_key(DeviceInfo("NVIDIA H200", "9.0", "10.9.0"), sha, "fp16", shapes)
    >>> decision, blob = lookup(Path("bundle/engines"), "image_encoder", key)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import ClipFsarError

# the profile half lives in trt_profile.py; its names stay importable from here
from clipfsar.runtime.engines.trt_profile import (  # noqa: F401
    AXES,
    PROFILE_FILE,
    ProfileOptions,
    ProfileShapes,
    Shape,
    batch_slices,
    load_profile_options,
    profile_shapes,
    save_profile_options,
    shape_problem,
)

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
# What an engine depends on, and so what its key holds (docs/tensorrt.md, "What the cache key covers"):
#   gpu_name, compute_capability: TensorRT's kernels and tactics are chosen per GPU model and SM architecture;
#     an engine refuses (or, across models of one architecture, silently mis-tunes on) another GPU.
#   sm_count, memory_mb: every Jetson Orin module calls itself "Orin" with compute capability 8.7; the SM count
#     and memory tell an AGX Orin (16 SMs) from an Orin NX / Nano (8 or 4 SMs), whose tactics differ.
#   tensorrt_version: the full version of the library that built the plan (plans do not load across versions),
#     with the CUDA flavour of a pip build ("10.13.3.9+cu12"), since cu12 and cu13 builds share version numbers.
#   graph_sha256: the exact ONNX bytes of the variant built (weights, Q/DQ scales, fp16 casts are all in them).
#   external_data: for a graph over 2 GB, the sha256 of its external weight files (the .onnx then holds only
#     references to them, so its own sha256 would not change with the weights); "" for one-file graphs.
#   precision: redundant with the graph's sha256 (the variant carries its precision) but names the file.
#   profile: (min, opt, max) of every input: an engine runs only the shapes it was built for.
#   builder: the build settings that change the plan: TF32 off (fp32 is true fp32), strongly typed, and the
#     workspace limit (it bounds which tactics TensorRT may choose).
# Not in the key, on purpose: the driver version (plans are independent of it), the timing cache (a speed-up of
# the build only), the host (the same GPU in another machine loads the same plan).
KEY_FIELDS = ("gpu_name", "compute_capability", "sm_count", "memory_mb", "tensorrt_version", "graph_sha256",
              "external_data", "precision", "profile", "builder")
RECORD_FORMAT = 2


@dataclass(frozen=True)
class DeviceInfo:
    """What makes an engine portable or not: the GPU (name, compute capability "8.7", SM count, memory in MiB,
    whether it shares memory with the CPU, as a Jetson does) and TensorRT's version (with its CUDA flavour)."""
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    sm_count: int = 0
    memory_mb: int = 0
    integrated: bool = False

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """The cache key of one engine; ``digest`` is the sha256 of its canonical JSON."""
    gpu_name: str
    compute_capability: str
    sm_count: int
    memory_mb: int
    tensorrt_version: str
    graph_sha256: str
    external_data: str
    precision: str
    profile: Tuple[Tuple[str, Tuple[Shape, Shape, Shape]], ...]  # sorted by input name
    builder: Tuple[Tuple[str, Any], ...]  # sorted (setting, value) pairs: see BuildSettings

    def fields(self) -> Dict[str, Any]:
        """The key as JSON-ready fields (what the record stores and compares)."""
        d = dataclasses.asdict(self)
        d["profile"] = {name: [list(s) for s in shapes] for name, shapes in self.profile}
        d["builder"] = dict(self.builder)
        return d

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.fields(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def stem(self, graph: str) -> str:
        """File name stem of this engine in a cache folder: ``<graph>.<precision>.<digest16>``."""
        return f"{graph}.{self.precision}.{self.digest[:16]}"


@dataclass(frozen=True)
class BuildSettings:
    """The builder settings an engine is built with (part of its key).

    ``tf32``: False: TensorRT's TF32 (on by default; 10-bit mantissa products on Ampere and newer) is cleared, so
    fp32 layers, including those the fp16 variants keep in fp32, compute in fp32. ``workspace_mb``: the workspace
    memory pool limit (None: TensorRT's default, the GPU's memory). ``strongly_typed``: the network takes its
    types from the ONNX graph (always True here).
    """
    workspace_mb: Optional[int] = None
    tf32: bool = False
    strongly_typed: bool = True

    def items(self) -> Tuple[Tuple[str, Any], ...]:
        return tuple(sorted(dataclasses.asdict(self).items()))


def engine_key(device: DeviceInfo, graph_sha256: str, precision: str, profile: ProfileShapes,
               builder: Optional[BuildSettings] = None, external_data: str = "") -> EngineKey:
    """Build the cache key of an engine (a pure function of its arguments).

    Raises:
        ClipFsarError: an empty GPU name or version, a sha256 that is not 64 hex digits, an unknown precision, or
        an empty profile.
    """
    if not device.gpu_name.strip() or not device.compute_capability.strip() or not device.tensorrt_version.strip():
        raise ClipFsarError(f"engine key: incomplete device description {device}")
    if not re.fullmatch(r"[0-9a-f]{64}", graph_sha256 or ""):
        raise ClipFsarError(f"engine key: graph sha256 must be 64 lowercase hex digits, got {graph_sha256!r}")
    if precision not in PRECISIONS:
        raise ClipFsarError(f"engine key: unknown precision '{precision}' (one of {', '.join(PRECISIONS)})")
    if not profile:
        raise ClipFsarError("engine key: empty optimisation profile")
    prof = tuple(sorted((name, tuple(tuple(int(d) for d in s) for s in shapes)) for name, shapes in profile.items()))
    return EngineKey(device.gpu_name, device.compute_capability, int(device.sm_count), int(device.memory_mb),
                     device.tensorrt_version, graph_sha256, external_data, precision, prof,
                     (builder or BuildSettings()).items())


_LABELS = {"gpu_name": "GPU", "compute_capability": "compute capability", "sm_count": "SM count",
           "memory_mb": "GPU memory (MiB)", "tensorrt_version": "TensorRT", "graph_sha256": "graph sha256",
           "external_data": "external weights' sha256",
           "precision": "precision", "profile": "optimisation profile", "builder": "builder settings"}


def key_mismatch(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> List[str]:
    """Human-readable differences between a recorded key and the wanted one (empty when they match)."""
    out = []
    for f in KEY_FIELDS:
        if f not in recorded:
            out.append(f"the record has no {_LABELS[f]}")
            continue
        a, b = recorded[f], wanted[f]
        if a == b:
            continue
        if f in ("graph_sha256", "external_data"):
            out.append(f"it was built from another graph ({_LABELS[f]} {str(a)[:12]}..., this graph "
                       f"{str(b)[:12]}...)")
        elif f in ("profile", "builder"):
            out.append(f"its {_LABELS[f]} differ{'s' if f == 'profile' else ''} ({json.dumps(a)} vs {json.dumps(b)})")
        else:
            out.append(f"it was built for {_LABELS[f]} '{a}' (here: '{b}')")
    return out


@dataclass(frozen=True)
class CacheDecision:
    """What to do with one engine: ``load`` the cached file or ``build`` a new one, and why."""
    action: str
    reason: str
    engine_path: Path


def _read_record(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("key"), dict) else None


def lookup(cache_dir: Path, graph: str, key: EngineKey) -> Tuple[CacheDecision, Optional[bytes]]:
    """Decide whether the cached engine for ``graph`` under ``key`` can be loaded; returns its bytes if so.

    ``build`` (with the reason) when: there is no engine for this key (and, if engines of this graph and
    precision exist for another device, TensorRT version, graph or profile, which differences); the record is
    unreadable or its key differs from ``key``; the engine file is missing or its bytes do not match the recorded
    sha256. Never raises for a bad cache: a bad entry is simply rebuilt.
    """
    cache_dir = Path(cache_dir)
    stem = key.stem(graph)
    engine_path, record_path = cache_dir / f"{stem}.engine", cache_dir / f"{stem}.json"
    wanted = key.fields()
    record = _read_record(record_path) if record_path.is_file() else None
    if record is None:
        if record_path.is_file():
            return CacheDecision("build", f"the record {record_path.name} is unreadable", engine_path), None
        others = sorted(cache_dir.glob(f"{graph}.{key.precision}.*.json"), key=lambda p: p.stat().st_mtime)
        for other in reversed(others):
            rec = _read_record(other)
            if rec is not None:
                why = "; ".join(key_mismatch(rec["key"], wanted)) or "its key differs"
                return CacheDecision("build", f"the cached engine {other.stem} does not fit: {why}", engine_path), None
        return CacheDecision("build", f"no cached {key.precision} engine for {graph} in {cache_dir}", engine_path), None
    diffs = key_mismatch(record["key"], wanted)
    if diffs:
        return CacheDecision("build", f"the cached engine {stem} does not fit: {'; '.join(diffs)}", engine_path), None
    try:
        blob = engine_path.read_bytes()
    except OSError:
        return CacheDecision("build", f"the engine file {engine_path.name} is missing", engine_path), None
    if hashlib.sha256(blob).hexdigest() != record.get("engine_sha256"):
        return CacheDecision("build", f"the engine file {engine_path.name} does not match its recorded sha256 "
                                      f"(corrupt or changed)", engine_path), None
    return CacheDecision("load", f"cached engine {stem} matches this device", engine_path), blob


def store(cache_dir: Path, graph: str, key: EngineKey, blob: bytes) -> Path:
    """Write an engine and its record atomically (the engine first, then the record that vouches for it).

    Returns the engine's path. Raises OSError if the folder cannot be written.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = key.stem(graph)
    engine_path = cache_dir / f"{stem}.engine"
    with staged_file(engine_path) as tmp:
        tmp.write_bytes(blob)
    record = {"format": RECORD_FORMAT, "graph": graph, "key": key.fields(),
              "engine_sha256": hashlib.sha256(blob).hexdigest(), "engine_bytes": len(blob)}
    with staged_file(cache_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return engine_path


def timing_cache_path(cache_dir: Path, device: DeviceInfo) -> Path:
    """The TensorRT timing cache file for this device (timing caches are per GPU and TensorRT version too)."""
    return Path(cache_dir) / f"timing-{device.digest[:16]}.cache"
