"""Procedural action clips: shapes x motions written as real video files, split by class.

Every val/test class combines a shape and a motion that both appear, in other combinations, in the train split.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.video.clips import fourcc_for

from .captions import CAPTIONS_FILE, synth_captions

SHAPES = ("circle", "square", "triangle", "star", "cross")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "rotating clockwise",
           "rotating anticlockwise", "growing", "shrinking", "bouncing")


def class_name(shape: str, motion: str) -> str:
    return f"a {shape} {motion}"


def folder_name(name: str) -> str:
    return name.replace(" ", "_")


def split_classes(seed: int) -> Dict[str, List[str]]:
    """Classes per split: a cyclic Latin design, so each val/test class's shape and motion are seen in train."""
    rng = np.random.default_rng(seed)
    shapes = list(rng.permutation(SHAPES))
    motions = list(rng.permutation(MOTIONS))
    splits: Dict[str, List[str]] = {"train": [], "val": [], "test": []}
    for i, s in enumerate(shapes):
        for j, m in enumerate(motions):
            k = (i + j) % len(shapes)
            split = "test" if k == 0 else "val" if k == 1 else "train"
            splits[split].append(class_name(s, m))
    return {k: sorted(v) for k, v in splits.items()}


def _shape_points(shape: str, radius: float) -> np.ndarray:
    if shape == "square":
        a = np.array([45, 135, 225, 315]) * math.pi / 180
        return np.stack([np.cos(a), np.sin(a)], 1) * radius
    if shape == "triangle":
        a = np.array([-90, 30, 150]) * math.pi / 180
        return np.stack([np.cos(a), np.sin(a)], 1) * radius
    if shape == "star":
        a = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        return np.stack([np.cos(a) * r, np.sin(a) * r], 1)
    if shape == "cross":
        w = radius * 0.35
        pts = [(-w, -radius), (w, -radius), (w, -w), (radius, -w), (radius, w), (w, w), (w, radius),
               (-w, radius), (-w, w), (-radius, w), (-radius, -w), (-w, -w)]
        return np.array(pts, float)
    raise ValueError(shape)


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, radius: float, angle: float,
          colour: Tuple[int, int, int]) -> None:
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if shape == "circle":
        cv2.circle(img, (int(cx), int(cy)), int(radius), colour, -1, cv2.LINE_AA)
    else:
        pts = _shape_points(shape, radius) @ rot.T + (cx, cy)
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour, cv2.LINE_AA)
    # a contrasting marker near the rim makes rotation visible for every shape (a circle too)
    mx, my = np.array([0.0, -radius * 0.6]) @ rot.T + (cx, cy)
    cv2.circle(img, (int(mx), int(my)), max(2, int(radius * 0.22)), tuple(255 - c for c in colour), -1)


def render_clip(shape: str, motion: str, rng: np.random.Generator, size: int = 96,
                length: int = 24) -> List[np.ndarray]:
    """One clip as uint8 BGR frames, with jittered speed, size, start, colour, background and noise."""
    return render_clip_with_facts(shape, motion, rng, size, length)[0]


def render_clip_with_facts(shape: str, motion: str, rng: np.random.Generator, size: int = 96,
                           length: int = 24) -> Tuple[List[np.ndarray], Dict[str, object]]:
    """``render_clip`` plus what was drawn: ``colour`` (B, G, R), ``radius_frac`` (radius / size), ``speed``."""
    # a dark, slightly tinted background and a bright object: colour varies, contrast stays
    bg = rng.integers(20, 90) + rng.integers(-15, 16, 3)
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    radius = size * rng.uniform(0.10, 0.16)
    speed = rng.uniform(0.6, 1.4)
    travel = size * 0.45 * speed  # pixels covered over the clip by translations
    cx0, cy0 = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.65)
    angle0 = rng.uniform(0, 2 * math.pi)
    noise = rng.uniform(2, 10)
    frames = []
    for i in range(length):
        u = i / max(1, length - 1)  # 0 .. 1 over the clip
        cx, cy, r, ang = cx0, cy0, radius, angle0
        if motion == "moving left":
            cx = cx0 + travel * (0.5 - u)
        elif motion == "moving right":
            cx = cx0 - travel * (0.5 - u)
        elif motion == "moving up":
            cy = cy0 + travel * (0.5 - u)
        elif motion == "moving down":
            cy = cy0 - travel * (0.5 - u)
        elif motion == "rotating clockwise":
            ang = angle0 + 2.2 * math.pi * speed * u
        elif motion == "rotating anticlockwise":
            ang = angle0 - 2.2 * math.pi * speed * u
        elif motion == "growing":
            r = radius * (0.6 + 1.2 * u * speed)
        elif motion == "shrinking":
            r = radius * (0.6 + 1.2 * (1 - u) * speed)
        elif motion == "bouncing":
            cy = cy0 + size * 0.25 - abs(math.sin(2 * math.pi * u * speed)) * size * 0.4
        img = np.empty((size, size, 3), np.uint8)
        img[:] = bg
        _draw(img, shape, cx, cy, r, ang, colour)
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
    return frames, {"colour": colour, "radius_frac": radius / size, "speed": speed}


def write_video(path: Path, frames: List[np.ndarray], fps: float = 12.0) -> None:
    """Write uint8 BGR frames as a video (codec from the extension: .mp4 mp4v, .avi MJPG, .webm VP80)."""
    fourcc = fourcc_for(path)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise ClipFsarError(f"cannot open a video writer for {path} ({fourcc})")
    try:
        for f in frames:
            writer.write(f)
    finally:
        writer.release()


def make_dataset(out: Path, seed: int = 0, clips_per_class: int = 20, size: int = 96, length: int = 24,
                 fps: float = 12.0, ext: str = ".mp4") -> Dict[str, List[str]]:
    """Write the synthetic dataset: ``OUT/<class_folder>/<clip>.mp4``, ``OUT/splits/{train,val,test}.txt`` and
    ``OUT/captions.txt`` (``class_folder/clip<TAB>caption`` rows, several per clip: the class name in the default
    prompt and variations naming shape, colour, size, motion, direction and speed; see ``captions.synth_captions``).

    Example:
        >>> make_dataset(Path("synth"), seed=0, clips_per_class=10)
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ClipFsarError(f"output folder {out} exists and is not empty; choose a new one")
    splits = split_classes(seed)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    captions: List[str] = []
    for split_idx, (split, names) in enumerate(splits.items()):
        for class_idx, name in enumerate(names):
            shape, motion = name[2:].split(" ", 1)
            folder = out / folder_name(name)
            folder.mkdir()
            rng = np.random.default_rng([seed, split_idx, class_idx])
            for c in range(clips_per_class):
                frames, facts = render_clip_with_facts(shape, motion, rng, size, length)
                write_video(folder / f"{c:04d}{ext}", frames, fps)
                caption_rng = np.random.default_rng([seed, split_idx, class_idx, c, 1])  # not the clip's stream
                captions += [f"{folder.name}/{c:04d}{ext}\t{t}\n"
                             for t in synth_captions(shape, motion, facts, caption_rng)]
        (out / "splits" / f"{split}.txt").write_text("".join(folder_name(n) + "\n" for n in names))
    (out / CAPTIONS_FILE).write_text("".join(captions))
    return splits
