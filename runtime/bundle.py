"""The bundle format (owned here): ``manifest.json``, ONNX graphs and the prototype store, in one folder.

A bundle is written atomically (a temporary folder beside it, then a rename) and opened with every hash checked.
The prototype store is in runtime/store.py; changes to an existing bundle (variants, store, optional manifest
entries, the writer lock) are in runtime/bundle_edit.py and re-exported here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .atomic import staged_folder
from .errors import BundleError
from .output_folder import check_output_folder
from .preprocess import PreprocessConfig
from .store import PrototypeStore

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
    # optional: frame features of clips of actions that are not enrolled, for the open-set score (runtime/cohort.py)
    cohort: Dict[str, Any] = field(default_factory=dict)

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
                                class_map=dict(data.get("class_map") or {}),
                                cohort=dict(data.get("cohort") or {}))
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
    for key, entry in (("prototypes", m.prototypes), ("tokenizer", m.tokenizer), ("cohort", m.cohort)):
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
        if manifest.cohort:
            entries.append(("open-set cohort", manifest.cohort.get("file", ""), manifest.cohort.get("sha256", "")))
        for what, rel, digest in entries:
            path = _inside(root, rel, what)
            if not path.is_file():
                raise BundleError(f"bundle {root}: {what} file {rel} is missing")
            try:
                changed = check_hashes and sha256_of(path) != digest
            except OSError as e:  # e.g. a file another user wrote with mode 0600
                raise BundleError(f"bundle {root}: {what} file {rel} cannot be read ({e.strerror})") from None
            if changed:
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


_EDITS = ("NewVariant", "add_variants", "bundle_lock", "replace_store", "update_manifest", "set_cohort")


def __getattr__(name: str):
    """``from clipfsar.runtime.bundle import replace_store`` etc. keep working (they live in bundle_edit.py)."""
    if name in _EDITS:
        from . import bundle_edit
        return getattr(bundle_edit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
