"""Datasets: a folder per class (``<root>/<class name>/<clip>``) and split lists naming classes or clips."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clipfsar.runtime.errors import DatasetError, VideoError
from clipfsar.runtime.video import VIDEO_EXTS, count_frames, is_clip

log = logging.getLogger(__name__)


def display_name(folder: str) -> str:
    """Folder names read ``_`` as a space: ``a_circle_moving_left`` -> ``a circle moving left``."""
    return folder.replace("_", " ").strip()


@dataclass
class ClipSet:
    """The clips of one split: class names (sorted) and, per class, (path, frame count) pairs."""
    root: Path
    split: str
    classes: List[str]
    clips: Dict[str, List[Tuple[Path, int]]]
    unreadable: List[Tuple[Path, str]] = field(default_factory=list)

    def counts(self) -> List[int]:
        return [len(self.clips[c]) for c in self.classes]


def _read_split(root: Path, split: str) -> List[str]:
    path = root / "splits" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"split list not found: {path} (expected {root}/splits/{{train,val,test}}.txt)")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DatasetError(f"split list {path} is empty")
    return lines


def _class_folders(root: Path) -> Dict[str, Path]:
    """Display name -> folder, for every class folder under ``root``."""
    folders: Dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name != "splits" and not p.name.startswith("."):
            name = display_name(p.name)
            if name in folders:
                raise DatasetError(f"class folders {folders[name].name} and {p.name} both read as '{name}'")
            folders[name] = p
    return folders


def _clips_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_clip(p))


def _find_clip(folder: Path, stem: str) -> Optional[Path]:
    direct = folder / stem
    if direct.exists():
        return direct
    for ext in VIDEO_EXTS:
        cand = folder / f"{stem}{ext}"
        if cand.exists():
            return cand
    return None


def load_split(root: Path, split: str, min_clips: int = 1, scan: bool = True) -> ClipSet:
    """Read split ``split`` of the dataset at ``root``; with ``scan``, decode every clip and drop unreadable ones.

    A split list names classes (``a_circle_moving_left`` or ``a circle moving left``) or, in the form the public
    few-shot splits use, clips (``class/clip`` per line, extension optional).

    Raises:
        DatasetError: missing root or list, a class that does not exist, a class with fewer than ``min_clips``
            readable clips (unreadable ones are listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    folders = _class_folders(root)
    entries = _read_split(root, split)
    wanted: Dict[str, List[Path]] = {}
    for line in entries:
        cls, _, clip = line.partition("/")
        name = display_name(cls)
        if name not in folders:
            raise DatasetError(f"split '{split}' names class '{cls}', which has no folder under {root}")
        if clip:
            path = _find_clip(folders[name], clip)
            if path is None:
                raise DatasetError(f"split '{split}' names clip '{line}', which is not under {root}")
            wanted.setdefault(name, []).append(path)
        else:
            if name in wanted:
                raise DatasetError(f"split '{split}' names class '{cls}' twice")
            wanted[name] = _clips_in(folders[name])
    clips: Dict[str, List[Tuple[Path, int]]] = {}
    unreadable: List[Tuple[Path, str]] = []
    for name, paths in wanted.items():
        good = []
        for p in paths:
            if not scan:
                good.append((p, -1))
                continue
            try:
                n = count_frames(p)
            except VideoError as e:
                unreadable.append((p, str(e)))
                continue
            if n == 0:
                unreadable.append((p, "no decodable frames"))
                continue
            good.append((p, n))
        clips[name] = good
    for p, why in unreadable:
        log.warning("unreadable clip %s: %s", p, why)
    short = [(n, len(c)) for n, c in clips.items() if len(c) < min_clips]
    if short:
        listed = "; ".join(f"'{n}' has {k}" for n, k in short)
        bad = "".join(f"\n  {p}: {why}" for p, why in unreadable)
        raise DatasetError(f"split '{split}' of {root}: classes with fewer than {min_clips} readable clips "
                           f"(an episode needs that many): {listed}" + (f"\nunreadable clips:{bad}" if bad else ""))
    return ClipSet(root, split, sorted(clips), clips, unreadable)
