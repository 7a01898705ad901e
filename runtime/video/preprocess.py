"""Frame preprocessing in numpy + OpenCV, shared by training and deployment: short side, centre crop, CLIP mean/std."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

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


def resize_and_crop(frame: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One uint8 (H, W, 3) frame -> uint8 (S, S, 3): short side to ``resize_short``, then the centre crop."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}")
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
    """Frames as OpenCV gives them (uint8 BGR, any size) -> float32 (B, 3, S, S) model input.

    Example:
        >>> x = preprocess_frames([cv2.imread("a.jpg")], PreprocessConfig.for_size(224))
    """
    if len(frames) == 0:
        raise ValueError("no frames to preprocess")
    return normalize(np.stack([resize_and_crop(f, cfg) for f in frames]), cfg)
