"""Calibration and held-out frames, sampled (seeded) through the runtime's own sampling and preprocessing.

Each clip gives the T frames a deployed stream would sample from it
(``runtime.video.clips.sample_frame_indices``: by time, random TSN offsets from a seeded generator) and they are
preprocessed by ``runtime.preprocess.preprocess_frames``:
calibration sees exactly what the image encoder is fed at run time. Clips are shuffled with the seed, then the
first ones fill the calibration set and the next ones the held-out set, so no held-out frame (not even a frame of
the same clip) was seen by calibration.

Example:
    >>> sets = collect_frames(Path("data/"), bundle.manifest.model, frames=512, holdout=64, seed=0, split="val")
    >>> sets.calibration.pixels.shape   # (512, 3, 224, 224)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from clipfsar.runtime.base.errors import DatasetError, VideoError
from clipfsar.runtime.video.clips import count_frames, frame_times, is_clip, read_frames, sample_frame_indices
from clipfsar.runtime.video.preprocess import preprocess_frames

log = logging.getLogger(__name__)


@dataclass
class FrameSet:
    """Preprocessed frames (n, 3, S, S) float32, clip-major (T consecutive frames per clip), and their origin."""
    pixels: np.ndarray
    clips: List[Dict] = field(default_factory=list)  # {"clip": path relative to the data, "frames": [indices]}

    def per_clip(self, t: int) -> np.ndarray:
        """The frames as clips: (n / T, T, 3, S, S)."""
        return self.pixels.reshape(-1, t, *self.pixels.shape[1:])


@dataclass
class CalibrationFrames:
    calibration: FrameSet
    held_out: FrameSet
    unreadable: List[Tuple[str, str]]  # (clip, reason)


def list_clips(data: Path, split: Optional[str] = None) -> Tuple[List[Tuple[Path, int]], List[Tuple[str, str]]]:
    """(path, decodable frames) of the clips under ``data`` and the unreadable ones with the reason.

    ``split`` reads a dataset root's ``splits/<split>.txt`` (clips already decoded once by ``load_split``); without
    it every clip (video file or frame folder) under ``data`` is used, at any depth.

    Raises:
        DatasetError: ``data`` is not a folder, or the split list is missing or malformed.
    """
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"calibration data {data} is not a folder of videos or a dataset root")
    if split is not None:
        from clipfsar.train.data import load_split
        clipset = load_split(data, split)
        clips = [c for name in clipset.classes for c in clipset.clips[name]]
        return clips, [(str(p), why) for p, why in clipset.unreadable]
    good, bad = [], []
    stack = [data]
    while stack:
        folder = stack.pop()
        for p in sorted(folder.iterdir()):
            if p.name.startswith("."):
                continue
            if is_clip(p):
                try:
                    n = count_frames(p)
                except VideoError as e:
                    bad.append((str(p), str(e)))
                    continue
                (good.append((p, n)) if n > 0 else bad.append((str(p), "no decodable frames")))
            elif p.is_dir():
                stack.append(p)
    return sorted(good), bad


def collect_frames(data: Path, facts, frames: int = 512, holdout: int = 64, seed: int = 0,
                   split: Optional[str] = None) -> CalibrationFrames:
    """Sample ``frames`` calibration frames and ``holdout`` held-out frames (from other clips) under ``data``.

    Args:
        facts: the bundle's ``ModelFacts`` (T and the preprocessing).
        frames, holdout: how many frames each set needs (rounded up to whole clips of T frames).
    Raises:
        DatasetError: fewer readable frames than needed (says how many were found and needed; lists unreadable
            clips), or a clip that fails while its frames are read.
    """
    clips, unreadable = list_clips(data, split)
    for path, why in unreadable:
        log.warning("calibration: skipping unreadable clip %s (%s)", path, why)
    t = facts.frames
    need_calib, need_held = -(-frames // t), -(-holdout // t)  # whole clips
    if frames < 1 or holdout < 1:
        raise DatasetError(f"--frames ({frames}) and the held-out count ({holdout}) must be >= 1")
    if len(clips) < need_calib + need_held:
        listed = "; ".join(f"{Path(p).name}: {why}" for p, why in unreadable[:10])
        raise DatasetError(
            f"calibration data {data}{f' (split {split})' if split else ''}: {len(clips)} readable clips give "
            f"{len(clips) * t} frames ({t} per clip); {frames} calibration + {holdout} held-out frames need "
            f"{(need_calib + need_held) * t} from {need_calib + need_held} clips. Lower --frames or add clips"
            + (f". Unreadable ({len(unreadable)}): {listed}" if unreadable else ""))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    sets = {"calibration": ([], []), "held_out": ([], [])}
    for rank, i in enumerate(order[:need_calib + need_held]):
        path, n = clips[i]
        idx = sample_frame_indices(frame_times(path), n, t, "random", rng)  # by time, as run samples
        try:
            pixels = preprocess_frames(read_frames(path, idx), facts.preprocess)  # (T, 3, S, S)
        except VideoError as e:
            raise DatasetError(f"calibration clip {path} failed while reading frames {idx}: {e}") from e
        arrays, origin = sets["calibration" if rank < need_calib else "held_out"]
        arrays.append(pixels)
        origin.append({"clip": _relative(path, data), "frames": [int(j) for j in idx]})
    made = {k: FrameSet(np.concatenate(a).astype(np.float32), o) for k, (a, o) in sets.items()}
    log.info("calibration: %d frames from %d clips, %d held-out frames from %d other clips (seed %d)",
             len(made["calibration"].pixels), need_calib, len(made["held_out"].pixels), need_held, seed)
    return CalibrationFrames(made["calibration"], made["held_out"], [(p, why) for p, why in unreadable])


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
