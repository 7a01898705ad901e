"""Reading clips (video files or folders of frames) and TSN-style frame sampling, in numpy + OpenCV.

Container metadata (frame count, frame rate, duration) are *hints*: a streaming muxer (``ffmpeg ... -f webm
pipe:``, a browser's MediaRecorder) writes no duration and OpenCV then reports a frame count of about -1.1e17.
Nothing here decides anything from a hint that is negative, zero, absurd or missing (:func:`sane_fps`,
:func:`sane_frame_count`); clip lengths come from decoding, and a guessed frame rate is logged as a guess.

A frame the decoder cannot read in the middle of a file does not end the clip: reading continues past it (up to
``MAX_BAD_RUN`` unreadable frames in a row) and the skipped frames are counted (:class:`ClipScan`). Frame indices
in :func:`read_frames` count *decodable* frames, the same way :func:`scan_clip` counts them.

Sampling is by time: a variable-frame-rate file (24 frames at 1/12 s, then 24 at 1/3 s) is sampled at equal
steps of its presentation times (:func:`sample_frame_indices`), the way the runtime's streams sample it, so
training, export, enrolment and ``clipfsar run`` see the same frames; a constant-rate file (every clip the
project writes) gives exactly the TSN indices of :func:`sample_indices`.

Frame files of a folder are listed in natural order (``1.jpg, 2.jpg, ..., 10.jpg``, as ``ffmpeg -i v %d.jpg``
writes them), never as text (``1, 10, 11, ..., 2``), which would scramble the motion.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from clipfsar.runtime.base.errors import VideoError
from clipfsar.runtime.video.media_files import (  # noqa: F401 (re-exported)
    DEFAULT_FPS,
    IMAGE_EXTS,
    MAX_FPS,
    MAX_FRAME_COUNT,
    VIDEO_EXTS,
    frame_files,
    is_clip,
    is_image_file,
    natural_key,
    natural_sorted,
    sane_fps,
    sane_frame_count,
    special_file_kind,
)

log = logging.getLogger(__name__)

MAX_BAD_RUN = 16  # unreadable frames in a row after which a file is taken to have ended


def _readable_image(path: Path) -> bool:
    """Cheap check (size and file signature, no decoding) that OpenCV can read an image file."""
    try:
        return path.is_file() and path.stat().st_size > 0 and cv2.haveImageReader(str(path))
    except (OSError, cv2.error):
        return False


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        kind = special_file_kind(path)
        if kind is not None:
            raise VideoError(f"video {path} is {kind}, not a video file")
        if path.is_symlink():
            raise VideoError(f"video {path} is a symbolic link that leads nowhere (dangling, or a loop)")
        raise VideoError(f"clip not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(1)
    except OSError as e:
        raise VideoError(f"cannot read video {path}: {e.strerror or e}") from e
    if not head:
        raise VideoError(f"video {path} is empty (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open video {path} (not a video, or corrupt)")
    return cap


class FrameGrabber:
    """Steps through a capture frame by frame, continuing past frames the decoder cannot read.

    ``grab()`` returns True when a frame was decoded (then ``retrieve()`` gives it); unreadable frames met on the
    way are counted in ``skipped``; after ``MAX_BAD_RUN`` failures in a row the source has ended. ``position`` is
    the index of the current frame in the file, skipped frames included.

    Example:
        >>> g = FrameGrabber(cv2.VideoCapture("clip.avi"))
        >>> while g.grab(): image = g.retrieve()
    """

    def __init__(self, cap: cv2.VideoCapture, max_bad_run: int = MAX_BAD_RUN):
        self.cap, self.max_bad_run = cap, max_bad_run
        self.decoded = 0
        self.skipped = 0
        self.position = -1
        self.ended = False

    def grab(self) -> bool:
        if self.ended:
            return False
        failures = 0
        while not self.cap.grab():
            failures += 1
            if failures > self.max_bad_run:
                self.ended = True
                return False
        self.skipped += failures
        self.position += failures + 1
        self.decoded += 1
        return True

    def retrieve(self) -> Optional[np.ndarray]:
        ok, frame = self.cap.retrieve()
        return frame if ok and frame is not None else None

    def timestamp(self) -> Optional[float]:
        """The container's presentation time of the current frame in seconds (None when it gives none)."""
        ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        return ms / 1000.0 if ms is not None and math.isfinite(ms) and ms >= 0 else None


@dataclass(frozen=True)
class ClipScan:
    """What decoding a clip found.

    Attributes:
        path: the clip (video file or frame folder).
        frames: decodable frames (what sampling uses).
        container_frames: the frame count the container (or the folder listing) states; None if it gives no
            believable one.
        skipped: unreadable frames passed over (corrupt frames of a file, unreadable images of a folder).
        fps: frame rate (the container's, or ``DEFAULT_FPS`` when it gives no believable one).
        fps_guessed: True when ``fps`` is the default, not the container's.
    """
    path: Path
    frames: int
    container_frames: Optional[int]
    skipped: int
    fps: float
    fps_guessed: bool

    @property
    def damaged(self) -> bool:
        """Frames were skipped, or fewer frames decoded than the container states (truncated or corrupt)."""
        short = self.container_frames is not None and self.frames + self.skipped < self.container_frames - 1
        return self.skipped > 0 or short

    def describe(self) -> str:
        """One line for the data scan, e.g. ``decoded 45 of 48 frames (3 unreadable frames skipped)``."""
        what = "images" if Path(self.path).is_dir() else "frames"
        total = f" of {self.container_frames}" if self.container_frames is not None else ""
        note = f" ({self.skipped} unreadable {what} skipped)" if self.skipped else ""
        if self.container_frames is not None and self.frames + self.skipped < self.container_frames - 1:
            note += " (stream ended early: truncated or corrupt)"
        return f"decoded {self.frames}{total} {what}{note}"


def scan_clip(path: Path) -> ClipScan:
    """Decode a whole clip once and report what is there (container counts are hints: decoding decides).

    Raises:
        VideoError: the clip is missing, empty (0 bytes), not a video, or has no decodable frame.
    """
    path = Path(path)
    if path.is_dir():
        try:
            files = frame_files(path)
        except OSError as e:
            raise VideoError(f"cannot list frame folder {path}: {e.strerror or e}") from e
        good = sum(_readable_image(p) for p in files)
        if good == 0:
            raise VideoError(f"frame folder {path} has no readable images")
        return ClipScan(path, good, len(files), len(files) - good, DEFAULT_FPS, True)
    cap = _open(path)
    times: List[Optional[float]] = []
    try:
        fps, count = sane_fps(cap.get(cv2.CAP_PROP_FPS)), sane_frame_count(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        g = FrameGrabber(cap)
        while g.grab():
            times.append(g.timestamp())
    finally:
        cap.release()
    if g.decoded == 0:
        raise VideoError(f"video {path} has no decodable frames")
    _remember_times(path, times)
    return ClipScan(path, g.decoded, count, g.skipped, fps or DEFAULT_FPS, fps is None)


_TIMES: Dict[Tuple[str, int, int], Optional[np.ndarray]] = {}  # (path, size, mtime_ns) -> VFR times, None: uniform


def _file_key(path: Path) -> Optional[Tuple[str, int, int]]:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return str(Path(path).resolve()), st.st_size, st.st_mtime_ns


def _remember_times(path: Path, times: List[Optional[float]]) -> None:
    """Keep a file's presentation times when they are not evenly spaced (VFR); None (uniform) otherwise. Bounded:
    a float64 array only for VFR files, one entry per file."""
    key = _file_key(path)
    if key is None:
        return
    ok = len(times) > 2 and all(t is not None for t in times)
    arr = np.asarray(times, np.float64) if ok else None
    if arr is not None and np.all(np.diff(arr) > 0):
        steps = np.diff(arr)
        med = float(np.median(steps))
        vfr = med > 0 and float(np.max(np.abs(steps - med))) > 0.25 * med
    else:
        vfr = False  # no usable times: index sampling
    if len(_TIMES) > 200_000:
        _TIMES.clear()
    _TIMES[key] = arr if vfr else None


def frame_times(path: Path) -> Optional[np.ndarray]:
    """The presentation times (s) of a video file's decodable frames when it has a variable frame rate, else None
    (evenly spaced, a frame folder, or no timestamps). Decodes the file once (grab only); cached per file (path,
    size and modification time), and :func:`scan_clip` fills the cache as it decodes."""
    path = Path(path)
    if path.is_dir():
        return None
    key = _file_key(path)
    if key is None or key not in _TIMES:
        cap = _open(path)
        times: List[Optional[float]] = []
        try:
            g = FrameGrabber(cap)
            while g.grab():
                times.append(g.timestamp())
        finally:
            cap.release()
        _remember_times(path, times)
        return _TIMES.get(_file_key(path)) if key is not None else None
    return _TIMES[key]


def _segment_offsets(num: int, mode: str, rng: Optional[np.random.Generator]) -> np.ndarray:
    """Where in each of the ``num`` TSN segments to sample, as a fraction in [0, 1): the centre (``center``, test)
    or a random point (``random``, training). Raises ValueError for another mode."""
    if mode == "center":
        return np.full(num, 0.5)
    if mode == "random":
        return (rng or np.random.default_rng()).random(num)
    raise ValueError(f"sampling mode must be 'center' or 'random', got '{mode}'")


def sample_frame_indices(times: Optional[np.ndarray], n_frames: int, num: int, mode: str = "center",
                         rng: Optional[np.random.Generator] = None) -> List[int]:
    """TSN sampling by time: one frame per equal *time* segment of the clip (the frame shown at the segment's centre,
    or at a random moment of it), from presentation times ``times`` (seconds, increasing; the last frame lasts as
    long as the step before it). ``times`` None (a constant-rate clip) is exactly :func:`sample_indices`.

    Example:
        >>> t = np.r_[np.arange(24) / 12, 2 + np.arange(24) / 3]   # 24 frames at 1/12 s, then 24 at 1/3 s
        >>> sample_frame_indices(t, 48, 4)    # 10 s of video: the moments 1.25, 3.75, 6.25, 8.75 s
        [15, 29, 36, 44]
    """
    if times is None or len(times) != n_frames:
        return sample_indices(n_frames, num, mode, rng)
    offsets = _segment_offsets(num, mode, rng)
    t0 = float(times[0])
    end = float(times[-1]) + float(times[-1] - times[-2])
    moments = t0 + (np.arange(num) + offsets) * (end - t0) / num
    idx = np.searchsorted(times, moments, side="right") - 1
    return np.clip(idx, 0, n_frames - 1).tolist()


def count_frames(path: Path) -> int:
    """Number of decodable frames of a clip (decodes it: container frame counts are hints).

    Raises:
        VideoError: see :func:`scan_clip`.
    """
    return scan_clip(path).frames


def sample_indices(n_frames: int, num: int, mode: str = "center",
                   rng: Optional[np.random.Generator] = None) -> List[int]:
    """TSN sampling: one frame per equal segment; the centre of each (test) or a random one (training).

    A clip shorter than ``num`` frames gives repeated indices (each frame used for consecutive segments), as in
    training.

    Example:
        >>> sample_indices(16, 4)
        [2, 6, 10, 14]
        >>> sample_indices(3, 8)
        [0, 0, 0, 1, 1, 2, 2, 2]
    """
    if n_frames < 1:
        raise VideoError("cannot sample frames from an empty clip")
    offsets = _segment_offsets(num, mode, rng)
    idx = np.floor((np.arange(num) + offsets) * n_frames / num).astype(int)
    return np.minimum(idx, n_frames - 1).tolist()


def _read_image_near(files: List[Path], i: int, folder: Path) -> np.ndarray:
    """Image ``i`` of a frame folder; if it fails to decode, the nearest one that does (logged)."""
    for step in range(len(files)):
        for j in ((i + step, i - step) if step else (i,)):
            if 0 <= j < len(files):
                img = cv2.imread(str(files[j]), cv2.IMREAD_COLOR)
                if img is not None:
                    if j != i:
                        log.warning("cannot decode frame image %s; used %s instead", files[i], files[j].name)
                    return img
    raise VideoError(f"frame folder {folder} has no readable images")


def read_frames(path: Path, indices: Sequence[int]) -> List[np.ndarray]:
    """Decode the frames at ``indices`` (any order, repeats allowed) as uint8 BGR arrays.

    Indices count decodable frames (unreadable frames of a file and unreadable images of a folder are passed
    over, as :func:`scan_clip` counts them).

    Raises:
        VideoError: missing or unreadable clip, or an index past its last decodable frame.
    """
    path = Path(path)
    if not indices:
        return []
    if path.is_dir():
        files = [p for p in frame_files(path) if _readable_image(p)]
        out = {}
        for i in set(indices):
            if not 0 <= i < len(files):
                raise VideoError(f"{path}: frame {i} out of range ({len(files)} readable images)")
            out[i] = _read_image_near(files, i, path)
        return [out[i] for i in indices]
    wanted = set(indices)
    last = max(wanted)
    out = {}
    cap = _open(path)
    try:
        g = FrameGrabber(cap)
        for i in range(last + 1):
            if not g.grab():
                raise VideoError(f"{path}: ended at frame {i}, frame {last} was wanted (truncated or corrupt?)")
            if i in wanted:
                frame = g.retrieve()
                if frame is None:
                    raise VideoError(f"{path}: cannot decode frame {i}")
                out[i] = frame
    finally:
        cap.release()
    return [out[i] for i in indices]


def read_clip(path: Path, num: int, mode: str = "center", rng: Optional[np.random.Generator] = None,
              n_frames: Optional[int] = None) -> List[np.ndarray]:
    """Sample ``num`` frames TSN-style from a clip, by time (:func:`sample_frame_indices`: a variable-frame-rate file
    by its presentation times). ``n_frames`` (decodable frames) skips counting when known."""
    n = count_frames(path) if n_frames is None else n_frames
    if n == 0:
        raise VideoError(f"clip {path} has no decodable frames")
    return read_frames(path, sample_frame_indices(frame_times(path), n, num, mode, rng))


def video_rate(path: Path, default: float = DEFAULT_FPS) -> Tuple[float, bool]:
    """``(fps, guessed)`` of a clip: the container's rate when believable, else ``default`` with guessed=True.

    Frame folders have no rate of their own: ``(default, True)``.
    """
    path = Path(path)
    if path.is_dir():
        return default, True
    cap = _open(path)
    try:
        fps = sane_fps(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    return (fps, False) if fps is not None else (default, True)


def video_fps(path: Path, default: float = DEFAULT_FPS) -> float:
    """Frame rate of a video file (``default`` for frame folders or when the container gives no believable
    rate; a guessed rate of a video file is logged)."""
    fps, guessed = video_rate(path, default)
    if guessed and not Path(path).is_dir():
        log.warning("%s: the container gives no believable frame rate; assuming %g fps", path, fps)
    return fps


def fourcc_for(path: Path) -> str:
    """The codec OpenCV's pip wheel writes for a file extension (.mp4 mp4v, .avi MJPG, .webm VP80)."""
    ext = Path(path).suffix.lower()
    codecs = {".mp4": "mp4v", ".avi": "MJPG", ".webm": "VP80", ".mkv": "mp4v", ".mov": "mp4v"}
    if ext not in codecs:
        raise VideoError(f"cannot write video {path}: use .mp4, .avi or .webm")
    return codecs[ext]
