"""Captions for contrastive pretraining: the ``path<TAB>caption`` file format, and captions of synthetic clips.

A captions file has one row per line, of two kinds:

* ``path<TAB>caption``: a caption of a whole clip (or of an image);
* ``path<TAB>frame<TAB>caption``: a caption of one frame of a clip, ``frame`` its 0-based index among the clip's
  decoded frames (what that frame shows, as CLIP's alt-texts say what an image shows).

A clip or frame may have several rows (one caption is drawn per step). Paths are relative to the file's dataset
folder (or absolute) and name a video, a folder of frames or an image. Empty lines and lines starting with ``#``
are skipped.

Example:
    a_circle_moving_left/0000.mp4<TAB>a photo of a circle moving left
    a_circle_moving_left/0000.mp4<TAB>a small pink circle sliding leftwards, quickly
    a_circle_moving_left/0000.mp4<TAB>0<TAB>a small pink circle at the right, pointing up, on a dark background
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError, DatasetError
from clipfsar.runtime.video.clips import IMAGE_EXTS, count_frames, is_clip

log = logging.getLogger(__name__)

CAPTIONS_FILE = "captions.txt"


class CaptionsError(DatasetError):
    """A captions file is unusable: a bad row (named by file and line) or no usable rows at all."""


@dataclass(frozen=True)
class CaptionRow:
    path: Path      # the clip or image, resolved
    caption: str
    line: int       # 1-based line number in the captions file
    frame: Optional[int] = None  # a frame row: the 0-based frame index; None: a caption of the whole clip


def is_image(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() in IMAGE_EXTS


def read_captions(file: Path, root: Optional[Path] = None,
                  token_count: Optional[Callable[[str], int]] = None, context_length: int = 0,
                  keep: Optional[Callable[[Path], bool]] = None) -> List[CaptionRow]:
    """Read and validate a captions file.

    Args:
        file: the ``path<TAB>caption`` file.
        root: folder relative paths are read from (default: the file's folder).
        token_count: tokens a caption needs, start and end included; with ``context_length``, longer captions are
            refused (CLIP would silently cut them).
        keep: rows whose resolved path it rejects are skipped (e.g. clips outside the train split); it is called
            before the path is looked at on disk, so skipped clips are never touched.
    Returns:
        the kept rows, in file order.
    Raises:
        CaptionsError: missing file; a line with other than 2 or 3 tab-separated columns; an empty path or
            caption; a path that is not a clip or image; a frame index that is not an integer or that the clip
            does not have (it has fewer frames); a caption longer than the context; no usable rows. The message
            names the file and the line.
    """
    file = Path(file)
    if not file.is_file():
        raise CaptionsError(f"captions file not found: {file}")
    root = Path(root) if root is not None else file.parent
    rows: List[CaptionRow] = []
    skipped = 0
    frame_counts: Dict[Path, int] = {}
    try:
        text = file.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not part of row 1
    except UnicodeDecodeError as e:
        raise CaptionsError(f"captions file {file} is not UTF-8 text: {e}") from e
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{file}, line {n}"
        cols = line.split("\t")
        if len(cols) not in (2, 3):
            raise CaptionsError(f"{where}: expected 2 or 3 tab-separated columns (path<TAB>caption or "
                                f"path<TAB>frame<TAB>caption), found {len(cols)}")
        rel, caption = cols[0].strip(), cols[-1].strip()
        frame = _frame_index(cols[1], where) if len(cols) == 3 else None
        if not rel:
            raise CaptionsError(f"{where}: the path is empty")
        if not caption:
            raise CaptionsError(f"{where}: the caption of '{rel}' is empty")
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        if keep is not None and not keep(path):
            skipped += 1
            continue
        if not path.exists():
            raise CaptionsError(f"{where}: clip '{rel}' not found (looked for {path})")
        if not (is_clip(path) or is_image(path)):
            raise CaptionsError(f"{where}: '{rel}' is neither a video, a folder of frames nor an image")
        if frame is not None:
            if path not in frame_counts:
                frame_counts[path] = _frame_count(path, where)
            if frame >= frame_counts[path]:
                raise CaptionsError(f"{where}: frame {frame} of '{rel}' does not exist: the clip has "
                                    f"{frame_counts[path]} frame(s) (frames are numbered from 0)")
        if token_count is not None and context_length:
            need = token_count(caption)
            if need > context_length:
                raise CaptionsError(f"{where}: the caption needs {need} tokens; the text encoder's context holds "
                                    f"{context_length} (shorten it)")
        rows.append(CaptionRow(path.resolve(), caption, n, frame))
    if skipped and rows:  # said, so a misspelt class folder is not dropped in silence
        log.warning("%s: %d of %d rows skipped: their clips are outside the split used (or misspelt)", file, skipped,
                    skipped + len(rows))
    if not rows:
        why = f" ({skipped} rows name clips outside the split used)" if skipped else ""
        raise CaptionsError(f"captions file {file} has no usable rows{why}")
    return rows


def _frame_index(text: str, where: str) -> int:
    try:
        frame = int(text.strip())
    except ValueError:
        raise CaptionsError(f"{where}: the frame column must be a 0-based frame index; got '{text.strip()}'") from None
    if frame < 0:
        raise CaptionsError(f"{where}: the frame index must be >= 0; got {frame}")
    return frame


def _frame_count(path: Path, where: str) -> int:
    if is_image(path):
        return 1
    try:
        return count_frames(path)
    except ClipFsarError as e:
        raise CaptionsError(f"{where}: cannot count the frames of {path}: {e}") from e


def group_by_clip(rows: Sequence[CaptionRow]) -> Tuple[List[Path], List[List[str]]]:
    """Clip rows (frame rows are left out) -> (clips in first-seen order, captions of each clip)."""
    caps: Dict[Path, List[str]] = {}
    for r in rows:
        if r.frame is None:
            caps.setdefault(r.path, []).append(r.caption)
    return list(caps), list(caps.values())


def group_by_item(rows: Sequence[CaptionRow]) -> Tuple[List[Tuple[Path, Optional[int]]], List[List[str]]]:
    """Rows -> (items in first-seen order, captions of each item); an item is ``(path, frame)``, ``frame`` None
    for a caption of the whole clip."""
    caps: Dict[Tuple[Path, Optional[int]], List[str]] = {}
    for r in rows:
        caps.setdefault((r.path, r.frame), []).append(r.caption)
    return list(caps), list(caps.values())


def split_clip_filter(root: Path, split: str) -> Optional[Callable[[Path], bool]]:
    """A ``keep`` filter for ``read_captions``: clips of the dataset's split ``split``.

    Reads ``root/splits/<split>.txt`` (class names or ``class/clip`` rows, as ``load_split``) without opening any
    clip. Returns None when the dataset has no split lists (every row is used).
    """
    from .data import display_name
    lst = Path(root) / "splits" / f"{split}.txt"
    if not lst.is_file():
        if (Path(root) / "splits").is_dir():
            raise CaptionsError(f"split list not found: {lst}")
        return None
    from .data import _find_clip, class_folders
    from .splits import parse_split
    folders = class_folders(Path(root))
    keys = {k: name for name, p in folders.items() for k in (p.name, name)}
    classes: Set[str] = set()
    clips: Set[Tuple[str, str]] = set()
    # every split form load_split reads (BOM, official CLIP-FSAR paths, MMAction2 lines, backslashes)
    for e in parse_split(lst, lambda c: keys.get(c) or keys.get(display_name(c)),
                         lambda name, clip: _find_clip(folders[name], clip) is not None):
        if e.clip is not None:
            clips.add((e.folder, e.clip.stem))
        else:
            classes.add(e.folder)
    root_abs = Path(root).resolve()

    def keep(path: Path) -> bool:
        try:
            rel = Path(path).resolve().relative_to(root_abs)
        except ValueError:
            return False  # outside the dataset folder: not in any split
        if len(rel.parts) < 2:
            return False
        cls = display_name(rel.parts[0])
        return cls in classes or (cls, Path(rel.parts[1]).stem) in clips

    return keep


# ----- captions of the synthetic clips ------------------------------------------------------------------------
MOTION_WORDS = {
    "moving left": ("moving left", "moving to the left", "sliding leftwards", "travelling from right to left"),
    "moving right": ("moving right", "moving to the right", "sliding rightwards", "travelling from left to right"),
    "moving up": ("moving up", "rising", "sliding upwards", "travelling from bottom to top"),
    "moving down": ("moving down", "falling", "sliding downwards", "travelling from top to bottom"),
    "rotating clockwise": ("rotating clockwise", "spinning clockwise", "turning clockwise"),
    "rotating anticlockwise": ("rotating anticlockwise", "spinning anticlockwise", "turning anticlockwise"),
    "growing": ("growing", "getting bigger", "expanding", "swelling"),
    "shrinking": ("shrinking", "getting smaller", "contracting", "dwindling"),
    "bouncing": ("bouncing", "bouncing up and down", "hopping", "jumping up and down"),
}


def colour_name(bgr: Sequence[int]) -> str:
    """A word for a light BGR colour (the generator draws channels in 150..255): its hue, or white when grey."""
    import cv2
    h, s, _ = cv2.cvtColor(np.uint8([[list(bgr)]]), cv2.COLOR_BGR2HSV)[0, 0]  # h in 0..179
    if s < 40:
        return "white"
    hue = float(h) * 2  # degrees
    for limit, name in ((15, "red"), (40, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"),
                        (255, "blue"), (290, "purple"), (335, "pink"), (360, "red")):
        if hue < limit:
            return name
    return "red"


def _size_word(radius_frac: float) -> str:
    return "small" if radius_frac < 0.12 else "large" if radius_frac > 0.14 else ""


def synth_captions(shape: str, factor: str, facts: Dict[str, object], rng: np.random.Generator,
                   n: int = 4) -> List[str]:
    """Captions of one synthetic clip: the class name in the default prompt, then ``n - 1`` variations that say
    the shape, colour, size, motion, direction, speed and, in the appearance family, the scene in other words.

    Args:
        factor: the class's motion (motion family) or scene (appearance family: ``facts["motion"]`` is then the
            clip's own, irrelevant motion).
        facts: what the renderer drew: ``colour`` (B, G, R), ``radius_frac`` (radius / frame size), ``speed``.
    Example:
        >>> synth_captions("circle", "moving left", {"colour": (200, 160, 240), "radius_frac": .1, "speed": 1.3},
        ...                np.random.default_rng(0))[0]
        'a photo of a circle moving left'
    """
    colour = colour_name(facts["colour"])
    size = _size_word(float(facts["radius_frac"]))
    speed = "slowly" if facts["speed"] < 0.85 else "quickly" if facts["speed"] > 1.15 else ""
    motion = factor if factor in MOTION_WORDS else str(facts.get("motion", ""))
    scene = "" if factor in MOTION_WORDS else factor
    words = MOTION_WORDS.get(motion, ("",))
    if scene:
        templates = (
            "a {colour} {shape} {scene}",
            "a {size} {colour} {shape} {scene}",
            "a video of a {shape} {scene}",
            "a photo of a {colour} {shape} {scene}",
            "a {shape} {motion} {scene}",
            "the {colour} {shape} is {scene}",
        )
    else:
        templates = (
            "a {colour} {shape} {motion}",
            "a {size} {colour} {shape} {motion} {speed}",
            "a video of a {shape} {motion}",
            "a photo of a {colour} {shape} {motion}",
            "a {shape} {motion} {speed} on a dark background",
            "the {colour} {shape} is {motion}",
        )
    out = [f"a photo of a {shape} {factor}"]
    for i in rng.permutation(len(templates))[:max(0, n - 1)]:
        text = templates[i].format(colour=colour, size=size, shape=shape, speed=speed, scene=scene,
                                   motion=words[int(rng.integers(len(words)))])
        out.append(" ".join(text.split()))  # empty slots leave no double spaces
    return list(dict.fromkeys(out))  # without repeats (a template with empty slots can equal another)


_DIRECTIONS = ("up", "up and right", "right", "down and right", "down", "down and left", "left", "up and left")


def position_words(x: float, y: float) -> str:
    """Where a point (``x``, ``y`` in 0..1 of the frame, y down) is, in a 3 x 3 grid: ``at the top left`` ...
    ``in the centre``."""
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    where = " ".join(w for w in (row, col) if w)
    return f"at the {where}" if where else "in the centre"


def direction_word(angle: float) -> str:
    """The nearest of 8 compass directions of an angle in radians clockwise from up (y down): ``up``, ``up and
    right``, ..."""
    return _DIRECTIONS[int(round((angle % (2 * math.pi)) / (math.pi / 4))) % 8]


def frame_caption(state, rng: Optional[np.random.Generator] = None) -> str:
    """What one synthetic frame shows (``synth.FrameState``): shape, colour, size, position, orientation and the
    background or scene, in one of a few word orders (``rng`` picks; None: the first).

    Example:
        >>> frame_caption(FrameState("star", (40, 40, 230), 0.1, 0.2, 0.8, 0.0, "on grass"))
        'a small red star at the bottom left, pointing up, on grass'
    """
    colour = colour_name(state.colour)
    size = _size_word(state.radius_frac)
    where = position_words(state.x, state.y)
    facing = f"pointing {direction_word(state.angle)}"
    thing = " ".join(w for w in (size, colour, state.shape) if w)
    templates = (
        f"a {thing} {where}, {facing}, {state.background}",
        f"a photo of a {thing} {where} {state.background}",
        f"{state.background}, a {colour} {state.shape} {where} {facing}",
        f"a {state.shape} {facing} {where}, {state.background}",
    )
    return templates[0 if rng is None else int(rng.integers(len(templates)))]
