"""Which files are clips, in which order, and which container numbers to believe: pure helpers, no decoding.

Split from runtime/video/clips.py (which re-exports every name here): extensions of video files and image frames,
natural ordering of frame files (``1.jpg, 2.jpg, ..., 10.jpg``), and the sanity checks on container frame rates and
frame counts (a streaming muxer writes none and OpenCV then reports about -1.1e17).
"""
from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FPS = 30.0
MAX_FPS = 1000.0  # a container rate at or above this is a timebase, not a frame rate
MAX_FRAME_COUNT = 10 ** 9  # ~1 year at 30 fps: larger counts are garbage


def natural_key(name: str) -> Tuple:
    """Sort key that orders digit runs by value: ``frame_2.jpg`` < ``frame_10.jpg``.

    Example:
        >>> sorted(["10.jpg", "2.jpg", "1.jpg"], key=natural_key)
        ['1.jpg', '2.jpg', '10.jpg']
    """
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.lower()) for p in parts if p != "") + (name,)


def natural_sorted(paths: Iterable[Path]) -> List[Path]:
    """Paths in natural order of their names (see :func:`natural_key`)."""
    return sorted(paths, key=lambda p: natural_key(Path(p).name))


def sane_fps(value) -> Optional[float]:
    """A container frame rate if it can be believed (finite, 0 < fps < 1000), else None."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return None
    return fps if math.isfinite(fps) and 0 < fps < MAX_FPS else None


def sane_frame_count(value) -> Optional[int]:
    """A container frame count if it can be believed (finite, 0 < n < 1e9), else None."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return None
    return int(n) if math.isfinite(n) and 0 < n < MAX_FRAME_COUNT else None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS and not path.name.startswith(".")


def is_clip(path: Path) -> bool:
    """A video file (by extension: a dangling link named ``x.mp4`` counts, so the scan reports it), or a folder
    holding image frames."""
    path = Path(path)
    try:
        if path.is_dir():
            return any(is_image_file(p) for p in path.iterdir())
        return path.suffix.lower() in VIDEO_EXTS
    except OSError:  # a symlink loop, a folder without permission
        return False


def frame_files(folder: Path) -> List[Path]:
    """The image files of a frame folder, in natural order."""
    return natural_sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def special_file_kind(path: Path) -> Optional[str]:
    """What a path that exists but is no regular file or folder is, in words (``a FIFO (named pipe)``, ``a
    character device``, ``a block device``, ``a socket``); None for a regular file, a folder, or nothing there.

    Example:
        >>> special_file_kind(Path("/dev/null"))
        'a character device'
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return None
