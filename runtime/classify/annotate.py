"""Drawing decisions on frames (label, score bar, frame rate), and writing or showing the annotated stream."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError, VideoError
from clipfsar.runtime.classify.classifier import UNKNOWN, Decision
from clipfsar.runtime.video.clips import fourcc_for


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


def check_can_show() -> None:
    """Raise ``ClipFsarError`` when ``--show`` cannot open a window here: OpenCV built without a GUI, or a Linux
    machine with no display (no ``DISPLAY``/``WAYLAND_DISPLAY``; Qt would abort the process). Checked before
    streaming. ``QT_QPA_PLATFORM`` set (e.g. ``offscreen``) is trusted."""
    gui = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                if line.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        raise ClipFsarError("--show: this OpenCV has no GUI support (a headless build); use --save FILE instead")
    if (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
        raise ClipFsarError("--show needs a display, and DISPLAY is not set (a headless machine, or ssh without "
                            "-X); use --save FILE instead")


def check_save_path(save: Path, source: str) -> None:
    """Raise ``ClipFsarError`` when ``--save`` would overwrite the ``--source`` being read (the same file)."""
    if source.lower().startswith("file://"):  # file:///data/a.mp4 is the file /data/a.mp4
        from clipfsar.runtime.video.sources import file_url_path
        with contextlib.suppress(ClipFsarError):
            source = file_url_path(source)
    src = Path(source)
    if src.exists() and Path(save).exists() and os.path.samefile(src, save):
        raise ClipFsarError(f"--save {save} is the --source being read; choose another output file")
    if Path(save).is_dir():
        raise ClipFsarError(f"--save {save} is a folder; give a video file name (.mp4, .avi)")


class AnnotatedSink:
    """Writes annotated frames to a video file (opened at the first frame) and/or shows them in a window."""

    def __init__(self, save: Optional[Path], show: bool, fps: float):
        self.save, self.show, self.fps = save, show, fps
        self.writer = None
        self.frames = 0
        self.t_last, self.rate = time.perf_counter(), None

    def __call__(self, frame, decision) -> None:
        now = time.perf_counter()
        inst = 1.0 / max(now - self.t_last, 1e-6)
        self.rate = inst if self.rate is None else 0.9 * self.rate + 0.1 * inst
        self.t_last = now
        img = annotate(frame.image, decision, self.rate)
        if self.save is not None:
            if self.writer is None:
                h, w = img.shape[:2]
                self.writer = cv2.VideoWriter(str(self.save), cv2.VideoWriter_fourcc(*fourcc_for(self.save)),
                                              self.fps, (w, h))
                if not self.writer.isOpened():
                    raise VideoError(f"cannot write video {self.save}")
            self.writer.write(img)
            self.frames += 1
        if self.show:
            cv2.imshow("clip-fsar", img)
            if cv2.waitKey(1) & 0xFF == ord("q"):
                raise KeyboardInterrupt

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.show:
            cv2.destroyAllWindows()
