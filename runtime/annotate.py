"""Drawing a decision on a frame: the label, a score bar and the frame rate."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from .classifier import UNKNOWN, Decision


def annotate(image: np.ndarray, decision: Optional[Decision], fps: Optional[float] = None) -> np.ndarray:
    """A copy of ``image`` with the label, a score bar and ``fps`` drawn in its top-left corner."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(w, h) / 640)
    thick = max(1, int(round(scale * 2)))
    bar_w, bar_h = int(w * 0.4), max(4, int(h * 0.025))
    label = "waiting for a full window" if decision is None else f"{decision.label} {decision.score:.2f}"
    colour = (200, 200, 200) if decision is None or decision.label == UNKNOWN else (60, 220, 60)
    cv2.rectangle(out, (0, 0), (w, int(40 * scale) + bar_h + 8), (0, 0, 0), -1)
    cv2.putText(out, label, (6, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, colour, thick, cv2.LINE_AA)
    y = int(32 * scale)
    cv2.rectangle(out, (6, y), (6 + bar_w, y + bar_h), (90, 90, 90), 1)
    if decision is not None:
        cv2.rectangle(out, (6, y), (6 + int(bar_w * decision.score), y + bar_h), colour, -1)
    if fps is not None:
        text = f"{fps:.1f} fps"
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thick)
        cv2.putText(out, text, (w - tw - 6, int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out
