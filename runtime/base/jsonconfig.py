"""JSON configs mapped 1:1 onto dataclasses; unknown keys are rejected with a "did you mean"."""
from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any, Dict, Type, TypeVar

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: Type[T], data: Dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys.

    Example:
        >>> from_dict(MyConfig, {"lr": 1e-5})
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}")
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(value) if isinstance(fields[key].default, tuple) else value
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Dict[str, Any]:
    """The JSON-ready dict of a dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename (never half-written)."""
    with staged_file(Path(path), fsync=True) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file, with a clear error naming ``what`` it is when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))  # a byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid JSON: {e}") from e
