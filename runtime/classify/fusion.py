"""The inference fusion in numpy: ``p = p_vt^beta * p_fs^(1-beta)``, renormalised (same formula as the model)."""
from __future__ import annotations

import numpy as np


def fuse_probs(p_fewshot: np.ndarray, p_videotext: np.ndarray, beta: float) -> np.ndarray:
    """(..., N) branch probabilities -> (..., N) fused probabilities. ``beta = 0`` returns ``p_fewshot``."""
    tiny = np.finfo(np.float32).tiny
    logits = beta * np.log(np.maximum(p_videotext, tiny)) + (1 - beta) * np.log(np.maximum(p_fewshot, tiny))
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)
