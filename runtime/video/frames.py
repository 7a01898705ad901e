"""What every source yields: frames with their times, gaps of a live source, and the source error."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError


class SourceError(ClipFsarError):
    """A source cannot be opened, or failed for good."""


@dataclass(frozen=True)
class Frame:
    """One frame: its index in the source, its time in seconds from the start, and the uint8 BGR image."""
    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True)
class Gap:
    """A live source dropped out between ``start`` and ``end`` (seconds) and came back."""
    start: float
    end: float
