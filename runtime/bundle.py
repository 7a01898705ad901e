"""The bundle format (owned here): ``manifest.json``, ONNX graphs and the prototype store, in one folder.

A bundle is written atomically (a temporary folder beside it, then a rename) and opened with every hash checked.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .atomic import staged_file, staged_folder
from .errors import BundleError
from .output_folder import check_output_folder
from .preprocess import PreprocessConfig

SCHEMA_VERSION = 2  # 2: graphs may list precision variants (fp16/int8); version 1 bundles still open (as fp32)
MANIFEST = "manifest.json"
GRAPH_NAMES = ("image_encoder", "text_encoder", "support_head", "query_head")
PROTOTYPES_FILE = "prototypes.safetensors"
PRECISIONS = ("fp32", "fp16", "int8")
VARIANTS_DIR = "variants"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class PrototypeStore:
    """Enrolled classes: names, text-modulated prototypes (N, T, D), text features (N, D), shots (N,).

    ``shots[i] == 0`` marks a zero-shot class (enrolled by name only): its prototype row is zeros and only its
    text feature is used (scored by the video-text branch, see runtime/calibration.py). ``support_features``
    (N, T, D), when present, holds each class's mean support frame features (the mean over its shots), so that
    ``clipfsar enroll --add`` can pool new shots with old ones exactly as enrolling all of them at once.
    """
    class_names: Tuple[str, ...]
    prototypes: np.ndarray
    text_features: np.ndarray
    shots: np.ndarray
    support_features: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if len(set(self.class_names)) != n:
            raise BundleError("prototype store: duplicate class names")
        if any(not str(c).strip() for c in self.class_names):
            raise BundleError("prototype store: a class name is empty")
        from .names import bad_name_characters
        for c in self.class_names:
            if bad_name_characters(c):
                raise BundleError(f"prototype store: class name {c!r} holds control characters "
                                  f"({bad_name_characters(c)})")
        if self.prototypes.ndim != 3 or self.prototypes.shape[0] != n:
            raise BundleError(f"prototype store: prototypes {self.prototypes.shape} do not match {n} classes")
        if self.text_features.shape != (n, self.prototypes.shape[2]) or self.shots.shape != (n,):
            raise BundleError("prototype store: text features or shots do not match the prototypes")
        if self.support_features is not None and self.support_features.shape != self.prototypes.shape:
            raise BundleError(f"prototype store: support features {self.support_features.shape} do not match "
                              f"the prototypes {self.prototypes.shape}")

    def save(self, path: Path) -> None:
        """Write as safetensors (no pickle), atomically."""
        from safetensors.numpy import save_file
        tensors = {"prototypes": np.ascontiguousarray(self.prototypes, np.float32),
                   "text_features": np.ascontiguousarray(self.text_features, np.float32),
                   "shots": np.ascontiguousarray(self.shots, np.int32)}
        if self.support_features is not None:
            tensors["support_features"] = np.ascontiguousarray(self.support_features, np.float32)
        with staged_file(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata={"class_names": json.dumps(list(self.class_names))})
            with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
                os.fsync(f.fileno())

    @staticmethod
    def load(path: Path) -> "PrototypeStore":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="numpy") as f:
                names = json.loads((f.metadata() or {})["class_names"])
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise BundleError(f"prototype store {path}: class_names must be a list of strings")
            for key in ("prototypes", "text_features", "support_features"):
                a = arrays.get(key)
                if a is not None and a.dtype != np.float32:
                    raise BundleError(f"prototype store {path}: {key} are {a.dtype}, expected float32")
                if a is not None and not np.isfinite(a).all():
                    raise BundleError(f"prototype store {path}: {key} hold NaN or infinite values")
            shots = arrays.get("shots")
            if shots is not None and (shots.dtype.kind not in "iu" or (shots < 0).any()):
                raise BundleError(f"prototype store {path}: shots must be non-negative integers ({shots.dtype})")
            return PrototypeStore(tuple(names), arrays["prototypes"], arrays["text_features"], arrays["shots"],
                                  arrays.get("support_features"))
        except BundleError as e:  # name the file in the store's own checks too
            message = str(e)
            if str(path) not in message:
                message = message.replace("prototype store", f"prototype store {path}", 1)
            raise BundleError(message) from None
        except Exception as e:  # a truncated or foreign file
            raise BundleError(f"prototype store {path} is unreadable: {e}") from e


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: List[Any]  # ints for fixed axes, strings for dynamic ones
    dtype: str


@dataclass(frozen=True)
class VariantSpec:
    """One lower-precision variant of a graph, with the same I/O contract as the fp32 graph (fp32 in and out).

    ``method`` says how it was made (e.g. ``float16-blocklist``, ``int8-dynamic``, ``int8-qdq-minmax``) and
    ``report`` holds its accuracy against fp32 (cosine, max abs difference, latency; see calib/report.py).
    """
    file: str
    sha256: str
    precision: str
    method: str = ""
    report: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphSpec:
    """One graph: the fp32 file at the top level, lower precisions in ``variants`` (precision -> VariantSpec)."""
    file: str
    sha256: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    precision: str = "fp32"
    variants: Dict[str, VariantSpec] = field(default_factory=dict)
    # ONNX external data of a graph over 2 GB: [{"file": "<graph>.onnx.data", "sha256": ...}], beside the graph
    data: List[Dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelFacts:
    """What the runtime needs to know about the model (preprocessing, T, D, prompt, fusion)."""
    arch: str
    embed_dim: int
    frames: int
    image_size: int
    resize_short: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    prompt: str
    otam_lambda: float
    beta: float
    vt_scale: float
    window_seconds: float
    context_length: int
    shot_pooling: str = "before"
    text_in_prototype: bool = True
    # the cosine in the graphs (train/otam.py): bundles made before these keys existed used eps 1e-8 per norm
    cos_eps: float = 1e-8
    cos_mode: str = "norms"

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(self.image_size, self.resize_short, tuple(self.mean), tuple(self.std))


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    package_version: str
    model: ModelFacts
    graphs: Dict[str, GraphSpec]
    prototypes: Dict[str, str]
    parity: Dict[str, Any] = field(default_factory=dict)
    precision_report: Dict[str, Any] = field(default_factory=dict)  # end-to-end report per precision (calib/)
    # optional (older bundles open without them): the runtime tokenizer file (runtime/tokenizer.py) and the
    # calibration of user-facing scores (runtime/calibration.py: temperature, zero-shot map, "unknown" threshold)
    tokenizer: Dict[str, Any] = field(default_factory=dict)
    calibration: Dict[str, Any] = field(default_factory=dict)
    class_map: Dict[str, str] = field(default_factory=dict)  # class folder -> class name (--class-names)

    def to_json(self) -> Dict[str, Any]:
        import dataclasses
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @staticmethod
    def from_json(data: Dict[str, Any], where: str) -> "Manifest":
        from .jsonconfig import from_dict
        if not isinstance(data, dict):
            raise BundleError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise BundleError(f"{where}: no integer schema_version")
        if version > SCHEMA_VERSION:
            raise BundleError(f"{where}: schema version {version} is newer than this runtime reads "
                              f"({SCHEMA_VERSION}); upgrade clip-fsar")
        try:
            graphs = {}
            for name, g in data["graphs"].items():
                g = dict(g)
                g["inputs"] = [TensorSpec(**t) for t in g["inputs"]]
                g["outputs"] = [TensorSpec(**t) for t in g["outputs"]]
                g["variants"] = {p: VariantSpec(**v) for p, v in g.get("variants", {}).items()}
                for p, v in g["variants"].items():
                    if p not in PRECISIONS[1:] or v.precision != p:
                        raise BundleError(f"{where}: graph '{name}' lists a variant '{p}' (precision "
                                          f"'{v.precision}'); variants are {', '.join(PRECISIONS[1:])}")
                graphs[name] = GraphSpec(**g)
            manifest = Manifest(version, data["package_version"],
                                from_dict(ModelFacts, data["model"], f"{where} [model]"),
                                graphs, dict(data["prototypes"]), dict(data.get("parity", {})),
                                precision_report=dict(data.get("precision_report", {})),
                                tokenizer=dict(data.get("tokenizer") or {}),
                                calibration=dict(data.get("calibration") or {}),
                                class_map=dict(data.get("class_map") or {}))
            _check_types(manifest, where)
            return manifest
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{where}: malformed manifest ({type(e).__name__}: {e})") from e


_SCALARS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _check_types(m: "Manifest", where: str) -> None:
    """Refuse a manifest whose values have the wrong JSON type or range (a tampered or foreign file)."""
    import dataclasses
    import math

    def bad(what: str) -> BundleError:
        return BundleError(f"{where}: {what}")

    for f in dataclasses.fields(ModelFacts):
        v = getattr(m.model, f.name)
        if f.type in _SCALARS:
            ok = isinstance(v, _SCALARS[f.type]) and (f.type == "bool" or not isinstance(v, bool))
        else:  # Tuple[float, float, float]
            ok = isinstance(v, (tuple, list)) and len(v) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        if not ok:
            raise bad(f"model.{f.name} must be {f.type}, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(f"model.{f.name} is not finite ({v})")
    for key in ("embed_dim", "frames", "image_size", "resize_short", "context_length"):
        if getattr(m.model, key) < 1:
            raise bad(f"model.{key} must be >= 1, got {getattr(m.model, key)}")
    if not m.model.window_seconds > 0 or any(not x > 0 or not math.isfinite(x) for x in m.model.std):
        raise bad("model.window_seconds and model.std must be > 0")
    if not isinstance(m.package_version, str):
        raise bad("package_version must be a string")
    for name, g in m.graphs.items():
        files = [(g.file, g.sha256)] + [(v.file, v.sha256) for v in g.variants.values()]
        files += [(d.get("file"), d.get("sha256")) if isinstance(d, dict) else (None, None) for d in g.data]
        if not all(isinstance(x, str) for pair in files for x in pair):
            raise bad(f"graph '{name}': file names and sha256 must be strings")
        for t in g.inputs + g.outputs:
            if not isinstance(t.name, str) or not isinstance(t.dtype, str) or not isinstance(t.shape, list):
                raise bad(f"graph '{name}': malformed input/output {t}")
    for key, entry in (("prototypes", m.prototypes), ("tokenizer", m.tokenizer)):
        if (entry or key == "prototypes") and not (isinstance(entry.get("file"), str)
                                                   and isinstance(entry.get("sha256"), str)):
            raise bad(f"{key} needs a string file and sha256")


def _inside(root: Path, rel: str, what: str) -> Path:
    """``root / rel``, refusing absolute paths and paths that leave the bundle."""
    if not isinstance(rel, str):
        raise BundleError(f"bundle {root}: {what} path must be a string, got {rel!r}")
    if not rel or "\0" in rel or os.path.isabs(rel) or Path(rel).drive:
        raise BundleError(f"bundle {root}: {what} path '{rel}' must be relative to the bundle")
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"bundle {root}: {what} path '{rel}' points outside the bundle")
    return path


@dataclass(frozen=True)
class Bundle:
    """An opened, validated bundle.

    Example:
        >>> b = Bundle.open("bundle/")
        >>> b.graph_path("image_encoder"), b.store.class_names
    """
    root: Path
    manifest: Manifest
    store: PrototypeStore

    @staticmethod
    def open(root: Path, check_hashes: bool = True) -> "Bundle":
        """Open ``root``: read the manifest, check every file exists inside the bundle and matches its hash.

        Raises:
            BundleError: missing folder or file, wrong hash, newer schema, path outside the bundle.
        """
        root = Path(root)
        if not root.is_dir():
            raise BundleError(f"bundle {root} is not a folder (a bundle is the folder `clipfsar export` writes)"
                              if root.exists() else f"bundle folder not found: {root}")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise BundleError(f"bundle {root} has no {MANIFEST}")
        try:
            data = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"bundle {root}: {MANIFEST} is not valid JSON: {e}") from e
        manifest = Manifest.from_json(data, str(mpath))
        missing = [g for g in GRAPH_NAMES if g not in manifest.graphs]
        if missing:
            raise BundleError(f"bundle {root}: manifest lacks graphs {', '.join(missing)}")
        entries = [(f"graph '{n}'", g.file, g.sha256) for n, g in manifest.graphs.items()]
        entries += [(f"graph '{n}' ({p})", v.file, v.sha256)
                    for n, g in manifest.graphs.items() for p, v in g.variants.items()]
        entries += [(f"graph '{n}' external data", d.get("file", ""), d.get("sha256", ""))
                    for n, g in manifest.graphs.items() for d in g.data]
        entries.append(("prototype store", manifest.prototypes.get("file", ""), manifest.prototypes.get("sha256", "")))
        if manifest.tokenizer:
            entries.append(("tokenizer", manifest.tokenizer.get("file", ""), manifest.tokenizer.get("sha256", "")))
        for what, rel, digest in entries:
            path = _inside(root, rel, what)
            if not path.is_file():
                raise BundleError(f"bundle {root}: {what} file {rel} is missing")
            if check_hashes and sha256_of(path) != digest:
                raise BundleError(f"bundle {root}: {what} file {rel} does not match its sha256 (corrupt or changed)")
        store = PrototypeStore.load(root / manifest.prototypes["file"])
        if store.prototypes.shape[1:] != (manifest.model.frames, manifest.model.embed_dim):
            raise BundleError(f"bundle {root}: prototypes {store.prototypes.shape} do not match T="
                              f"{manifest.model.frames}, D={manifest.model.embed_dim}")
        return Bundle(root, manifest, store)

    def precisions(self, name: str) -> Tuple[str, ...]:
        """The precisions graph ``name`` exists in, always starting with ``fp32`` (e.g. ``('fp32', 'int8')``)."""
        variants = self._spec(name).variants
        return tuple(p for p in PRECISIONS if p == "fp32" or p in variants)

    def graph_path(self, name: str, precision: str = "fp32") -> Path:
        """The file of graph ``name`` at ``precision`` (``fp32``, ``fp16`` or ``int8``).

        Raises:
            BundleError: no such graph, or the bundle has no such variant of it (the message lists those it has).
        """
        spec = self._spec(name)
        if precision == "fp32":
            return _inside(self.root, spec.file, f"graph '{name}'")
        if precision not in spec.variants:
            raise BundleError(f"bundle {self.root}: graph '{name}' has no {precision} variant; it has "
                              f"{', '.join(self.precisions(name))} (add one with `clipfsar calibrate`)")
        return _inside(self.root, spec.variants[precision].file, f"graph '{name}' ({precision})")

    def graph_sha256(self, name: str, precision: str = "fp32") -> str:
        """The manifest's sha256 of graph ``name`` at ``precision`` (the engine-cache key uses it)."""
        self.graph_path(name, precision)  # raises for a missing variant
        spec = self._spec(name)
        return spec.sha256 if precision == "fp32" else spec.variants[precision].sha256

    def _spec(self, name: str) -> GraphSpec:
        if name not in self.manifest.graphs:
            raise BundleError(f"bundle {self.root} has no graph '{name}' (it has {', '.join(self.manifest.graphs)})")
        return self.manifest.graphs[name]


def write_bundle(out: Path, manifest: Dict[str, Any], files: Dict[str, Path], store: PrototypeStore,
                 force: bool = False) -> Bundle:
    """Write a bundle to ``out``: copy ``files`` (bundle-relative name -> source path) and the store, fill in
    hashes, write the manifest, then move the folder into place in one rename.

    ``manifest`` holds everything but hashes; ``manifest['graphs'][name]['file']`` names a key of ``files``.
    Refuses an existing ``out`` unless ``force``, and always a non-empty folder that is not a bundle (ClipFsarError);
    an existing bundle is replaced only once the new one is complete.
    """
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"output {out} exists; pass --force to replace it")
    check_output_folder(out, force, [], "bundle", lambda p: (p / MANIFEST).is_file())  # never a non-bundle folder
    with staged_folder(out) as tmp:
        for rel, src in files.items():
            dst = _inside(tmp, rel, "file")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        store.save(tmp / PROTOTYPES_FILE)
        manifest = json.loads(json.dumps(manifest))
        for g in manifest["graphs"].values():
            g["sha256"] = sha256_of(tmp / g["file"])
            for d in g.get("data", []):
                d["sha256"] = sha256_of(_inside(tmp, d["file"], "external data"))
        manifest["prototypes"] = {"file": PROTOTYPES_FILE, "sha256": sha256_of(tmp / PROTOTYPES_FILE)}
        if manifest.get("tokenizer"):
            manifest["tokenizer"]["sha256"] = sha256_of(_inside(tmp, manifest["tokenizer"]["file"], "tokenizer"))
        manifest["schema_version"] = SCHEMA_VERSION
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        Bundle.open(tmp)  # validate what was written before it becomes visible
    return Bundle.open(out)


@dataclass(frozen=True)
class NewVariant:
    """A variant to add to a bundle: the ONNX file made by calib/, how it was made, and its report."""
    source: Path
    method: str = ""
    report: Dict[str, Any] = field(default_factory=dict)


def add_variants(root: Path, variants: Dict[str, Dict[str, NewVariant]],
                 precision_report: Dict[str, Any] = None) -> Bundle:
    """Add (or replace) precision variants of an existing bundle's graphs, atomically.

    Each file is copied into ``variants/`` under a name that carries its hash (so no file the current manifest
    lists is ever overwritten), then the manifest is rewritten through a staged file and renamed into place last:
    a process killed mid-way leaves the bundle as it was and valid. Files no longer listed are removed afterwards.
    Keys of the manifest this function does not know are kept as they are.

    Args:
        root: the bundle folder.
        variants: graph name -> precision (``fp16``/``int8``) -> NewVariant.
        precision_report: the end-to-end report (calib/report.py); replaces the manifest's when given.
    Returns:
        The reopened, validated bundle.
    Raises:
        BundleError: the bundle is invalid, a graph or precision is unknown, or a source file is missing.
    Example:
        >>> add_variants("bundle/", {"image_encoder": {"int8": NewVariant(Path("enc.int8.onnx"), "int8-dynamic")}})
    """
    root = Path(root)
    with bundle_lock(root):  # one writer at a time (enrolment, calibration, variants)
        return _add_variants_locked(root, variants, precision_report)


def _add_variants_locked(root: Path, variants: Dict[str, Dict[str, NewVariant]],
                         precision_report: Optional[Dict[str, Any]]) -> Bundle:
    Bundle.open(root)  # refuse to add to an invalid bundle
    data = json.loads((root / MANIFEST).read_text())
    for name, by_precision in variants.items():
        if name not in data["graphs"]:
            raise BundleError(f"bundle {root} has no graph '{name}' (it has {', '.join(data['graphs'])})")
        for precision, new in by_precision.items():
            if precision not in PRECISIONS[1:]:
                raise BundleError(f"unknown variant precision '{precision}' for graph '{name}'; "
                                  f"choose {', '.join(PRECISIONS[1:])}")
            if not Path(new.source).is_file():
                raise BundleError(f"variant file {new.source} ({name}, {precision}) not found")
    (root / VARIANTS_DIR).mkdir(exist_ok=True)
    for name, by_precision in variants.items():
        entry = data["graphs"][name].setdefault("variants", {})
        for precision, new in by_precision.items():
            digest = sha256_of(Path(new.source))
            rel = f"{VARIANTS_DIR}/{name}.{precision}.{digest[:12]}.onnx"
            if not (root / rel).is_file() or sha256_of(root / rel) != digest:
                with staged_file(root / rel) as tmp:
                    shutil.copyfile(new.source, tmp)
            entry[precision] = {"file": rel, "sha256": digest, "precision": precision, "method": new.method,
                                "report": json.loads(json.dumps(new.report))}
    if precision_report is not None:
        data["precision_report"] = json.loads(json.dumps(precision_report))
    data["schema_version"] = max(int(data["schema_version"]), SCHEMA_VERSION)
    _write_manifest(root, data)  # checked, staged, fsynced, renamed: the last step
    _remove_unlisted_variants(root, data)
    return Bundle.open(root)


def _remove_unlisted_variants(root: Path, data: Dict[str, Any]) -> None:
    """Delete files in ``variants/`` that the manifest no longer lists (replaced variants, leftovers of a kill)."""
    listed = {v["file"] for g in data["graphs"].values() for v in g.get("variants", {}).values()}
    for path in (root / VARIANTS_DIR).iterdir():
        rel = f"{VARIANTS_DIR}/{path.name}"
        if path.is_file() and rel not in listed and not path.name.startswith("."):
            path.unlink()


# ----- in-place writes of an existing bundle: the prototype store and optional manifest entries -------------------
LOCK_FILE = ".lock"
STORE_PREFIX = "prototypes"


@contextlib.contextmanager
def bundle_lock(root: Path, timeout: float = 30.0) -> Iterator[None]:
    """Hold the bundle's writer lock (an advisory ``flock`` on ``ROOT/.lock``): a second writer waits for it.

    Args:
        root: the bundle folder. timeout: seconds to wait before giving up.
    Raises:
        BundleError: the bundle is read-only, or another process held the lock longer than ``timeout`` (named by pid).
    Example:
        >>> with bundle_lock(Path("bundle")):
        ...     pass  # read, change and rewrite the store here
    """
    root = Path(root)
    path = root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise BundleError(f"bundle {root} is read-only or not writable ({e.strerror}); copy it somewhere "
                          f"writable to change its classes") from e
    try:
        _acquire(fd, root, timeout)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _acquire(fd: int, root: Path, timeout: float) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: a byte-range lock on the lock file
        import msvcrt
        lock = lambda: msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # noqa: E731
    else:
        lock = lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # noqa: E731
    deadline = time.monotonic() + timeout
    while True:
        try:
            lock()
            return
        except OSError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise BundleError(f"bundle {root} is being changed by another process (pid {holder}) for more "
                                  f"than {timeout:g} s; try again when it has finished") from None
            time.sleep(0.05)


def _write_manifest(root: Path, data: Dict[str, Any]) -> None:
    Manifest.from_json(data, f"{root / MANIFEST} (new)")  # never write a manifest this runtime cannot read
    with staged_file(root / MANIFEST) as tmp:
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())


def replace_store(root: Path, change: Callable[[PrototypeStore], PrototypeStore], timeout: float = 30.0) -> Bundle:
    """Change a bundle's prototype store atomically, under the writer lock.

    Inside the lock the bundle is reopened (so ``change`` sees the store as it is now, with what any other writer
    just added), ``change(store)`` gives the new store, which is written to a new file named by its hash; then the
    manifest is rewritten through a staged file and renamed into place; the old store file is removed last. A
    process killed at any point leaves a bundle that opens, with the old store or the new one. A classifier that
    already loaded the bundle keeps the store it has in memory; ``Bundle.open`` afterwards sees the new one.

    Args:
        root: the bundle folder. change: old store -> new store (may raise to abort; nothing is written then).
    Returns:
        The reopened bundle.
    Raises:
        BundleError: invalid bundle, read-only bundle, lock not obtained; whatever ``change`` raises.
    """
    root = Path(root)
    with bundle_lock(root, timeout):
        # the graphs are not rewritten here: hash only the store (a full check reads every graph, ~0.6 GB for ViT-B)
        bundle = Bundle.open(root, check_hashes=False)
        if sha256_of(root / bundle.manifest.prototypes["file"]) != bundle.manifest.prototypes["sha256"]:
            raise BundleError(f"bundle {root}: prototype store does not match its sha256 (corrupt or changed)")
        store = change(bundle.store)
        if store.prototypes.shape[1:] != bundle.store.prototypes.shape[1:]:
            raise BundleError(f"bundle {root}: new prototypes {store.prototypes.shape} do not match the bundle's")
        for stale in root.glob(f".*{STORE_PREFIX}*"):  # temporaries of a writer that was killed (we hold the lock)
            stale.unlink()
        tmp = root / f".{STORE_PREFIX}.new.safetensors"
        try:
            store.save(tmp)
            digest = sha256_of(tmp)
            rel = f"{STORE_PREFIX}.{digest[:16]}.safetensors"
            os.replace(tmp, root / rel)
        except PermissionError as e:
            raise BundleError(f"bundle {root} is read-only ({e.strerror}); nothing was changed") from e
        data = json.loads((root / MANIFEST).read_text())
        data["prototypes"] = {"file": rel, "sha256": digest}
        _write_manifest(root, data)
        for path in root.glob(f"{STORE_PREFIX}*.safetensors"):  # the old store, and any a killed writer left
            if path.name != rel:
                path.unlink(missing_ok=True)
        return Bundle.open(root, check_hashes=False)


def update_manifest(root: Path, key: str, value: Dict[str, Any], timeout: float = 30.0) -> Bundle:
    """Set an optional top-level manifest entry (``calibration`` or ``tokenizer``) atomically, under the lock.

    Raises:
        BundleError: unknown key, invalid or read-only bundle, lock not obtained.
    """
    if key not in ("calibration", "tokenizer"):
        raise BundleError(f"update_manifest: '{key}' is not an optional manifest entry")
    root = Path(root)
    with bundle_lock(root, timeout):
        Bundle.open(root)
        data = json.loads((root / MANIFEST).read_text())
        data[key] = json.loads(json.dumps(value))
        try:
            _write_manifest(root, data)
        except PermissionError as e:
            raise BundleError(f"bundle {root} is read-only ({e.strerror}); nothing was changed") from e
        return Bundle.open(root)
