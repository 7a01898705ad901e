"""Reading clips (video files or folders of frames) and TSN-style frame sampling, in numpy + OpenCV."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np

from .errors import VideoError

VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_clip(path: Path) -> bool:
    """A video file, or a folder holding image frames."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTS
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in path.iterdir())


def _frame_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def _open(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open video {path}")
    return cap


def count_frames(path: Path) -> int:
    """Number of decodable frames of a clip (decodes the file: container frame counts can lie)."""
    path = Path(path)
    if path.is_dir():
        return len(_frame_files(path))
    if not path.is_file():
        raise VideoError(f"clip not found: {path}")
    cap = _open(path)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def sample_indices(n_frames: int, num: int, mode: str = "center",
                   rng: Optional[np.random.Generator] = None) -> List[int]:
    """TSN sampling: one frame per equal segment; the centre of each (test) or a random one (training).

    Example:
        >>> sample_indices(16, 4)
        [2, 6, 10, 14]
    """
    if n_frames < 1:
        raise VideoError("cannot sample frames from an empty clip")
    if mode == "center":
        offsets = np.full(num, 0.5)
    elif mode == "random":
        offsets = (rng or np.random.default_rng()).random(num)
    else:
        raise ValueError(f"sampling mode must be 'center' or 'random', got '{mode}'")
    idx = np.floor((np.arange(num) + offsets) * n_frames / num).astype(int)
    return np.minimum(idx, n_frames - 1).tolist()


def read_frames(path: Path, indices: Sequence[int]) -> List[np.ndarray]:
    """Decode the frames at ``indices`` (any order, repeats allowed) as uint8 BGR arrays."""
    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        out = {}
        for i in set(indices):
            if not 0 <= i < len(files):
                raise VideoError(f"{path}: frame {i} out of range ({len(files)} frames)")
            img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError(f"cannot read frame image {files[i]}")
            out[i] = img
        return [out[i] for i in indices]
    if not path.is_file():
        raise VideoError(f"clip not found: {path}")
    wanted = set(indices)
    last = max(wanted)
    out = {}
    cap = _open(path)
    try:
        for i in range(last + 1):
            if not cap.grab():
                raise VideoError(f"{path}: ended at frame {i}, frame {last} was wanted (truncated or corrupt?)")
            if i in wanted:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise VideoError(f"{path}: cannot decode frame {i}")
                out[i] = frame
    finally:
        cap.release()
    return [out[i] for i in indices]


def read_clip(path: Path, num: int, mode: str = "center", rng: Optional[np.random.Generator] = None,
              n_frames: Optional[int] = None) -> List[np.ndarray]:
    """Sample ``num`` frames TSN-style from a clip. ``n_frames`` skips counting when already known."""
    n = count_frames(path) if n_frames is None else n_frames
    if n == 0:
        raise VideoError(f"clip {path} has no decodable frames")
    return read_frames(path, sample_indices(n, num, mode, rng))


def video_fps(path: Path, default: float = 30.0) -> float:
    """Frame rate of a video file (``default`` for frame folders or when the container does not say)."""
    path = Path(path)
    if path.is_dir():
        return default
    cap = _open(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()
    return float(fps) if fps and 0 < fps < 1000 else default


def fourcc_for(path: Path) -> str:
    """The codec OpenCV's pip wheel writes for a file extension (.mp4 mp4v, .avi MJPG, .webm VP80)."""
    ext = Path(path).suffix.lower()
    codecs = {".mp4": "mp4v", ".avi": "MJPG", ".webm": "VP80", ".mkv": "mp4v", ".mov": "mp4v"}
    if ext not in codecs:
        raise VideoError(f"cannot write video {path}: use .mp4, .avi or .webm")
    return codecs[ext]
