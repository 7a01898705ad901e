"""Frame preprocessing in numpy + OpenCV, shared by training and deployment: short side, centre crop, CLIP mean/std.

Every frame array any path takes (``classify_clip``, ``stream`` of a user's capture, ``enroll`` from arrays, the
training loader, the annotated ``--save`` writer) goes through :func:`as_bgr_uint8` first: uint16 is scaled to 8
bits, gray is expanded, BGRA loses its alpha; anything else is refused with its dtype and shape named.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

from clipfsar.runtime.base.errors import VideoError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a frame becomes model input.

    Attributes:
        image_size: side of the square centre crop (224 for CLIP sizes, the model's own size for tiny ones).
        resize_short: the short side is resized to this before the crop (256 for 224).
        mean, std: per-channel RGB normalisation.
    """
    image_size: int = 224
    resize_short: int = 256
    mean: Tuple[float, float, float] = CLIP_MEAN
    std: Tuple[float, float, float] = CLIP_STD

    @staticmethod
    def for_size(image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> "PreprocessConfig":
        """The protocol's proportions: short side ``round(size * 256 / 224)``, then a ``size`` crop."""
        return PreprocessConfig(int(image_size), int(round(image_size * 256 / 224)), tuple(mean), tuple(std))


ACCEPTED = ("uint8 or uint16 arrays of shape (H, W) (gray), (H, W, 1), (H, W, 3) (BGR, as OpenCV gives them) or "
            "(H, W, 4) (BGRA)")


def as_bgr_uint8(frame, where: str = "a frame") -> np.ndarray:
    """Any frame array a user may hand over -> uint8 (H, W, 3) BGR.

    * uint8 (H, W, 3): returned as it is (no copy);
    * uint16 (16-bit cameras, PNGs read with ``IMREAD_UNCHANGED``): scaled to 8 bits by 255 / 65535 (full range,
      rounded: ``(x + 128) // 257``), so a 16-bit frame classifies as its 8-bit version;
    * gray (H, W) or (H, W, 1): expanded to three equal channels (``cv2.COLOR_GRAY2BGR``);
    * BGRA (H, W, 4): the alpha channel is dropped.

    Raises:
        VideoError: anything else (float, signed or bool dtypes, other shapes, an empty array, not an array), with
            ``where``, the dtype and the shape named.
    """
    if not isinstance(frame, np.ndarray):
        raise VideoError(f"{where} is a {type(frame).__name__}, not a numpy array; expected {ACCEPTED}")
    shape = tuple(frame.shape)
    ok_shape = (frame.ndim == 2 or (frame.ndim == 3 and shape[2] in (1, 3, 4))) and frame.size > 0
    if frame.dtype not in (np.uint8, np.uint16) or not ok_shape:
        hint = " (floats are ambiguous: scale to 0..255 and cast to uint8)" if frame.dtype.kind == "f" else ""
        raise VideoError(f"{where} has dtype {frame.dtype} and shape {shape}; expected {ACCEPTED}{hint}")
    if frame.dtype == np.uint16:
        frame = ((frame.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if frame.ndim == 2 or shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(frame.reshape(shape[:2])), cv2.COLOR_GRAY2BGR)
    if shape[2] == 4:
        return np.ascontiguousarray(frame[..., :3])
    return frame


def resize_and_crop(frame: np.ndarray, cfg: PreprocessConfig, where: str = "a frame") -> np.ndarray:
    """One frame (see :func:`as_bgr_uint8`) -> uint8 (S, S, 3): short side to ``resize_short``, then the centre
    crop.

    Raises:
        VideoError: a frame array of a dtype or shape :func:`as_bgr_uint8` refuses.
    """
    frame = as_bgr_uint8(frame, where)
    h, w = frame.shape[:2]
    scale = cfg.resize_short / min(h, w)
    nh, nw = max(cfg.image_size, round(h * scale)), max(cfg.image_size, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (nw, nh), interpolation=interp)
    top, left = (nh - cfg.image_size) // 2, (nw - cfg.image_size) // 2
    return resized[top:top + cfg.image_size, left:left + cfg.image_size]


def normalize(crops: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """uint8 BGR (B, S, S, 3) -> float32 RGB (B, 3, S, S), CLIP-normalised."""
    x = crops[..., ::-1].astype(np.float32) * (1.0 / 255.0)  # BGR -> RGB
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess_frames(frames: Sequence[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """Frames as OpenCV gives them (uint8 BGR, any size; uint16, gray and BGRA are converted by
    :func:`as_bgr_uint8`) -> float32 (B, 3, S, S) model input.

    Raises:
        ValueError: no frames. VideoError: a frame of a dtype or shape that is refused (named with its index).

    Example:
        >>> x = preprocess_frames([cv2.imread("a.jpg")], PreprocessConfig.for_size(224))
    """
    if len(frames) == 0:
        raise ValueError("no frames to preprocess")
    return normalize(np.stack([resize_and_crop(f, cfg, f"frame {i}") for i, f in enumerate(frames)]), cfg)
