"""The bundle manifest's schema: ``manifest.json`` as typed records, read with every value's type and range checked.

Part of the bundle format owned by runtime/bundle/reader.py (which re-exports every name here); nothing else writes or
reads a manifest directly.

Example:
    >>> m = Manifest.from_json(json.load(open("bundle/manifest.json")), "bundle/manifest.json")
    >>> m.model.frames, sorted(m.graphs)
    (8, ['image_encoder', 'query_head', 'support_head', 'text_encoder'])
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.video.preprocess import PreprocessConfig

SCHEMA_VERSION = 2  # 2: graphs may list precision variants (fp16/int8); version 1 bundles still open (as fp32)
PRECISIONS = ("fp32", "fp16", "int8")


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
    # optional (older bundles open without them): the runtime tokenizer file (runtime/teaching/tokenizer.py) and the
    # calibration of user-facing scores (teaching/calibration.py: temperature, zero-shot map, "unknown" threshold)
    tokenizer: Dict[str, Any] = field(default_factory=dict)
    calibration: Dict[str, Any] = field(default_factory=dict)
    class_map: Dict[str, str] = field(default_factory=dict)  # class folder -> class name (--class-names)
    # optional: frame features of clips of actions that are not enrolled, for the open-set score (teaching/cohort.py)
    cohort: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        import dataclasses
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @staticmethod
    def from_json(data: Dict[str, Any], where: str) -> "Manifest":
        from clipfsar.runtime.base.jsonconfig import from_dict
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
