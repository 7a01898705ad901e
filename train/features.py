"""Clips to model input and to frame features: decoding in threads, encoding in batches, a safetensors cache."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.bundle.reader import sha256_of
from clipfsar.runtime.video.clips import read_clip
from clipfsar.runtime.video.preprocess import PreprocessConfig, preprocess_frames

from .data import ClipSet
from .episodes import episode_rng


def load_clip_array(path: Path, n_frames: int, frames: int, prep: PreprocessConfig, mode: str = "center",
                    rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Decode, sample and preprocess one clip -> float32 (T, 3, S, S)."""
    return preprocess_frames(read_clip(path, frames, mode, rng, n_frames if n_frames > 0 else None), prep)


class ClipLoader:
    """Loads many clips in parallel threads (OpenCV releases the GIL while decoding)."""

    def __init__(self, prep: PreprocessConfig, frames: int, workers: int = 2):
        self.prep, self.frames = prep, frames
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def load(self, clips: Sequence[Tuple[Path, int]], mode: str = "center",
             rngs: Optional[Sequence[np.random.Generator]] = None) -> torch.Tensor:
        """(path, frame count) pairs -> float32 (B, T, 3, S, S)."""
        rngs = rngs or [None] * len(clips)
        arrays = list(self.pool.map(lambda a: load_clip_array(a[0][0], a[0][1], self.frames, self.prep, mode, a[1]),
                                    zip(clips, rngs)))
        return torch.from_numpy(np.stack(arrays))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def all_clips(clipset: ClipSet) -> List[Tuple[Path, int]]:
    """Every clip of a split, class by class, in the order of ``clipset.classes``."""
    return [c for name in clipset.classes for c in clipset.clips[name]]


def class_offsets(clipset: ClipSet) -> np.ndarray:
    """Index of each class's first clip in ``all_clips`` order."""
    return np.concatenate([[0], np.cumsum(clipset.counts())[:-1]]).astype(int)


@torch.no_grad()
def encode_clips(model, loader: ClipLoader, clips: Sequence[Tuple[Path, int]], mode: str = "center",
                 rngs: Optional[Sequence[np.random.Generator]] = None, batch: int = 16,
                 device: str = "cpu") -> torch.Tensor:
    """Frame features of clips -> float32 (B, T, D), computed in eval mode and in batches."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(clips), batch):
        x = loader.load(clips[i:i + batch], mode, None if rngs is None else rngs[i:i + batch])
        out.append(model.encode_frames(x.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def clip_id(clipset: ClipSet, path: Path) -> str:
    """``<relative path>@<sha256 of the file, 16 hex>``: a cached feature is reused only for the same bytes, so two
    data sets with the same folder names (a family and its cluttered variant) sharing one cache, or a clip
    rewritten in place, never get another clip's features."""
    return f"{Path(path).relative_to(clipset.root).as_posix()}@{sha256_of(Path(path))[:16]}"


def cached_split_features(model, loader: ClipLoader, clipset: ClipSet, cache_file: Path, samplings: int,
                          seed: int, device: str = "cpu") -> torch.Tensor:
    """Frozen-backbone cache: per clip, ``samplings`` samplings (0 = centre, the rest random) -> (S, B, T, D).

    Stored in ``cache_file`` (safetensors) keyed by ``clip_id`` (path and content) and sampling; reused when
    already there.
    """
    clips = all_clips(clipset)
    ids = [clip_id(clipset, p) for p, _ in clips]  # each file read and hashed once
    keys = [[f"{i}#{s}" for i in ids] for s in range(samplings)]
    cache: Dict[str, torch.Tensor] = load_file(str(cache_file)) if Path(cache_file).is_file() else {}
    missing = [(s, i) for s in range(samplings) for i in range(len(clips)) if keys[s][i] not in cache]
    if missing:
        for s in sorted({s for s, _ in missing}):
            idx = [i for t, i in missing if t == s]
            rngs = None if s == 0 else [episode_rng(seed, 1_000_003, s, i) for i in idx]
            feats = encode_clips(model, loader, [clips[i] for i in idx], "center" if s == 0 else "random",
                                 rngs, device=device)
            cache.update({keys[s][i]: f.contiguous() for i, f in zip(idx, feats)})
        with staged_file(Path(cache_file)) as tmp:
            save_file(cache, str(tmp))
    return torch.stack([torch.stack([cache[k] for k in row]) for row in keys])


def feature_fingerprint(model, prep: PreprocessConfig, seed: int) -> str:
    """16 hex digits of sha256 over the image tower's weights, the preprocessing, T and the sampling seed: what a
    cached frame feature depends on (a shared cache file is named by it, so another prior never reuses it)."""
    import dataclasses
    import hashlib
    h = hashlib.sha256(repr((dataclasses.asdict(prep), model.cfg.frames, int(seed))).encode())
    for name, tensor in sorted(model.clip.visual.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
