"""Frame sources: video files (every frame), folders of images, and live sources (camera index, RTSP/HTTP URL,
GStreamer pipeline) read by a capture thread that keeps only the newest frame and reconnects with backoff.

A Jetson CSI camera is a GStreamer pipeline string, e.g.::

    nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv !
    video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1

which needs an OpenCV built with GStreamer (JetPack's), not the pip wheel.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import cv2
import numpy as np

from .errors import ClipFsarError
from .video import IMAGE_EXTS

log = logging.getLogger(__name__)


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


class FileSource:
    """Every frame of a video file, with times from its frame rate. Reports truncation or corruption."""
    live = False

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open video {self.path} (not a video, or corrupt)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        self.expected_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.name = str(self.path)
        self.error: Optional[str] = None

    def frames(self) -> Iterator[Frame]:
        i = 0
        try:
            while True:
                ok, img = self.cap.read()
                if not ok or img is None:
                    break
                yield Frame(i, i / self.fps, img)
                i += 1
        finally:
            self.cap.release()
        if self.expected_frames and i < self.expected_frames - 1:
            self.error = (f"{self.path}: stream ended at frame {i} of {self.expected_frames} "
                          f"(truncated or corrupt video)")
        elif i == 0:
            self.error = f"{self.path}: no decodable frames"

    @property
    def duration(self) -> float:
        return self.expected_frames / self.fps if self.expected_frames else float("inf")


class ImageFolderSource:
    """The images of a folder in name order, as frames at ``fps``."""
    live = False

    def __init__(self, folder: Union[str, Path], fps: float = 30.0):
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise SourceError(f"image folder {self.folder} has no images ({', '.join(IMAGE_EXTS)})")
        self.fps, self.name, self.error = fps, str(self.folder), None
        self.expected_frames = len(self.files)

    def frames(self) -> Iterator[Frame]:
        for i, p in enumerate(self.files):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                self.error = f"cannot read image {p}; stopped there"
                return
            yield Frame(i, i / self.fps, img)

    @property
    def duration(self) -> float:
        return len(self.files) / self.fps


class LiveSource:
    """A camera, network stream or GStreamer pipeline, read by a capture thread that keeps only the newest frame.

    When the source drops out it is reopened with exponential backoff (``retry_initial`` doubling up to
    ``retry_max`` seconds, ``max_retries`` attempts in a row); the gap is reported as a :class:`Gap`. No frame is
    invented while the source is down, and all-black frames (what failing drivers deliver) are dropped.
    """
    live = True

    def __init__(self, spec: Union[int, str], opener: Optional[Callable[[], cv2.VideoCapture]] = None,
                 retry_initial: float = 0.5, retry_max: float = 8.0, max_retries: int = 8,
                 open_timeout: float = 10.0):
        self.spec, self.name = spec, str(spec)
        self._open = opener or (lambda: _capture_for(spec))
        self.retry_initial, self.retry_max, self.max_retries = retry_initial, retry_max, max_retries
        cap = self._open()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open live source {spec!r} (no camera at that index, unreachable URL, or "
                              f"an OpenCV without the needed backend)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        self.error: Optional[str] = None
        self.black_frames = 0
        self._cap = cap
        self._cond = threading.Condition()
        self._latest: Optional[np.ndarray] = None
        self._latest_id = 0
        self._events: List[Gap] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"capture-{spec}", daemon=True)
        self._thread.start()
        self.duration = float("inf")

    def _run(self) -> None:
        cap = self._cap
        while not self._stop.is_set():
            ok, img = cap.read()
            if ok and img is not None and not img[::8, ::8].any():
                self.black_frames += 1  # a failing driver's all-black frame: never classified
                continue
            if ok and img is not None:
                with self._cond:
                    self._latest, self._latest_id = img, self._latest_id + 1
                    self._cond.notify_all()
                continue
            cap.release()
            lost = time.monotonic() - self._t0
            log.warning("%s dropped out at %.1f s; reconnecting", self.name, lost)
            cap = self._reconnect()
            if cap is None:
                with self._cond:
                    self.error = f"live source {self.name!r} dropped out and did not come back after " \
                                 f"{self.max_retries} attempts"
                    self._cond.notify_all()
                return
            back = time.monotonic() - self._t0
            with self._cond:
                self._events.append(Gap(lost, back))
            log.warning("%s is back after a %.1f s gap", self.name, back - lost)
        cap.release()

    def _reconnect(self) -> Optional[cv2.VideoCapture]:
        delay = self.retry_initial
        for _ in range(self.max_retries):
            if self._stop.wait(delay):
                return None
            cap = self._open()
            if cap.isOpened():
                return cap
            cap.release()
            delay = min(delay * 2, self.retry_max)
        return None

    def frames(self) -> Iterator[Union[Frame, Gap]]:
        """Newest frames as they arrive (frames that arrived in between are skipped), and gaps."""
        seen, index = 0, 0
        try:
            while True:
                with self._cond:
                    while self._latest_id == seen and self.error is None and not self._events:
                        self._cond.wait(0.5)
                    events, self._events = self._events, []
                    img, seen_now, error = self._latest, self._latest_id, self.error
                for ev in events:
                    yield ev
                if error is not None and seen_now == seen:
                    return
                if seen_now != seen:
                    seen = seen_now
                    yield Frame(index, time.monotonic() - self._t0, img)
                    index += 1
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)


def _capture_for(spec: Union[int, str]) -> cv2.VideoCapture:
    if isinstance(spec, int):
        return cv2.VideoCapture(spec)
    if "!" in spec:
        return cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
    return cv2.VideoCapture(spec, cv2.CAP_FFMPEG)


def open_source(spec: Union[str, int, Path], live: Optional[bool] = None, fps: float = 30.0):
    """Open a source from what a user types: ``0`` (camera), a video file, a folder of images, an
    ``rtsp://`` / ``http://`` URL, or a GStreamer pipeline (contains ``!``).

    Raises:
        SourceError: it cannot be opened (a clear message, never a silent empty run).
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return LiveSource(int(spec))
    s = str(spec)
    if "!" in s or "://" in s:
        return LiveSource(s)
    path = Path(s)
    if path.is_dir():
        return ImageFolderSource(path, fps)
    if not path.exists():
        raise SourceError(f"source not found: {s} (expected a camera index, a video file, an image folder, a URL "
                          f"or a GStreamer pipeline)")
    if live:
        return LiveSource(s)
    return FileSource(path)
