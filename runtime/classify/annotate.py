"""Drawing decisions on frames (label, score bar, frame rate), and writing or showing the annotated stream.

The ``--save`` video is written to a staged file beside its name and renamed into place only once it is complete
and checked (runtime/base/atomic.py): a run stopped by Ctrl-C, SIGTERM or SIGHUP finalizes it (runtime/cli/run.py);
a full disk fails the run with "no space left on device while writing X; nothing was changed" and leaves what was
at X as it was. Frames whose size changes mid-stream are letterboxed to the first frame's size (a video has one
size); gray, 16-bit and BGRA frames are converted (:func:`~clipfsar.runtime.video.preprocess.as_bgr_uint8`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import LOW_SPACE, ClipFsarError, VideoError, free_bytes, no_space
from clipfsar.runtime.classify.classifier import UNKNOWN, Decision
from clipfsar.runtime.video.clips import fourcc_for
from clipfsar.runtime.video.preprocess import as_bgr_uint8

log = logging.getLogger(__name__)



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
    """Raise ``ClipFsarError`` when ``--save`` would overwrite the ``--source`` being read (the same file), is a
    folder, has an extension no video writer takes, or lies in a folder that does not exist or is not writable."""
    if source.lower().startswith("file://"):  # file:///data/a.mp4 is the file /data/a.mp4
        from clipfsar.runtime.video.sources import file_url_path
        with contextlib.suppress(ClipFsarError):
            source = file_url_path(source)
    src = Path(source)
    if src.exists() and Path(save).exists() and os.path.samefile(src, save):
        raise ClipFsarError(f"--save {save} is the --source being read; choose another output file")
    if Path(save).is_dir():
        raise ClipFsarError(f"--save {save} is a folder; give a video file name (.mp4, .avi)")
    fourcc_for(Path(save))  # an extension it cannot write is refused before any streaming
    parent = Path(save).absolute().parent
    if not parent.is_dir():
        raise ClipFsarError(f"--save {save}: the folder {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ClipFsarError(f"--save {save}: the folder {parent} is not writable; choose another path")


def letterbox(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` = (width, height) with its aspect kept, centred on black bars."""
    w, h = size
    ih, iw = image.shape[:2]
    if (iw, ih) == (w, h):
        return image
    scale = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((h, w, 3), np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


class AnnotatedSink:
    """Writes annotated frames to a video file (opened at the first frame) and/or shows them in a window.

    ``frames`` counts the frames written (every frame is written: one of another size is letterboxed to the first
    frame's size, logged once). :meth:`close` finalizes the file, checks it holds them, and renames it into place.

    Raises (from ``__call__`` or :meth:`close`):
        VideoError: the file cannot be opened for writing, or the finished file does not hold what was written.
        DiskFullError: the disk filled up ("no space left on device while writing X; nothing was changed").
    """

    def __init__(self, save: Optional[Path], show: bool, fps: float):
        self.save, self.show, self.fps = save, show, fps
        self.writer = None
        self.frames = 0
        self.size: Optional[Tuple[int, int]] = None
        self.resized = 0
        self.t_last, self.rate = time.perf_counter(), None
        self._stage = None  # the staged_file context of the video being written
        self._tmp: Optional[Path] = None

    def __call__(self, frame, decision) -> None:
        now = time.perf_counter()
        inst = 1.0 / max(now - self.t_last, 1e-6)
        self.rate = inst if self.rate is None else 0.9 * self.rate + 0.1 * inst
        self.t_last = now
        img = annotate(as_bgr_uint8(frame.image, f"frame {frame.index}"), decision, self.rate)
        if self.save is not None:
            if self.writer is None:
                self._open(img)
            if (img.shape[1], img.shape[0]) != self.size:
                if self.resized == 0:
                    log.warning("%s: frame %d is %dx%d, the video is %dx%d: frames of another size are letterboxed "
                                "to the first frame's size", self.save, frame.index, img.shape[1], img.shape[0],
                                *self.size)
                self.resized += 1
                img = letterbox(img, self.size)
            self.writer.write(img)
            self.frames += 1
            if self.frames % 64 == 0 and free_bytes(self.save.parent) == 0:  # stop at once: nothing more fits
                self._abort(no_space(self.save))
        if self.show:
            cv2.imshow("clip-fsar", img)
            if cv2.waitKey(1) & 0xFF == ord("q"):
                raise KeyboardInterrupt

    def _open(self, img: np.ndarray) -> None:
        h, w = img.shape[:2]
        self.size = (w, h)
        fourcc = fourcc_for(self.save)  # refuses an extension it cannot write, before anything is created
        self._stage = staged_file(Path(self.save), suffix=f".tmp{Path(self.save).suffix}")
        self._tmp = self._stage.__enter__()
        self.writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
        if not self.writer.isOpened():
            if free_bytes(Path(self.save).parent) < LOW_SPACE:
                self._abort(no_space(self.save))
            self._abort(VideoError(f"cannot write video {self.save}"))

    def _abort(self, error: BaseException) -> None:
        """Drop the staged video (what was at ``save`` stays) and raise ``error`` (a full disk translated)."""
        stage, self._stage = self._stage, None
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        try:
            raise error
        except BaseException as e:
            if stage is None:
                raise
            if not stage.__exit__(type(e), e, e.__traceback__):
                raise

    def _written(self) -> Optional[int]:
        """Frames the finished staged file holds (its container's count), None when it cannot be opened."""
        cap = cv2.VideoCapture(str(self._tmp))
        try:
            if not cap.isOpened():
                return None
            n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            return int(n) if n and n > 0 else None
        finally:
            cap.release()

    def close(self) -> None:
        """Finalize the video (also after Ctrl-C, SIGTERM, SIGHUP), check it, and move it into place."""
        if self.show:
            cv2.destroyAllWindows()
        if self.writer is None or self._stage is None:
            return
        self.writer.release()
        self.writer = None
        held = self._written()
        if held is None or held < self.frames:
            if free_bytes(self.save.parent) < LOW_SPACE:
                self._abort(no_space(self.save))
            self._abort(VideoError(f"the saved video {self.save} could not be written: it holds "
                                   f"{held or 0} of the {self.frames} frames written; nothing was changed"))
        if self.resized:
            log.info("%s: %d of %d frames letterboxed to %dx%d", self.save, self.resized, self.frames, *self.size)
        stage, self._stage = self._stage, None
        stage.__exit__(None, None, None)  # the rename into place (a full disk here is translated too)
