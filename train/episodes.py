"""Seeded N-way K-shot episodes: the same seed gives the same episodes on any machine (numpy PCG64)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from clipfsar.runtime.base.errors import DatasetError

BRANCHES = ("fewshot", "videotext", "fusion")


@dataclass(frozen=True)
class Episode:
    """Indices of one episode: ``classes`` (N,) into the split's classes; ``support`` (N, K) and ``query``
    (N, Q) into each class's clips. Query labels are the row index (class-major order)."""
    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray


def episode_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by (seed, keys) alone, e.g. ``episode_rng(seed, step, i)``."""
    return np.random.default_rng([int(seed), *map(int, keys)])


def sample_episode(rng: np.random.Generator, clips_per_class: Sequence[int], way: int, shot: int,
                   query: int) -> Episode:
    """Draw ``way`` classes, then ``shot + query`` distinct clips from each."""
    eligible = [i for i, n in enumerate(clips_per_class) if n >= shot + query]
    if len(eligible) < way:
        raise DatasetError(f"a {way}-way {shot}-shot episode with {query} queries needs {way} classes with at "
                           f"least {shot + query} clips; only {len(eligible)} have that many")
    classes = rng.choice(eligible, size=way, replace=False)
    picks = [rng.choice(clips_per_class[c], size=shot + query, replace=False) for c in classes]
    picks_arr = np.stack(picks)  # (N, K+Q)
    return Episode(classes, picks_arr[:, :shot], picks_arr[:, shot:])


def episodes(seed: int, count: int, clips_per_class: Sequence[int], way: int, shot: int,
             query: int) -> List[Episode]:
    """``count`` reproducible episodes: episode i depends on (seed, i) only."""
    return [sample_episode(episode_rng(seed, i), clips_per_class, way, shot, query) for i in range(count)]


@dataclass(frozen=True)
class Accuracy:
    """Mean episode accuracy (percent) and the half-width of its 95% confidence interval."""
    accuracy: float
    ci95: float

    @staticmethod
    def of(per_episode: Sequence[float]) -> "Accuracy":
        a = np.asarray(per_episode, float) * 100
        ci = 1.96 * a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
        return Accuracy(float(a.mean()), float(ci))


def episode_accuracies(probs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Per-episode accuracy from (E, Q, N) probabilities of the three branches; labels are the class row."""
    out = {}
    for branch, key in zip(BRANCHES, ("p_fewshot", "p_videotext", "p")):
        p = probs[key]  # (E, Q, N)
        e, q, n = p.shape
        labels = np.repeat(np.arange(n), q // n)[None]  # (1, Q)
        out[branch] = (p.argmax(-1) == labels).mean(-1)
    return out
