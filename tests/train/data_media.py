"""Small synthetic media for the data-input tests: videos whose frame i shows brightness 8 * i (so order and
identity of frames can be checked), MJPG files with zeroed frames, webm written by a streaming muxer, frame
folders."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

SIZE = 64


def frame(i: int) -> np.ndarray:
    """Frame ``i``: uniform grey of brightness ``8 * i`` (mod 256) with a white bar whose x encodes i."""
    img = np.full((SIZE, SIZE, 3), (8 * i) % 256, np.uint8)
    x = (2 * i) % (SIZE - 4)
    img[:, x:x + 4] = 255
    return img


def brightness(img: np.ndarray) -> int:
    """The ``i`` of :func:`frame` (from the background away from the bar, robust to compression)."""
    cols = [c for c in range(SIZE) if img[:, c].mean() < 250]
    return int(round(float(np.median(img[:, cols[len(cols) // 2]])) / 8))


def write_video(path: Path, n: int, fps: float = 12.0, fourcc: str = "") -> Path:
    codec = fourcc or {".avi": "MJPG", ".webm": "VP80"}.get(path.suffix, "mp4v")
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (SIZE, SIZE))
    assert w.isOpened(), f"OpenCV cannot write {path}"
    for i in range(n):
        w.write(frame(i))
    w.release()
    return path


def zero_mjpg_frames(path: Path, frames: Iterable[int]) -> Path:
    """Overwrite the JPEG data of the given frames of an MJPG avi with zeros (chunk headers kept)."""
    data = bytearray(path.read_bytes())
    chunks, i = [], 0
    while (i := data.find(b"00dc", i)) >= 0:
        size = int.from_bytes(data[i + 4:i + 8], "little")
        if size and data[i + 8:i + 10] == b"\xff\xd8":
            chunks.append((i + 8, size))
        i += 8
    for k in frames:
        start, size = chunks[k]
        data[start:start + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


def write_piped_webm(path: Path, n: int, fps: int = 12) -> Path:
    """A VP8 webm written to a pipe, as browsers' MediaRecorder and ``ffmpeg ... -f webm pipe:`` do: no duration,
    so OpenCV reports a frame count of about -1.1e17."""
    import imageio_ffmpeg
    ff = imageio_ffmpeg.get_ffmpeg_exe()
    raw = b"".join(frame(i).tobytes() for i in range(n))
    out = subprocess.run([ff, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
                          f"{SIZE}x{SIZE}", "-r", str(fps), "-i", "pipe:", "-c:v", "libvpx", "-b:v", "1M",
                          "-f", "webm", "pipe:"], input=raw, capture_output=True, check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.stdout)
    return path


def write_frame_folder(folder: Path, n: int, pattern: str = "{}.jpg", start: int = 1) -> Path:
    """Frames as images named by ``pattern`` (``{}.jpg`` is ffmpeg's ``%d.jpg``: 1.jpg, 2.jpg, ..., 10.jpg)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / pattern.format(i + start)), frame(i))
    return folder
