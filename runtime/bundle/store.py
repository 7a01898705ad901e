"""The prototype store: enrolled class names, prototypes, text features and shot counts, as safetensors.

Part of the bundle format (runtime/bundle/reader.py opens it; runtime/bundle/edit.py rewrites it under the lock).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import BundleError


@dataclass(frozen=True)
class PrototypeStore:
    """Enrolled classes: names, text-modulated prototypes (N, T, D), text features (N, D), shots (N,).

    ``shots[i] == 0`` marks a zero-shot class (enrolled by name only): its prototype row is zeros and only its
    text feature is used (scored by the video-text branch, see runtime/teaching/calibration.py). ``support_features``
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
        from clipfsar.runtime.bundle.names import bad_name_characters
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
        with staged_file(Path(path), fsync=True) as tmp:  # on disk before the rename makes it visible
            save_file(tensors, str(tmp), metadata={"class_names": json.dumps(list(self.class_names))})

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
