"""TensorRT optimisation profiles: the (min, opt, max) shape of every graph input, and the options behind them.

Pure Python, no TensorRT needed (tested on the CPU). ``clipfsar engine`` saves the options it built with as
``profile.json`` in the engine cache folder, so the runtime asks for the same profiles and finds those engines.

Example:
    >>> opts = ProfileOptions(max_batch=16)
    >>> profile_shapes([{"name": "images", "shape": ["batch", 3, 224, 224]}], opts)["images"]
    ((1, 3, 224, 224), (1, 3, 224, 224), (16, 3, 224, 224))
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import ConfigError

AXES = ("batch", "classes", "shots")  # the dynamic axes the exported graphs name (export/graphs.py IO)
PROFILE_FILE = "profile.json"

Shape = Tuple[int, ...]
ProfileShapes = Dict[str, Tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)


@dataclass(frozen=True)
class ProfileOptions:
    """min / opt / max of every dynamic axis (min is always 1). An ``opt_*`` left at None is the default
    (batch 1: one live stream; classes 5: a 5-way task; shots 1) capped at the axis' max. ``workspace_mb``: the
    TensorRT workspace limit engines were built with (None: the device's default, see
    ``trt_engine.default_workspace_mb``); saved with the profile so the runtime asks for the same engines.

    Raises:
        ConfigError: a value below 1, or an opt above its max (the message names the option).
    """
    max_batch: int = 16
    max_classes: int = 64
    max_shots: int = 8
    opt_batch: Optional[int] = None
    opt_classes: Optional[int] = None
    opt_shots: Optional[int] = None
    workspace_mb: Optional[int] = None

    def __post_init__(self) -> None:
        w = self.workspace_mb
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise ConfigError(f"--workspace-mb must be >= 1, got {w!r}")
        for axis, default in (("batch", 1), ("classes", 5), ("shots", 1)):
            mx, opt = getattr(self, f"max_{axis}"), getattr(self, f"opt_{axis}")
            if not isinstance(mx, int) or isinstance(mx, bool) or mx < 1:
                raise ConfigError(f"--max-{axis} must be an integer >= 1, got {mx!r}")
            if opt is None:
                object.__setattr__(self, f"opt_{axis}", min(default, mx))
            elif not isinstance(opt, int) or isinstance(opt, bool) or not 1 <= opt <= mx:
                raise ConfigError(f"--opt-{axis} must be between 1 and --max-{axis} ({mx}), got {opt!r}")

    def range(self, axis: str) -> Tuple[int, int, int]:
        """(min, opt, max) of one dynamic axis."""
        if axis not in AXES:
            raise ConfigError(f"unknown dynamic axis '{axis}' (known: {', '.join(AXES)})")
        return 1, getattr(self, f"opt_{axis}"), getattr(self, f"max_{axis}")

    def to_json(self) -> Dict[str, int]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any], where: str) -> "ProfileOptions":
        unknown = set(data) - {f.name for f in dataclasses.fields(ProfileOptions)}
        if unknown:
            raise ConfigError(f"{where}: unknown profile options {sorted(unknown)}")
        return ProfileOptions(**data)


def _spec_fields(spec: Any) -> Tuple[str, Sequence[Any]]:
    if isinstance(spec, Mapping):
        return spec["name"], spec["shape"]
    return spec.name, spec.shape


def profile_shapes(inputs: Sequence[Any], options: ProfileOptions) -> ProfileShapes:
    """The optimisation profile of a graph: (min, opt, max) shape of every input.

    Args:
        inputs: the graph's input specs from the manifest (``TensorSpec`` or ``{"name", "shape"}``), whose shapes
            hold ints for fixed axes and axis names (``batch``, ``classes``, ``shots``) for dynamic ones.
        options: the ranges of the dynamic axes.
    Returns:
        input name -> (min shape, opt shape, max shape).
    Raises:
        ConfigError: an axis name no option sets, or a fixed axis that is not a positive integer.
    """
    out: ProfileShapes = {}
    for spec in inputs:
        name, shape = _spec_fields(spec)
        lo, opt, hi = [], [], []
        for i, d in enumerate(shape):
            if isinstance(d, str):
                if d not in AXES:
                    raise ConfigError(f"graph input '{name}' axis {i} is dynamic ('{d}') but no profile option "
                                      f"sets it (dynamic axes: {', '.join(AXES)})")
                r = options.range(d)
            elif isinstance(d, int) and not isinstance(d, bool) and d > 0:
                r = (d, d, d)
            else:
                raise ConfigError(f"graph input '{name}' axis {i} has no usable size ({d!r})")
            lo.append(r[0]), opt.append(r[1]), hi.append(r[2])
        out[name] = (tuple(lo), tuple(opt), tuple(hi))
    return out


def shape_problem(name: str, shape: Shape, profile: Tuple[Shape, Shape, Shape]) -> Optional[str]:
    """Why ``shape`` cannot run in an engine built for ``profile`` (None if it can)."""
    lo, _, hi = profile
    if len(shape) != len(lo):
        return f"input '{name}' has {len(shape)} axes, the engine expects {len(lo)} ({'x'.join(map(str, hi))})"
    for i, (s, a, b) in enumerate(zip(shape, lo, hi)):
        if not a <= s <= b:
            return (f"input '{name}' shape {tuple(shape)} is outside the engine's profile (axis {i}: {s} not in "
                    f"[{a}, {b}]); rebuild with larger limits (clipfsar engine --max-batch/--max-classes/--max-shots)")
    return None


def batch_slices(n: int, max_batch: int) -> List[slice]:
    """Split ``n`` rows into runs of at most ``max_batch`` (a batch bigger than the profile runs in pieces)."""
    if n < 1 or max_batch < 1:
        raise ValueError(f"batch_slices: n={n}, max_batch={max_batch}")
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


def save_profile_options(cache_dir: Path, options: ProfileOptions) -> None:
    """Remember the options engines in ``cache_dir`` were built with (read back by :func:`load_profile_options`)."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with staged_file(Path(cache_dir) / PROFILE_FILE) as tmp:
        tmp.write_text(json.dumps(options.to_json(), indent=2) + "\n")


def load_profile_options(cache_dir: Optional[Path]) -> ProfileOptions:
    """The options saved in ``cache_dir`` by ``clipfsar engine``, else the defaults.

    Raises:
        ConfigError: the saved file is not valid JSON or holds invalid options.
    """
    path = Path(cache_dir) / PROFILE_FILE if cache_dir is not None else None
    if path is None or not path.is_file():
        return ProfileOptions()
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of profile options")
    return ProfileOptions.from_json(data, str(path))
