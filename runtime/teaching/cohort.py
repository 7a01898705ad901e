"""Z-normalised open-set score: how much closer a clip is to an enrolled class than clips of other actions are.

The few-shot distances of CLIP-FSAR are not comparable across classes: a compact class has small OTAM distances to
everything, a spread-out one large distances. A threshold on ``min_c D_c`` or on the calibrated probability
``max_c p_c`` therefore separates known from unknown clips poorly (AUROC 0.58-0.70 on the synthetic test classes).
Score normalisation against an impostor *cohort* (Z-norm, as in speaker verification: Auckenthaler et al., "Score
normalization for text-independent speaker verification systems", DSP 2000) fixes the scale per class: the bundle
stores the frame features of M clips of actions that are not enrolled (``cohort``, the training split's classes by
default), and for every enrolled class c the runtime measures their distances to c's prototype once (mean
``mu_c``, standard deviation ``sd_c``). For a query,

    z_c = (d_c - mu_c) / sd_c,   d_c = D_c (few-shot class)  or  -cos(mean_t f_q, w_c) (zero-shot class)
    known = Phi(-min_c z_c) ** N     (Phi: the standard normal CDF; N: the number of enrolled classes)

``known`` is in [0, 1]: if the z_c of a clip of another action were independent standard normals, ``known`` would be
the probability that such a clip lies farther from every enrolled class than this one (the Sidak correction for
taking the best of N classes), so cohort-like clips score about uniformly, with median about 0.5, whatever N is;
a clip far closer to one class than the cohort scores near 1. Without the power N the score of an unknown clip grows
with the number of classes (the minimum of more z-scores), and a threshold fitted with 10 classes accepted three
times its false-accept rate with 22 (measured). The z_c are correlated, so the correction is approximate: refit
the threshold (``clipfsar calibrate-threshold``) after the classes change to re-measure the rate. ``known`` is what
"unknown" thresholds when the bundle's threshold is on it (manifest ``calibration.threshold.score == "znorm"``);
the label is still the top calibrated probability.

Example:
    >>> cohort = load_cohort(bundle)  # (M, T, D)
    >>> st = bundle.store
    >>> z = ZNorm.fit(query_head.run, cohort, st.prototypes, st.text_features, st.shots)  # once per store
    >>> z.known(distances, cos, st.shots)  # (B,) for a batch of windows' distances (B, N) and cosines (B, N)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.teaching.calibration import video_text_cos

SCORE_NAME = "znorm"
MAX_COHORT_CLIPS = 256
_CHUNK = 32  # cohort clips per query-head call (a Triton server's max batch is larger)


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise."""
    x = np.asarray(x, np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def class_distances(distances: np.ndarray, cos: np.ndarray, shots: np.ndarray) -> np.ndarray:
    """(B, N) distance-like values: ``D_c`` for few-shot classes, ``-cos_c`` for zero-shot ones (``shots == 0``)."""
    zero = np.asarray(shots) == 0
    return np.where(zero[None, :], -np.asarray(cos, np.float64), np.asarray(distances, np.float64))


@dataclass(frozen=True)
class ZNorm:
    """Per-class cohort statistics: ``mu`` and ``sd`` (N,) of the cohort's distances to each class."""
    mu: np.ndarray
    sd: np.ndarray

    @staticmethod
    def from_cohort_distances(distances: np.ndarray, cos: np.ndarray, shots: np.ndarray) -> "ZNorm":
        """Statistics from the cohort's (M, N) distances and video-text cosines to the N classes."""
        d = class_distances(distances, cos, shots)
        if len(d) < 2:
            raise BundleError(f"the open-set cohort needs at least 2 clips, has {len(d)}")
        sd = d.std(axis=0)
        if (sd < 1e-6).any():  # identical cohort clips: no scale to normalise by (a crafted or broken cohort)
            raise BundleError(f"the open-set cohort's distances to class {int(np.argmax(sd < 1e-6))} do not vary "
                              f"(sd {float(sd.min()):.2g}): its clips are identical; rebuild it with `clipfsar "
                              f"calibrate-threshold`")
        return ZNorm(d.mean(axis=0), sd)

    @staticmethod
    def fit(run_query_head: Callable[..., Dict[str, np.ndarray]], cohort: np.ndarray, prototypes: np.ndarray,
            text: np.ndarray, shots: np.ndarray) -> "ZNorm":
        """Run the query head on the cohort (M, T, D) against the classes (prototypes (N, T, D), text (N, D))."""
        dist = []
        for i in range(0, len(cohort), _CHUNK):
            q = np.ascontiguousarray(cohort[i:i + _CHUNK], np.float32)
            dist.append(run_query_head(query=q, prototypes=prototypes, text=text)["distances"])
        return ZNorm.from_cohort_distances(np.concatenate(dist), video_text_cos(cohort, text), shots)

    def z(self, distances: np.ndarray, cos: np.ndarray, shots: np.ndarray) -> np.ndarray:
        """(B, N) z-scores (negative: closer to the class than the cohort is)."""
        return (class_distances(distances, cos, shots) - self.mu) / self.sd

    def known(self, distances: np.ndarray, cos: np.ndarray, shots: np.ndarray) -> np.ndarray:
        """(B,) open-set score in [0, 1]: ``Phi(-min_c z_c) ** N``; higher = more like an enrolled class."""
        z = self.z(distances, cos, shots)
        return _phi(-z.min(axis=-1)) ** z.shape[-1]


def sample_cohort(clips, max_clips: int = MAX_COHORT_CLIPS, seed: int = 0) -> Tuple[np.ndarray, int]:
    """Pick at most ``max_clips`` clips spread evenly over classes from per-class features (list of (n_c, T, D)).

    Returns:
        ((M, T, D) float32 features, number of classes they come from).
    Raises:
        BundleError: fewer than 2 clips in all.
    """
    rng = np.random.default_rng(seed)
    per_class = max(1, -(-max_clips // max(1, len(clips))))
    picked = [c[rng.permutation(len(c))[:per_class]] for c in clips if len(c)]
    feats = np.concatenate(picked) if picked else np.zeros((0,))
    if len(feats) < 2:
        raise BundleError(f"the open-set cohort needs at least 2 clips, got {len(feats)}")
    if len(feats) > max_clips:
        feats = feats[rng.permutation(len(feats))[:max_clips]]
    return np.ascontiguousarray(feats, np.float32), len(picked)


def load_cohort(bundle) -> Optional[np.ndarray]:
    """The bundle's cohort features (M, T, D) float32, or None when it has none (its hash is checked by
    ``Bundle.open``).

    Raises:
        BundleError: an unreadable file, a wrong shape or dtype, NaN or infinite values.
    """
    entry = bundle.manifest.cohort
    if not entry:
        return None
    from safetensors import safe_open
    path = bundle.root / entry["file"]
    try:
        with safe_open(str(path), framework="numpy") as f:
            feats = f.get_tensor("features")
    except Exception as e:  # a truncated or foreign file
        raise BundleError(f"open-set cohort {path} is unreadable: {e}") from e
    facts = bundle.manifest.model
    if feats.dtype != np.float32 or feats.ndim != 3 or feats.shape[1:] != (facts.frames, facts.embed_dim) \
            or len(feats) < 2:
        raise BundleError(f"open-set cohort {path}: features {feats.dtype}{list(feats.shape)}, expected float32 "
                          f"[M >= 2, {facts.frames}, {facts.embed_dim}]")
    if not np.isfinite(feats).all():
        raise BundleError(f"open-set cohort {path}: features hold NaN or infinite values")
    return feats
