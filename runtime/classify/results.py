"""What the classifier returns: small frozen dataclasses (``ClipResult``, ``Decision``) and ``StreamStats``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClipResult:
    """The class of one clip: ``label`` (or ``unknown``), its ``score``, and every class's score.

    ``scores`` are the calibrated probabilities when the bundle has a calibration (see runtime/teaching/calibration.py);
    ``fused`` are the paper's fused probabilities ``p_vt^beta * softmax((T - D) / T)^(1 - beta)``.
    ``known`` is the open-set score in (0, 1) that "unknown" thresholds when the bundle has an open-set cohort
    (runtime/teaching/cohort.py), else None (then the threshold applies to ``score``).
    """
    label: str
    score: float
    scores: Tuple[float, ...]
    fused: Tuple[float, ...] = ()
    known: Optional[float] = None


@dataclass(frozen=True)
class Decision:
    """One streaming decision over a window of frames.

    Attributes:
        label: the top class, or ``unknown`` when the smoothed open-set score (``known``; without a cohort,
            ``score``) is below the threshold.
        score: the smoothed score of the top class.
        scores: every class's smoothed score, in ``Classifier.class_names`` order.
        t_start, t_end: times (seconds) of the window's first and last sampled frames.
        frame: index of the window's last sampled frame in the source.
        source: the source's name.
        repeated_frames: the source (a file or folder) ended before T frames were sampled; this one decision
            covers the whole clip with frames repeated TSN-style, as in training.
        known: the smoothed open-set score in (0, 1) (runtime/teaching/cohort.py), None when the bundle has no cohort.
    """
    label: str
    score: float
    scores: Tuple[float, ...]
    t_start: float
    t_end: float
    frame: int
    source: str = ""
    repeated_frames: bool = False
    known: Optional[float] = None


@dataclass
class StreamStats:
    """Counters and per-stage seconds, for benchmarks and for checking that each sampled frame is encoded once."""
    frames_read: int = 0
    frames_sampled: int = 0
    encoder_calls: int = 0
    encoder_images: int = 0
    head_calls: int = 0
    decisions: int = 0
    gaps: int = 0
    seconds: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("decode", "preprocess", "encoder", "head", "post"), 0.0))
    precisions: Dict[str, str] = field(default_factory=dict)  # graph -> the variant it really runs
