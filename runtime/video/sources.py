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
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2

from clipfsar.runtime.video.clips import (
    DEFAULT_FPS,
    IMAGE_EXTS,
    FrameGrabber,
    frame_files,
    sane_fps,
    sane_frame_count,
    special_file_kind,
)
from clipfsar.runtime.video.frames import Frame, Gap, SourceError  # noqa: F401 (re-exported)
from clipfsar.runtime.video.live import LiveSource, capture_for, give_up_seconds  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


class FileSource:
    """Every frame of a video file, with its presentation time. Reports truncation or corruption.

    Frame times are the container's presentation times (``CAP_PROP_POS_MSEC``), so a variable-frame-rate file is
    timed as it is shown; where a file gives none (or one that does not advance), frame ``i`` is at ``i / fps``.
    The container's frame rate and frame count are hints (:func:`~clipfsar.runtime.video.clips.sane_fps`): without a
    believable rate, ``fps`` (default 30) is assumed, the guess is logged and ``fps_guessed`` is True; without a
    believable count, ``duration`` is unknown (``inf``). An explicit ``fps`` (``--fps``) always wins: frame ``i`` is
    at ``i / fps`` whatever the container says, and that is logged. Frames the decoder cannot read mid-file are
    skipped (counted in ``skipped``, logged) and reading goes on; a stream that ends well before the stated count
    sets ``error``.

    Raises:
        SourceError: missing, empty (0 bytes) or unopenable file.
    """
    live = False

    def __init__(self, path: Union[str, Path], fps: Optional[float] = None):
        self.path = Path(path)
        if not self.path.is_file():
            kind = special_file_kind(self.path)
            if kind is not None:
                raise SourceError(f"video file {self.path} is {kind}, not a video file")
            raise SourceError(f"video file not found: {self.path}")
        if self.path.stat().st_size == 0:
            raise SourceError(f"video file {self.path} is empty (0 bytes)")
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open video {self.path} (not a video, or corrupt)")
        raw_fps = self.cap.get(cv2.CAP_PROP_FPS)
        container_fps = sane_fps(raw_fps)
        self.fixed_fps = fps is not None
        if fps is not None:  # an explicit --fps wins over the container's rate and timestamps
            self.fps, self.fps_guessed = _checked_fps(fps, self.path), False
            log.info("%s: --fps %g wins over the container's %s; frame i is at i / %g s", self.path, self.fps,
                     f"{container_fps:g} fps" if container_fps else f"unbelievable rate ({raw_fps!r})", self.fps)
        else:
            self.fps_guessed = container_fps is None
            self.fps = container_fps or DEFAULT_FPS
            if self.fps_guessed:
                log.warning("%s: the container gives no believable frame rate (%r); assuming %g fps (set it with "
                            "--fps)", self.path, raw_fps, self.fps)
        self.expected_frames = sane_frame_count(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.name = str(self.path)
        self.error: Optional[str] = None
        self.skipped = 0

    def frames(self) -> Iterator[Frame]:
        g = FrameGrabber(self.cap)
        last = -1.0
        try:
            while g.grab():
                img = g.retrieve()
                if img is None:
                    g.skipped += 1
                    continue
                t = g.position / self.fps
                stamp = None if self.fixed_fps else g.timestamp()
                if stamp is not None and stamp > last and abs(stamp - t) > 2e-3:  # presentation time (VFR files)
                    t = stamp
                elif t <= last:  # never a step back (a timestamp jumped ahead of the index before)
                    t = last + 1.0 / self.fps
                last = t
                yield Frame(g.decoded - 1, t, img)
        finally:
            self.cap.release()
            self.skipped = g.skipped
        if g.skipped:
            log.warning("%s: %d unreadable frames skipped (corrupt video); %d frames read", self.path, g.skipped,
                        g.decoded)
        if g.decoded == 0:
            self.error = f"{self.path}: no decodable frames"
        elif self.expected_frames and g.decoded + g.skipped < self.expected_frames - 1:
            self.error = (f"{self.path}: stream ended at frame {g.decoded + g.skipped} of {self.expected_frames} "
                          f"(truncated or corrupt video)")

    @property
    def duration(self) -> float:
        """Seconds, from the container's count and rate; ``inf`` (unknown) when either is not believable."""
        if self.expected_frames is None or self.fps_guessed:
            return float("inf")
        return self.expected_frames / self.fps


class ImageFolderSource:
    """The images of a folder in natural name order (``1.jpg, 2.jpg, ..., 10.jpg``), as frames at ``fps``.

    An image that cannot be decoded is skipped (counted in ``skipped``, logged); frame times keep its slot.

    Raises:
        SourceError: the folder has no images, or ``fps`` is not a positive rate below 1000.
    """
    live = False

    def __init__(self, folder: Union[str, Path], fps: Optional[float] = None):
        self.folder = Path(folder)
        self.files = frame_files(self.folder)
        if not self.files:
            raise SourceError(f"image folder {self.folder} has no images ({', '.join(IMAGE_EXTS)})")
        self.fps, self.name, self.error = _checked_fps(fps, self.folder), str(self.folder), None
        self.fps_guessed = fps is None
        self.expected_frames = len(self.files)
        self.skipped = 0

    def frames(self) -> Iterator[Frame]:
        index = 0
        for i, p in enumerate(self.files):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                self.skipped += 1
                log.warning("cannot read image %s; skipped", p)
                continue
            yield Frame(index, i / self.fps, img)
            index += 1
        if index == 0:
            self.error = f"image folder {self.folder}: none of its {len(self.files)} images can be read"

    @property
    def duration(self) -> float:
        return len(self.files) / self.fps


def _checked_fps(fps: Optional[float], where: Path) -> float:
    """A user's ``--fps`` (default 30 when None), refused unless 0 < fps < 1000."""
    if fps is None:
        return DEFAULT_FPS
    if sane_fps(fps) is None:
        raise SourceError(f"--fps for {where} must be a positive frame rate below 1000, got {fps}")
    return float(fps)




def file_url_path(url: str) -> str:
    """The local path of a ``file://`` URL: ``file:///data/a%20b.mp4`` -> ``/data/a b.mp4``.

    Raises:
        SourceError: a ``file://`` URL naming another host (``file://server/x.mp4``).
    """
    from urllib.parse import unquote, urlsplit
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceError(f"file URL {url} names host '{parts.netloc}'; only local files (file:///path) are read")
    return unquote(parts.path)


MAX_CAMERA_INDEX = 2 ** 31 - 1  # the largest index cv2.VideoCapture(int) accepts


def open_source(spec: Union[str, int, Path], live: Optional[bool] = None, fps: Optional[float] = None,
                **live_options):
    """Open a source from what a user types: ``0`` (camera), a video file, a folder of images, an
    ``rtsp://`` / ``http://`` URL, or a GStreamer pipeline (contains ``!``).

    ``fps`` (``--fps``), when given, is the frame rate of every source: of an image folder (default 30), of a
    video file (it wins over the container's rate and timestamps, and that is logged) and of a live source (see
    :class:`~clipfsar.runtime.video.live.LiveSource`).

    ``live_options`` go to :class:`~clipfsar.runtime.video.live.LiveSource` (``open_timeout``, ``read_timeout``,
    ``max_retries`` ...) when the source is live.

    Raises:
        SourceError: it cannot be opened (a clear message, never a silent empty run).
    """
    if isinstance(spec, str) and not spec.strip():
        raise SourceError("the source is empty; expected a camera index, a video file, an image folder, a URL or a "
                          "GStreamer pipeline")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isascii() and spec.isdigit()):
        if not 0 <= int(spec) <= MAX_CAMERA_INDEX:  # OpenCV takes a C int (and reads index // 100 as a backend)
            raise SourceError(f"camera index {spec} is out of range (0 to {MAX_CAMERA_INDEX}); cameras are "
                              f"numbered from 0 (/dev/video0 is 0)")
        return LiveSource(int(spec), fps=fps, **live_options)
    s = str(spec)
    if s.lower().startswith("file://"):  # a file URL is a file (file:///data/a.mp4, percent-escapes decoded)
        s = file_url_path(s)
    if "!" in s or "://" in s:
        return LiveSource(s, fps=fps, **live_options)
    path = Path(s)
    if path.is_dir():
        return ImageFolderSource(path, fps)
    kind = special_file_kind(path)
    if kind == "a FIFO (named pipe)":  # a stream from another process (ffmpeg ... -f mpegts FIFO): read as live
        return LiveSource(s, fps=fps, **live_options)
    if kind == "a character device" and path.name.startswith("video"):  # /dev/video0: a V4L2 camera by path
        return LiveSource(s, fps=fps, **live_options)
    if kind is not None:
        raise SourceError(f"source {s} is {kind}, not a video file, image folder, camera or stream (expected a "
                          f"camera index, a video file, an image folder, a URL or a GStreamer pipeline)")
    if not path.exists():
        raise SourceError(f"source not found: {s} (expected a camera index, a video file, an image folder, a URL "
                          f"or a GStreamer pipeline)")
    if live:
        return LiveSource(s, fps=fps, **live_options)
    return FileSource(path, fps)
