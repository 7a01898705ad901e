"""Datasets: a folder per class (``<root>/<class folder>/<clip>``) and split lists naming classes or clips.

Class names come from the folder names (``_`` reads as a space) or, for numbered folders (Something-Something
v2's ``test18``, ``87``), from a class-name map (:mod:`.class_names`). Split lists are read in every form listed
in :mod:`.splits`. The data scan decodes every clip once: unreadable clips are listed and dropped, damaged ones
(frames skipped, or fewer decoded than the container states) are listed with their counts and kept with the
frames that decode.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clipfsar.runtime.base.errors import DatasetError, VideoError
from clipfsar.runtime.video.clips import VIDEO_EXTS, is_clip, natural_key, natural_sorted, scan_clip

from .class_names import mapped_name, warn_id_like
from .splits import group_entries, parse_split

log = logging.getLogger(__name__)


def display_name(folder: str) -> str:
    """Folder names read ``_`` as a space: ``a_circle_moving_left`` -> ``a circle moving left``."""
    return " ".join(folder.replace("_", " ").split())


@dataclass
class ClipSet:
    """The clips of one split: class names (sorted) and, per class, (path, decodable frame count) pairs.

    ``unreadable`` lists dropped clips with the reason; ``damaged`` lists kept clips whose decoding skipped frames
    or ended early, with the counts; ``ignored`` lists entries of class folders that are not clips.
    """
    root: Path
    split: str
    classes: List[str]
    clips: Dict[str, List[Tuple[Path, int]]]
    unreadable: List[Tuple[Path, str]] = field(default_factory=list)
    damaged: List[Tuple[Path, str]] = field(default_factory=list)
    ignored: List[Path] = field(default_factory=list)
    folders: Dict[str, str] = field(default_factory=dict)  # class name -> its folder name

    def counts(self) -> List[int]:
        return [len(self.clips[c]) for c in self.classes]


def class_folders(root: Path, class_map: Optional[Dict[str, str]] = None) -> Dict[str, Path]:
    """Class name -> folder, for every class folder under ``root`` (``splits/`` and hidden folders excluded).

    Raises:
        DatasetError: the root cannot be listed, or two folders give the same class name.
    """
    folders: Dict[str, Path] = {}
    try:
        entries = sorted(Path(root).iterdir(), key=lambda p: natural_key(p.name))
    except OSError as e:
        raise DatasetError(f"cannot list dataset folder {root}: {e.strerror or e}") from e
    for p in entries:
        try:
            if not p.is_dir() or p.name == "splits" or p.name.startswith("."):
                continue
        except OSError:
            continue
        name = (class_map and mapped_name(p.name, class_map)) or display_name(p.name)
        if not name:
            raise DatasetError(f"class folder {p} gives an empty class name")
        if name in folders:
            raise DatasetError(f"class folders {folders[name].name} and {p.name} both read as '{name}'")
        folders[name] = p
    return folders


def list_clips(folder: Path) -> Tuple[List[Path], List[Path]]:
    """(clips in natural order, other entries) of a class folder; hidden files are skipped silently.

    Raises:
        DatasetError: the folder cannot be listed (permissions, a symlink loop).
    """
    try:
        entries = natural_sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"cannot list class folder {folder}: {e.strerror or e}") from e
    clips, other = [], []
    for p in entries:
        (clips if is_clip(p) else other).append(p)
    return _drop_twins(clips, folder), other


def _twin_rank(path: Path) -> int:
    ext = path.suffix.lower()
    return VIDEO_EXTS.index(ext) if ext in VIDEO_EXTS else len(VIDEO_EXTS)


_WARNED_TWINS: set = set()  # each set of twins is warned about once per process (split lines are resolved twice)


def _warn_twins(kept: Path, others: List[Path]) -> None:
    if kept in _WARNED_TWINS:
        return
    _WARNED_TWINS.add(kept)
    log.warning("clip %s is also kept as %s (the same name, another extension): using %s, by the rule: the first "
                "extension in %s; remove or move the other copies so one video is never two clips",
                kept.with_suffix(""), ", ".join(p.name for p in others), kept.name, "/".join(VIDEO_EXTS))


def _drop_twins(clips: List[Path], folder: Path) -> List[Path]:
    """``clips`` with one file per name: ``72897.webm`` and ``72897.mp4`` are one video (a conversion kept beside
    its original) and would otherwise be two clips of a class (support and query of one episode). The copy kept is
    the first by extension in ``VIDEO_EXTS`` order (``.mp4`` first); the others are named in a warning."""
    by_stem: Dict[str, List[Path]] = {}
    for p in clips:
        if p.suffix.lower() in VIDEO_EXTS:
            by_stem.setdefault(p.stem, []).append(p)
    drop = set()
    for twins in by_stem.values():
        if len(twins) > 1:
            twins = sorted(twins, key=_twin_rank)
            _warn_twins(twins[0], twins[1:])
            drop.update(twins[1:])
    return [p for p in clips if p not in drop]


def _find_clip(folder: Path, rel: Path) -> Optional[Path]:
    """The clip a split line names: ``rel`` as written, else ``rel`` plus a video extension. Twins that differ
    only in extension (``72897.webm``, ``72897.mp4``) are warned about and one is picked as :func:`_drop_twins`
    does (an extension written on the line wins)."""
    direct = folder / rel
    try:
        if direct.exists():
            return direct
        found = [c for c in (folder / f"{rel.as_posix()}{ext}" for ext in VIDEO_EXTS) if c.exists()]
    except OSError:
        return None
    if len(found) > 1:
        _warn_twins(found[0], found[1:])  # VIDEO_EXTS order: found[0] is the rule's pick
    return found[0] if found else None


def scan_clips(paths: List[Path], where: str) -> Tuple[List[Tuple[Path, int]], List[Tuple[Path, str]],
                                                      List[Tuple[Path, str]]]:
    """Decode each clip once -> (readable (path, frames), unreadable (path, why), damaged (path, counts)).

    Every unreadable and damaged clip is logged as a warning naming ``where``.
    """
    good, unreadable, damaged = [], [], []
    for p in paths:
        try:
            info = scan_clip(p)
        except VideoError as e:
            unreadable.append((p, str(e)))
            log.warning("%s: unreadable clip %s dropped: %s", where, p, e)
            continue
        if info.damaged:
            damaged.append((p, info.describe()))
            log.warning("%s: damaged clip %s kept with the frames that decode: %s", where, p, info.describe())
        good.append((p, info.frames))
    return good, unreadable, damaged


def load_split(root: Path, split: str, min_clips: int = 1, scan: bool = True,
               class_map: Optional[Dict[str, str]] = None) -> ClipSet:
    """Read split ``split`` of the dataset at ``root``; with ``scan``, decode every clip and drop unreadable ones.

    The split list is ``<root>/splits/<split>.txt`` in any form :mod:`.splits` reads. ``class_map`` (folder or
    id -> name, from :func:`~clipfsar.train.class_names.load_class_map`) names numbered class folders; then
    every class of the split must be in it. Class names that look like ids are warned about.

    Raises:
        DatasetError: missing root or list, a line that fits no format (with its number), a class folder the
            map lacks, a class with fewer than ``min_clips`` readable clips (unreadable ones are listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    list_path = root / "splits" / f"{split}.txt"
    if not list_path.is_file():
        raise DatasetError(f"split list not found: {list_path} (expected {root}/splits/{{train,val,test}}.txt)")
    by_name = class_folders(root)  # unmapped: split lines name folders
    by_key: Dict[str, str] = {}
    for name, p in by_name.items():
        by_key.setdefault(p.name, p.name)
        by_key.setdefault(name, p.name)
        if class_map and mapped_name(p.name, class_map):
            by_key.setdefault(mapped_name(p.name, class_map), p.name)

    def class_folder(component: str) -> Optional[str]:
        return by_key.get(component) or by_key.get(display_name(component))

    def clip_exists(folder: str, clip: Path) -> bool:
        return _find_clip(root / folder, clip) is not None

    where = f"split '{split}' of {root}"
    wanted = group_entries(parse_split(list_path, class_folder, clip_exists), f"split list {list_path}")
    names: Dict[str, str] = {}  # folder -> class name
    for folder in wanted:
        name = mapped_name(folder, class_map) if class_map else display_name(folder)
        if name is None:
            absent = [f for f in wanted if mapped_name(f, class_map) is None]
            raise DatasetError(f"{where}: the class-name map has no entry for {len(absent)} class folders: "
                               + ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""))
        names[folder] = name
    clips: Dict[str, List[Tuple[Path, int]]] = {}
    unreadable: List[Tuple[Path, str]] = []
    damaged: List[Tuple[Path, str]] = []
    ignored: List[Path] = []
    for folder, rels in wanted.items():
        paths: List[Path] = []
        for rel in rels:
            if rel is None:
                found, other = list_clips(root / folder)
                paths.extend(found)
                ignored.extend(other)
            else:
                paths.append(_find_clip(root / folder, rel))
        paths = list(dict.fromkeys(paths))
        if scan:
            good, bad, hurt = scan_clips(paths, where)
            unreadable += bad
            damaged += hurt
        else:
            good = [(p, -1) for p in paths]
        clips[names[folder]] = good
    if ignored:
        log.warning("%s: %d entries of class folders are not clips (videos %s, or folders of images) and are "
                    "ignored: %s", where, len(ignored), "/".join(VIDEO_EXTS),
                    ", ".join(str(p) for p in ignored[:10]) + (" ..." if len(ignored) > 10 else ""))
    warn_id_like(sorted(clips), where)
    short = [(n, len(c)) for n, c in clips.items() if len(c) < min_clips]
    if short:
        listed = "; ".join(f"'{n}' has {k}" for n, k in short)
        bad = "".join(f"\n  {p}: {why}" for p, why in unreadable)
        raise DatasetError(f"{where}: classes with fewer than {min_clips} readable clips "
                           f"(an episode needs that many): {listed}" + (f"\nunreadable clips:{bad}" if bad else ""))
    return ClipSet(root, split, sorted(clips), clips, unreadable, damaged, ignored,
                   {names[f]: f for f in wanted})
