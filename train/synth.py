"""Procedural action clips in two families, written as real video files, split by class, with captions.

* ``motion`` (the Something-Something analogue): classes are shape x motion ("a circle moving left"); the
  background is plain and dark, so only the motion tells two classes of one shape apart.
* ``appearance`` (the Kinetics / UCF / HMDB analogue): classes are shape x scene ("a circle on grass"); each clip's
  object moves with a random motion (motion is irrelevant to the class), so what is in the frames defines it.

With ``clutter`` (the ablation's ``appearance-clutter`` and ``motion-clutter``), every clip shows more than its
class, as real clips do: appearance, a band of another scene over that share of every frame (the class scene stays
the majority); motion, another shape doing another motion behind the class object. One support clip then no
longer shows its class alone, which is where the paper's text token is meant to help.

Both use the same split design: a cyclic Latin square over the two factors, so every val/test class's two factors
are seen in train, never together (``split_classes``). Besides the videos, ``make_dataset`` writes what was drawn as
captions (``captions.txt``): clip rows (class name and variations, ``captions.synth_captions``) and one row per frame
that states the frame's true state (shape, colour, size, position, orientation, background or scene;
``captions.frame_caption``), as CLIP learned from alt-texts.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError, ConfigError
from clipfsar.runtime.video.clips import fourcc_for

from .captions import CAPTIONS_FILE, frame_caption, synth_captions

SHAPES = ("circle", "square", "triangle", "star", "cross")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "rotating clockwise",
           "rotating anticlockwise", "growing", "shrinking", "bouncing")
# appearance family: where the object is; the phrase is what the class name and the captions say
SCENES = ("on grass", "in the sky", "on sand", "on bricks", "on water", "in snow", "on a checkerboard",
          "on stripes", "at night")
FAMILIES = ("motion", "appearance")
CLUTTER = 0.4  # the *-clutter families: appearance, a band of another scene over 0.35 .. 0.45 of the frame
FACTS_FILE = "synth.json"  # OUT/synth.json: family, factors of every class (what a benchmark or the demo reads)


def class_name(shape: str, factor: str) -> str:
    """``a {shape} {motion}`` (motion family) or ``a {shape} {scene}`` (appearance family)."""
    return f"a {shape} {factor}"


def class_factors(name: str) -> Tuple[str, str]:
    """``"a star on grass"`` -> ``("star", "on grass")``: the shape and the second factor of a synthetic class."""
    shape, factor = name[2:].split(" ", 1)
    return shape, factor


def family_of(name: str) -> str:
    """The family a synthetic class name belongs to (``motion`` or ``appearance``)."""
    return "appearance" if class_factors(name)[1] in SCENES else "motion"


def folder_name(name: str) -> str:
    return name.replace(" ", "_")


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ConfigError(f"unknown synthetic family '{family}'; choose one of {', '.join(FAMILIES)}")


def split_classes(seed: int, family: str = "motion") -> Dict[str, List[str]]:
    """Classes per split: a cyclic Latin design over shape x (motion | scene): class (i, j) goes to test when
    ``(i + j) % 5 == 0``, val when 1, train otherwise, so each val/test class's two factors are in train (in other
    pairs) and no val/test pair is. 9 test, 9 val, 27 train classes for both families."""
    _check_family(family)
    rng = np.random.default_rng(seed)
    shapes = list(rng.permutation(SHAPES))
    second = list(rng.permutation(MOTIONS if family == "motion" else SCENES))
    splits: Dict[str, List[str]] = {"train": [], "val": [], "test": []}
    for i, s in enumerate(shapes):
        for j, m in enumerate(second):
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
          colour: Tuple[int, int, int], outline: bool = False) -> None:
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if shape == "circle":
        if outline:
            cv2.circle(img, (int(cx), int(cy)), int(radius) + 1, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(img, (int(cx), int(cy)), int(radius), colour, -1, cv2.LINE_AA)
    else:
        pts = np.round(_shape_points(shape, radius) @ rot.T + (cx, cy)).astype(np.int32)
        if outline:
            cv2.polylines(img, [pts], True, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    # a contrasting marker near the rim makes rotation visible for every shape (a circle too)
    mx, my = np.array([0.0, -radius * 0.6]) @ rot.T + (cx, cy)
    cv2.circle(img, (int(mx), int(my)), max(2, int(radius * 0.22)), tuple(255 - c for c in colour), -1)


# ----- scenes (appearance family) ---------------------------------------------------------------------------------
def _scene(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` BGR uint8 background for ``scene``, with jittered tint, scale and phase."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size  # 0 .. 1
    j = lambda lo, hi: float(rng.uniform(lo, hi))
    tint = rng.integers(-12, 13, 3)
    ph, sc = j(0, 2 * math.pi), j(0.8, 1.25)
    if scene == "on grass":  # green, vertical blades
        blades = np.sin(x * 60 * sc + ph + 2 * np.sin(y * 7)) * 0.5 + 0.5
        base = np.stack([30 + 10 * blades, 90 + 50 * blades, 30 + 15 * blades], -1)
    elif scene == "in the sky":  # blue gradient with soft clouds
        clouds = np.clip(np.sin(x * 9 * sc + ph) * np.sin(y * 5 * sc + 1.3 * ph) - 0.3, 0, 1)
        base = np.stack([200 - 60 * y + 40 * clouds, 130 - 40 * y + 70 * clouds, 60 - 20 * y + 110 * clouds], -1)
    elif scene == "on sand":  # beige with fine grain
        grain = rng.normal(0, 14, (size, size))
        base = np.stack([110 + grain, 165 + grain, 195 + grain], -1)
    elif scene == "on bricks":  # red-brown bricks, grey mortar
        rows = (y * 8 * sc + ph).astype(int)
        cols = (x * 4 * sc + 0.5 * (rows % 2)).astype(int)
        mortar = (np.modf(y * 8 * sc + ph)[0] < 0.15) | (np.modf(x * 4 * sc + 0.5 * (rows % 2))[0] < 0.08)
        shade = ((rows * 7 + cols * 3) % 5) * 6.0
        base = np.stack([40 + shade, 55 + shade, 140 + shade], -1)
        base[mortar] = (150, 150, 150)
    elif scene == "on water":  # blue-cyan horizontal waves
        waves = np.sin(y * 40 * sc + 3 * np.sin(x * 6 + ph)) * 0.5 + 0.5
        base = np.stack([150 + 50 * waves, 100 + 40 * waves, 20 + 10 * waves], -1)
    elif scene == "in snow":  # pale grey-white with flakes
        base = np.full((size, size, 3), 215.0) - 40 * y[..., None]
        flakes = rng.random((size, size)) < 0.03
        base[flakes] = 255
    elif scene == "on a checkerboard":  # grey checks
        cell = ((x * 6 * sc + ph).astype(int) + (y * 6 * sc + ph).astype(int)) % 2
        base = np.repeat((60 + 90 * cell)[..., None], 3, -1).astype(np.float32)
    elif scene == "on stripes":  # purple diagonal stripes
        s = (np.sin((x + y) * 25 * sc + ph) > 0).astype(np.float32)
        base = np.stack([120 + 60 * s, 40 + 20 * s, 110 + 50 * s], -1)
    elif scene == "at night":  # dark navy with small stars
        base = np.stack([55 - 20 * y, 20 - 8 * y, 15 - 5 * y], -1)
        stars = rng.random((size, size)) < 0.012
        base[stars] = (230, 230, 230)
    else:
        raise ValueError(scene)
    return np.clip(base + tint, 0, 255).astype(np.uint8)


# ----- clips --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameState:
    """What one frame shows: the object's ``shape``, ``colour`` (B, G, R), ``radius_frac`` (radius / frame size),
    centre ``x``, ``y`` (0 .. 1 of the frame, y down), ``angle`` (radians, the marker's direction from "up",
    clockwise), and the ``background`` phrase (``on a dark background`` or the scene)."""
    shape: str
    colour: Tuple[int, int, int]
    radius_frac: float
    x: float
    y: float
    angle: float
    background: str


def render_clip(shape: str, motion: str, rng: np.random.Generator, size: int = 96,
                length: int = 24) -> List[np.ndarray]:
    """One motion-family clip as uint8 BGR frames, with jittered speed, size, start, colour, background, noise."""
    return render_clip_with_facts(shape, motion, rng, size, length)[0]


def _distractor_band(img: np.ndarray, scene: str, clutter: float, rng: np.random.Generator) -> str:
    """Cover one side of ``img`` (in place) with a band of another scene, ``clutter`` +- 0.05 of the frame wide;
    returns that scene's phrase."""
    size = img.shape[0]
    others = [s for s in SCENES if s != scene]
    other = others[int(rng.integers(len(others)))]
    band = _scene(other, size, rng)
    w = int(round(size * rng.uniform(clutter - 0.05, clutter + 0.05)))
    side = int(rng.integers(4))  # left, right, top, bottom
    region = [np.s_[:, :w], np.s_[:, size - w:], np.s_[:w], np.s_[size - w:]][side]
    img[region] = band[region]
    return other


def _pose(motion: str, u: float, cx0: float, cy0: float, radius: float, angle0: float, speed: float,
          size: int) -> Tuple[float, float, float, float]:
    """Centre x, y (pixels), radius and angle (radians) of an object doing ``motion`` at ``u`` (0 .. 1 of the clip),
    from its start ``cx0``, ``cy0``, ``radius``, ``angle0`` and ``speed`` (0.6 .. 1.4)."""
    cx, cy, r, ang = cx0, cy0, radius, angle0
    travel = size * 0.45 * speed  # pixels covered over the clip by translations
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
    return cx, cy, r, ang


def _distractor_object(shape: str, motion: str, size: int, rng: np.random.Generator) -> Dict[str, object]:
    """Another shape doing another motion (the motion family's clutter): shape, motion, colour, radius (pixels),
    speed, start centre and angle, drawn like the class object's."""
    return {"shape": [s for s in SHAPES if s != shape][int(rng.integers(len(SHAPES) - 1))],
            "motion": [m for m in MOTIONS if m != motion][int(rng.integers(len(MOTIONS) - 1))],
            "colour": tuple(int(c) for c in rng.integers(150, 256, 3)), "radius": size * rng.uniform(0.10, 0.16),
            "speed": rng.uniform(0.6, 1.4), "cx0": size * rng.uniform(0.25, 0.75),
            "cy0": size * rng.uniform(0.25, 0.75), "angle0": rng.uniform(0, 2 * math.pi)}


def render_clip_with_facts(shape: str, motion: str, rng: np.random.Generator, size: int = 96,
                           length: int = 24, scene: str = "",
                           clutter: float = 0.0) -> Tuple[List[np.ndarray], Dict[str, object]]:
    """``render_clip`` plus what was drawn: ``colour`` (B, G, R), ``radius_frac`` (radius / size), ``speed``,
    ``motion`` and ``frames`` (a ``FrameState`` per frame, of the class object). With ``scene`` (appearance family)
    the object is drawn outlined on that scene instead of a plain dark background. ``clutter`` > 0 adds what else
    a real clip shows (``distractor`` in the facts): with a scene, a band of another scene over ``clutter`` +- 0.05
    of one side of the frame; without, another shape doing another motion, drawn behind the class object.
    ``clutter=0`` draws nothing more, so the clean families' clips stay bit for bit."""
    # a dark, slightly tinted background and a bright object: colour varies, contrast stays
    bg = rng.integers(20, 90) + rng.integers(-15, 16, 3)
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    radius = size * rng.uniform(0.10, 0.16)
    speed = rng.uniform(0.6, 1.4)
    cx0, cy0 = size * rng.uniform(0.35, 0.65), size * rng.uniform(0.35, 0.65)
    angle0 = rng.uniform(0, 2 * math.pi)
    noise = rng.uniform(2, 10)
    background = _scene(scene, size, rng) if scene else None
    band_scene = _distractor_band(background, scene, clutter, rng) if clutter and scene else ""
    other = _distractor_object(shape, motion, size, rng) if clutter and not scene else None
    frames, states = [], []
    for i in range(length):
        u = i / max(1, length - 1)  # 0 .. 1 over the clip
        cx, cy, r, ang = _pose(motion, u, cx0, cy0, radius, angle0, speed, size)
        if background is None:
            img = np.empty((size, size, 3), np.uint8)
            img[:] = bg
        else:
            img = background.copy()
        if other:
            o = other
            dx, dy, dr, dang = _pose(o["motion"], u, o["cx0"], o["cy0"], o["radius"], o["angle0"], o["speed"], size)
            _draw(img, o["shape"], dx, dy, dr, dang, o["colour"])
        _draw(img, shape, cx, cy, r, ang, colour, outline=background is not None)
        img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
        states.append(FrameState(shape, colour, r / size, cx / size, cy / size, ang % (2 * math.pi),
                                 scene or "on a dark background"))
    facts = {"colour": colour, "radius_frac": radius / size, "speed": speed, "motion": motion, "frames": states}
    if clutter:
        facts["distractor"] = band_scene or class_name(other["shape"], other["motion"])
    return frames, facts


def render_class_clip(name: str, rng: np.random.Generator, size: int = 96, length: int = 24,
                      clutter: float = 0.0) -> Tuple[List[np.ndarray], Dict[str, object]]:
    """A clip of synthetic class ``name`` of either family (appearance: a random motion, ``clutter`` as in
    ``render_clip_with_facts``) and what was drawn."""
    shape, factor = class_factors(name)
    if factor in SCENES:
        motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
        return render_clip_with_facts(shape, motion, rng, size, length, scene=factor, clutter=clutter)
    return render_clip_with_facts(shape, factor, rng, size, length, clutter=clutter)


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


def _check_new_folder(out: Path) -> None:
    """Raise ``ClipFsarError`` unless ``out`` is absent or an empty folder (a file, or a path under one, too)."""
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise ClipFsarError(f"output folder {out}: {parent} is a file, not a folder; choose a new one")
    if out.exists() and any(out.iterdir()):
        raise ClipFsarError(f"output folder {out} exists and is not empty; choose a new one")


def make_dataset(out: Path, seed: int = 0, clips_per_class: int = 20, size: int = 96, length: int = 24,
                 fps: float = 12.0, ext: str = ".mp4", family: str = "motion",
                 frame_captions: bool = True, clutter: float = 0.0) -> Dict[str, List[str]]:
    """Write a synthetic dataset of ``family`` (``motion`` or ``appearance``, module docstring):
    ``OUT/<class_folder>/<clip>.mp4``, ``OUT/splits/{train,val,test}.txt``, ``OUT/synth.json`` (family, factors
    of each class) and ``OUT/captions.txt``: ``class_folder/clip<TAB>caption`` clip rows (several per clip, see
    ``captions.synth_captions``) and, with ``frame_captions``, ``class_folder/clip<TAB>frame<TAB>caption`` rows,
    one per frame, saying what that frame shows (``captions.frame_caption``; with ``clutter`` it names the class
    scene, the frame's majority). ``clutter`` (0, or 0.05 < clutter < 0.45): the distractor band or object of
    ``render_clip_with_facts``; ``synth.json`` records it.

    Raises:
        ConfigError: an unknown family, or clutter out of range (``check_clutter``).

    Example:
        >>> make_dataset(Path("synth"), seed=0, clips_per_class=10, family="appearance", clutter=CLUTTER)
    """
    _check_family(family)
    check_clutter(clutter, family)
    clutter = float(clutter) + 0.0  # -0.0 is 0
    out = Path(out)
    _check_new_folder(out)
    splits = split_classes(seed, family)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    captions: List[str] = []
    for split_idx, (split, names) in enumerate(splits.items()):
        for class_idx, name in enumerate(names):
            folder = out / folder_name(name)
            folder.mkdir()
            rng = np.random.default_rng([seed, split_idx, class_idx])
            for c in range(clips_per_class):
                frames, facts = render_class_clip(name, rng, size, length, clutter)
                rel = f"{folder.name}/{c:04d}{ext}"
                write_video(folder / f"{c:04d}{ext}", frames, fps)
                caption_rng = np.random.default_rng([seed, split_idx, class_idx, c, 1])  # not the clip's stream
                captions += [f"{rel}\t{t}\n" for t in synth_captions(*class_factors(name), facts, caption_rng)]
                if frame_captions:
                    captions += [f"{rel}\t{i}\t{frame_caption(s, caption_rng)}\n"
                                 for i, s in enumerate(facts["frames"])]
        (out / "splits" / f"{split}.txt").write_text("".join(folder_name(n) + "\n" for n in names))
    (out / CAPTIONS_FILE).write_text("".join(captions))
    facts = {"family": family, "seed": seed, "clutter": clutter, "splits": splits,
             "factors": {n: dict(zip(("shape", "motion" if family == "motion" else "scene"), class_factors(n)))
                         for names in splits.values() for n in names}}
    (out / FACTS_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    return splits


def check_clutter(clutter: float, family: str) -> None:
    """Raise ``ConfigError`` unless ``clutter`` is 0 or in (0.05, 0.45): the appearance family's band is ``clutter``
    +- 0.05 wide, so it is never empty and the class scene stays the majority of the frame; for the motion family
    any value in the range adds the one distractor object (its size does not depend on it)."""
    _check_family(family)
    if clutter == 0:
        return
    if not 0.05 < clutter < 0.45:
        raise ConfigError(f"clutter must be 0, or between 0.05 and 0.45 (exclusive; appearance: the share of the "
                          f"frame); got {clutter}")


def shares_a_factor(a: str, b: str) -> bool:
    """Whether two synthetic classes have the same shape or the same motion / scene."""
    fa, fb = class_factors(a), class_factors(b)
    return fa[0] == fb[0] or fa[1] == fb[1]




def make_prior_dataset(out: Path, seed: int = 0, clips_per_class: int = 20, size: int = 96, length: int = 24,
                       fps: float = 12.0) -> Path:
    """The pretraining set of the shipped prior: both families under ``OUT/motion`` and ``OUT/appearance``
    (``make_dataset`` with ``seed``) and ``OUT/captions.txt`` holding the clip and frame rows of their *train*
    splits only (paths ``<family>/<class_folder>/<clip>``), so the prior never sees a val or test class.
    ``clipfsar pretrain --data OUT`` reads it (OUT has no split lists: every row is used). Returns OUT.
    """
    out = Path(out)
    _check_new_folder(out)
    rows: List[str] = []
    for family in FAMILIES:
        splits = make_dataset(out / family, seed, clips_per_class, size, length, fps, family=family)
        train = {folder_name(n) for n in splits["train"]}
        rows += [f"{family}/{line}\n" for line in (out / family / CAPTIONS_FILE).read_text().splitlines()
                 if line.split("/", 1)[0] in train]
    (out / CAPTIONS_FILE).write_text("".join(rows))
    return out
