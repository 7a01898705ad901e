"""Seeded N-way K-shot episodes: the same seed gives the same episodes on any machine (numpy PCG64)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from clipfsar.runtime.errors import DatasetError


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
