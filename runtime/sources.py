"""Frame sources: video files (every frame), folders of images, and live sources (camera index, RTSP/HTTP URL,
GStreamer pipeline) read by a capture thread that keeps only the newest frame and reconnects with backoff
(:mod:`.live`).

A Jetson CSI camera is a GStreamer pipeline string, e.g.::

    nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv !
    video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1

which needs an OpenCV built with GStreamer (JetPack's), not the pip wheel.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

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


def __getattr__(name: str):
    """``LiveSource`` and ``capture_for`` live in :mod:`.live` (imported on first use: no import cycle)."""
    if name in ("LiveSource", "capture_for", "give_up_seconds"):
        from . import live
        return getattr(live, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_source(spec: Union[str, int, Path], live: Optional[bool] = None, fps: float = 30.0, **live_options):
    """Open a source from what a user types: ``0`` (camera), a video file, a folder of images, an
    ``rtsp://`` / ``http://`` URL, or a GStreamer pipeline (contains ``!``).

    ``live_options`` go to :class:`~clipfsar.runtime.live.LiveSource` (``open_timeout``, ``read_timeout``,
    ``max_retries`` ...) when the source is live.

    Raises:
        SourceError: it cannot be opened (a clear message, never a silent empty run).
    """
    from .live import LiveSource
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return LiveSource(int(spec), **live_options)
    s = str(spec)
    if "!" in s or "://" in s:
        return LiveSource(s, **live_options)
    path = Path(s)
    if path.is_dir():
        return ImageFolderSource(path, fps)
    if not path.exists():
        raise SourceError(f"source not found: {s} (expected a camera index, a video file, an image folder, a URL "
                          f"or a GStreamer pipeline)")
    if live:
        return LiveSource(s, **live_options)
    return FileSource(path)
