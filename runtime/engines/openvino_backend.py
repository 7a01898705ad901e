"""The OpenVINO backend (``--backend openvino``): a bundle's ONNX graphs compiled by OpenVINO for an x86 CPU.

OpenVINO reads the ONNX graphs as they are: fp32, fp16, the symmetric int8 Q/DQ variant (its CPU plugin folds
Q/DQ pairs into int8 kernels, VNNI where the CPU has it) and the fp32 graph at ``bf16`` inference precision
(``INFERENCE_PRECISION_HINT``, on CPUs with AVX-512 BF16 or AMX). fp32 is asked for explicitly
(``INFERENCE_PRECISION_HINT=f32``): on AMX CPUs OpenVINO's own default would be bf16.

Threads and streams: ``threads`` sets ``INFERENCE_NUM_THREADS`` (0 = OpenVINO's default, every core); one stream
and the latency hint (one request at a time: the runtime batches every stream's frames into one call).

Compiled-model cache, per device, keyed like the TensorRT cache (runtime/engines/trt_cache.py): under
``<cache dir>/openvino/<device>/`` each compiled model is ``<graph>.<precision>.<digest16>.blob`` (OpenVINO's
``export_model`` bytes) with its record ``.json`` (the key's fields: CPU name and capabilities, OpenVINO version,
graph sha256, precision, the compile properties; and the blob's sha256). A record whose key differs, a blob that
is missing, does not match its sha256 or that OpenVINO refuses to import is rebuilt, and the reason is logged.

Example:
    >>> g = OvGraph(Path("bundle/image_encoder.onnx"), precision="bf16", cache_dir=Path("bundle/engines"))
    >>> g.run(images=x)["features"].shape
    (8, 512)
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.reader import sha256_of

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'clip-fsar[openvino]'  (or: pip install openvino)"
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
_HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}  # the inference precision per variant
RECORD_FORMAT = 1


class OpenVinoUnavailableError(ClipFsarError):
    """OpenVINO is not installed, or has no such device here."""


class OvCompileError(ClipFsarError):
    """OpenVINO cannot read or compile a graph (an op or precision it has no kernel for)."""


def import_openvino():
    """The ``openvino`` module, or OpenVinoUnavailableError naming the install command."""
    try:
        import openvino
    except ImportError as e:
        raise OpenVinoUnavailableError(f"backend 'openvino' needs OpenVINO, which is not installed here ({e}); "
                                       f"install it with: {INSTALL_HINT}") from None
    return openvino


_CORE = None
_CORE_LOCK = threading.Lock()


def core():
    """One ``openvino.Core`` per process (it holds the plugins)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = import_openvino().Core()
        return _CORE


def openvino_usable(device: str = "CPU") -> Tuple[bool, str]:
    """(True, "") where OpenVINO is installed and has ``device``, else (False, why)."""
    try:
        c = core()
    except OpenVinoUnavailableError as e:
        return False, str(e)
    if device not in c.available_devices:
        return False, f"OpenVINO has no {device} device here (it has {', '.join(c.available_devices) or 'none'})"
    return True, ""


def has_bf16(device: str = "CPU") -> bool:
    """Whether ``device`` computes in bf16 natively (OpenVINO's OPTIMIZATION_CAPABILITIES lists BF16)."""
    ok, _ = openvino_usable(device)
    return ok and "BF16" in core().get_property(device, "OPTIMIZATION_CAPABILITIES")


def device_facts(device: str = "CPU") -> Dict[str, str]:
    """What makes a compiled model portable or not: device, its full name and capabilities, OpenVINO's version."""
    c, ov = core(), import_openvino()
    return {"device": device, "device_name": str(c.get_property(device, "FULL_DEVICE_NAME")),
            "capabilities": ",".join(sorted(c.get_property(device, "OPTIMIZATION_CAPABILITIES"))),
            "machine": platform.machine(), "openvino_version": ov.__version__}


def compile_config(precision: str, threads: int) -> Dict[str, str]:
    """OpenVINO compile properties for a variant: its inference precision, one stream, latency hint, threads."""
    cfg = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = str(int(threads))
    return cfg


def cache_key(facts: Dict[str, str], graph_sha256: str, precision: str, config: Dict[str, str]) -> Dict[str, Any]:
    """The cache key of one compiled model (JSON fields; its digest names the file)."""
    return {**facts, "graph_sha256": graph_sha256, "precision": precision, "config": dict(sorted(config.items()))}


def key_digest(key: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lookup(folder: Path, graph: str, key: Dict[str, Any]) -> Tuple[str, Optional[bytes]]:
    """(reason, blob) of the cached compiled model for ``key``; blob None means build (the reason says why).

    Never raises for a bad cache: an unreadable record, a key that differs (which fields), a missing blob or one
    that does not match its recorded sha256 all mean "build".
    """
    stem = f"{graph}.{key['precision']}.{key_digest(key)[:16]}"
    blob_path, record_path = folder / f"{stem}.blob", folder / f"{stem}.json"
    if not record_path.is_file():
        return f"no cached {key['precision']} model for {graph} in {folder}", None
    try:
        record = json.loads(record_path.read_text())
        recorded = record["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"the record {record_path.name} is unreadable", None
    diffs = [f"{k} {recorded.get(k)!r} (here {v!r})" for k, v in key.items() if recorded.get(k) != v]
    if diffs:
        return f"the cached model {stem} was compiled for another setup: {'; '.join(diffs)}", None
    try:
        blob = blob_path.read_bytes()
    except OSError:
        return f"the compiled model {blob_path.name} is missing", None
    if hashlib.sha256(blob).hexdigest() != record.get("blob_sha256"):
        return f"the compiled model {blob_path.name} does not match its recorded sha256 (corrupt or changed)", None
    return f"cached compiled model {stem}", blob


def store(folder: Path, graph: str, key: Dict[str, Any], blob: bytes) -> Path:
    """Write a compiled model and its record atomically (the blob first, then the record vouching for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{graph}.{key['precision']}.{key_digest(key)[:16]}"
    with staged_file(folder / f"{stem}.blob") as tmp:
        tmp.write_bytes(blob)
    record = {"format": RECORD_FORMAT, "graph": graph, "key": key, "blob_sha256": hashlib.sha256(blob).hexdigest(),
              "blob_bytes": len(blob)}
    with staged_file(folder / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return folder / f"{stem}.blob"


class OvGraph:
    """One graph compiled by OpenVINO; the interface of ``OnnxGraph`` (``run(**inputs) -> dict``, ``backend``,
    ``providers``, ``input_names``, ``output_names``) plus ``served_precision``.

    Args:
        path: the ONNX graph (of the variant to run; the fp32 graph for ``bf16``).
        precision: ``fp32``, ``fp16``, ``int8`` or ``bf16`` (bf16 needs a CPU with BF16).
        cache_dir: the cache folder (compiled models go under ``<cache_dir>/openvino/<device>/``); None: compile
            every time.
        threads: ``INFERENCE_NUM_THREADS`` (0 = OpenVINO's default).
        graph_sha256: the graph's sha256 from the manifest (else computed).
        name: the graph's name in cache file names (default: the file name up to its first dot).
        names: the graph's input and output names (the manifest's), chosen among a port's tensor names.
    Raises:
        OpenVinoUnavailableError: OpenVINO missing or no such device. OvCompileError: OpenVINO cannot compile
        this graph (``create_graph`` then falls back to fp32, logging why). ClipFsarError: an unknown precision,
        or bf16 on a device without BF16.
    """

    def __init__(self, path: Path, precision: str = "fp32", cache_dir: Optional[Path] = None, threads: int = 0,
                 graph_sha256: Optional[str] = None, name: Optional[str] = None, device: str = "CPU",
                 names: Sequence[str] = ()):
        if precision not in PRECISIONS:
            raise ClipFsarError(f"OpenVINO: unknown precision '{precision}' (one of {', '.join(PRECISIONS)})")
        ok, why = openvino_usable(device)
        if not ok:
            raise OpenVinoUnavailableError(why)
        if precision == "bf16" and not has_bf16(device):
            raise ClipFsarError(f"OpenVINO's {device} here has no BF16 ({device_facts(device)['device_name']}); "
                                f"use --precision fp32 or int8")
        self.path, self.device, self.served_precision = Path(path), device, precision
        self.name = name or self.path.name.split(".", 1)[0]
        config = compile_config(precision, threads)
        c = core()
        self.compiled, self.cache_note = None, "not cached (no cache folder)"
        key = folder = None
        if cache_dir is not None:
            folder = Path(cache_dir) / "openvino" / device
            key = cache_key(device_facts(device), graph_sha256 or sha256_of(self.path), precision, config)
            reason, blob = lookup(folder, self.name, key)
            if blob is not None:
                try:
                    self.compiled = c.import_model(io.BytesIO(blob), device, config)
                    self.cache_note = f"loaded {reason}"
                except Exception as e:  # a blob OpenVINO refuses (another build wrote it): compile again
                    reason = f"OpenVINO could not import the cached model ({type(e).__name__}: {e})"
            if self.compiled is None:
                log.info("%s %s: compiling with OpenVINO (%s)", self.name, precision, reason)
        if self.compiled is None:
            try:
                self.compiled = c.compile_model(c.read_model(str(self.path)), device, config)
            except Exception as e:  # an op or type OpenVINO's plugin has no kernel for
                raise OvCompileError(f"OpenVINO cannot compile {self.path.name} ({precision}) for {device}: "
                                     f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
                                     ) from None
            if folder is not None:
                try:
                    stream = io.BytesIO()
                    self.compiled.export_model(stream)
                    store(folder, self.name, key, stream.getvalue())
                    self.cache_note = f"compiled and cached in {folder}"
                except (OSError, RuntimeError, ClipFsarError) as e:  # read-only or full (DiskFullError): the cache
                    # is optional, the model compiled in memory runs; nothing half-written stays (staged_file)
                    log.warning("cannot cache the compiled %s in %s: %s", self.name, folder, e)
        # a port may carry several tensor names (an fp16 variant's input Cast adds one): the manifest's name wins
        self.input_names = [_port_name(i, names) for i in self.compiled.inputs]
        self.output_names = [_port_name(o, names) for o in self.compiled.outputs]
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()
        self.backend = "openvino"
        self.providers = [f"OpenVINO {device} ({device_facts(device)['device_name']})"]
        log.info("%s runs on OpenVINO %s (%s; %s)", self.path.name, device, precision, self.cache_note)

    def run(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Run the graph on named inputs; returns the named outputs (fp32 arrays, copies)."""
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ClipFsarError(f"{self.path.name}: missing inputs {sorted(missing)}")
        with self._lock:  # one infer request: calls from several threads take turns
            res = self._request.infer({i: np.ascontiguousarray(inputs[k]) for i, k in enumerate(self.input_names)})
            return {k: np.array(res[o]) for k, o in zip(self.output_names, self.compiled.outputs)}


def _port_name(port, wanted: Sequence[str]) -> str:
    """The port's tensor name that is in ``wanted``, else its shortest (the ONNX name before OpenVINO's aliases)."""
    names = sorted(port.get_names(), key=lambda n: (len(n), n))
    return next((n for n in names if n in wanted), names[0] if names else port.get_any_name())


def _spec_names(spec) -> Tuple[str, ...]:
    if spec is None:
        return ()
    return tuple(t["name"] if isinstance(t, dict) else t.name for t in list(spec.inputs) + list(spec.outputs))


def _fp32_graph(path: Path, spec) -> Optional[Path]:
    """The fp32 graph beside a variant (``<bundle>/variants/x.onnx`` -> ``<bundle>/<spec.file>``), or None."""
    path = Path(path)
    if spec is None or not getattr(spec, "file", None):
        return None
    root = path.parent.parent if path.parent.name == "variants" else path.parent
    fp32 = root / spec.file
    return fp32 if fp32.is_file() else None


def openvino_graph(path: Path, precision: str = "fp32", cache_dir: Optional[Path] = None, threads: int = 0,
                   graph_sha256: Optional[str] = None, name: Optional[str] = None, spec=None,
                   announce: bool = False) -> OvGraph:
    """An ``OvGraph`` of the variant, or of the fp32 graph when OpenVINO cannot compile the variant (logged).

    Args:
        spec: the graph's manifest entry (``GraphSpec``): where its fp32 file is, for the fallback.
        announce: log that ``auto`` chose OpenVINO (and why).
    Raises:
        OpenVinoUnavailableError: OpenVINO is not installed (the message names the install command).
        OvCompileError: OpenVINO cannot compile the fp32 graph either.
    """
    if announce:
        log.info("backend auto: OpenVINO on this x86 CPU (installed, no CUDA GPU)")
    try:
        return OvGraph(path, precision, cache_dir, threads, graph_sha256, name, names=_spec_names(spec))
    except OvCompileError as e:
        if precision == "fp32":
            raise
        fp32 = Path(path) if precision == "bf16" else _fp32_graph(path, spec)
        if fp32 is None:
            raise
        log.warning("%s; running %s in fp32 instead", e, name or Path(path).name)
        return OvGraph(fp32, "fp32", cache_dir, threads, graph_sha256 if precision == "bf16" else
                       getattr(spec, "sha256", None), name, names=_spec_names(spec))
