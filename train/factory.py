"""The front door: ``create_model_and_transforms`` (in the spirit of open_clip's)."""
from __future__ import annotations

from typing import Optional, Tuple

from clipfsar.runtime.video.preprocess import PreprocessConfig

from .backbone import create_clip
from .model import CLIPFSAR, ModelConfig


def preprocess_config_of(clip) -> PreprocessConfig:
    """The preprocessing facts of an open_clip model (its image size and normalisation)."""
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
    defaults = PreprocessConfig()
    return PreprocessConfig.for_size(int(size), tuple(cfg.get("mean", defaults.mean)),
                                     tuple(cfg.get("std", defaults.std)))


def create_model_and_transforms(arch: str = "ViT-B-16", weights: Optional[str] = None,
                                cfg: Optional[ModelConfig] = None, cache_dir: Optional[str] = None,
                                **overrides) -> Tuple[CLIPFSAR, PreprocessConfig]:
    """Build a CLIP-FSAR model and its preprocessing facts.

    Args:
        arch: open_clip architecture name or ``tiny``.
        weights: open_clip pretrained tag (e.g. ``openai``) or a local weights file; None = random init.
        cfg: a full ModelConfig (``arch`` / ``weights`` arguments are then ignored).
        cache_dir: where open_clip caches downloads.
        **overrides: ModelConfig fields (``frames=16``, ``beta=0.9`` ...).
    Returns:
        (model, preprocess config).
    Example:
        >>> model, prep = create_model_and_transforms("RN50", weights="openai", beta=0.9)
    """
    if cfg is None:
        cfg = ModelConfig(arch=arch, weights=weights, **overrides)
    clip = create_clip(cfg.arch, cfg.weights, cache_dir=cache_dir)
    return CLIPFSAR(cfg, clip), preprocess_config_of(clip)
