"""Zero-shot accuracy of a backbone's text prior: the video-text branch alone, before any episodic training.

Each query clip is scored against the text features of its episode's class names (``"a photo of {}"``) with
``cos(mean_t f, w_c)``; no support clip is looked at. The episodes are the evaluation protocol's (seeded, N-way,
one query per class), so the number is comparable with ``clipfsar eval``'s video-text row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from .data import load_split
from .episodes import Accuracy
from .evaluate import evaluate_features
from .factory import create_model_and_transforms
from .features import ClipLoader, all_clips, class_offsets, encode_clips


def zero_shot_accuracy(data: Path, arch: str = "tiny", weights: Optional[str] = None, split: str = "test",
                       way: int = 5, episodes: int = 2000, seed: int = 0, frames: int = 8) -> Dict[str, float]:
    """Zero-shot (video-text branch) accuracy of ``arch`` with ``weights`` (None = random init) on ``split``.

    Returns:
        ``{"accuracy": %, "ci95": %}`` over ``episodes`` seeded ``way``-way episodes.
    Example:
        >>> zero_shot_accuracy(Path("synth"), "tiny", "synth")["accuracy"]
    """
    torch.manual_seed(seed)
    model, prep = create_model_and_transforms(arch, weights=weights, frames=frames)
    clipset = load_split(Path(data), split, min_clips=2)
    loader = ClipLoader(prep, frames)
    try:
        feats = encode_clips(model, loader, all_clips(clipset))  # (B, T, D), centre sampling
    finally:
        loader.close()
    # the video-text branch does not depend on the support shots; 1 shot keeps the episodes cheap
    acc: Accuracy = evaluate_features(model, feats, class_offsets(clipset), clipset.counts(), clipset.classes,
                                      way, 1, episodes, seed, beta=1.0)["videotext"]
    return {"accuracy": acc.accuracy, "ci95": acc.ci95}
