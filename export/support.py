"""Support folders for export: a folder per class (names from the folders), K clips each."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clipfsar.runtime.errors import DatasetError, VideoError
from clipfsar.runtime.video import count_frames, is_clip
from clipfsar.train.data import display_name


def read_support(root: Path, shots: int, classes_file: Optional[Path] = None) -> Dict[str, List[Tuple[Path, int]]]:
    """Class name -> the first ``shots`` readable clips (sorted by name) with their frame counts.

    Raises:
        DatasetError: missing folder, a class listed but absent, an empty class, fewer readable clips than
            ``shots`` (unreadable ones named), or two folders with the same class name.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"support folder not found: {root}")
    if shots < 1:
        raise DatasetError(f"--shots must be >= 1, got {shots}")
    folders: Dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name != "splits" and not p.name.startswith("."):
            name = display_name(p.name)
            if not name:
                raise DatasetError(f"support folder {p} gives an empty class name")
            if name in folders:
                raise DatasetError(f"duplicate class name '{name}': folders {folders[name].name} and {p.name}")
            folders[name] = p
    if classes_file is not None:
        listed = [ln.strip() for ln in Path(classes_file).read_text().splitlines() if ln.strip()]
        names = [display_name(n) for n in listed]
        if len(set(names)) != len(names):
            raise DatasetError(f"{classes_file} names a class twice")
        absent = [n for n in names if n not in folders]
        if absent:
            raise DatasetError(f"{classes_file} names classes with no folder under {root}: {', '.join(absent)}")
        folders = {n: folders[n] for n in names}
    if not folders:
        raise DatasetError(f"support folder {root} has no class folders")
    support: Dict[str, List[Tuple[Path, int]]] = {}
    for name, folder in folders.items():
        clips = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_clip(p))
        if not clips:
            raise DatasetError(f"support class '{name}' ({folder}) has no clips")
        good, bad = [], []
        for clip in clips:
            if len(good) == shots:
                break
            try:
                n = count_frames(clip)
            except VideoError as e:
                bad.append(f"{clip.name}: {e}")
                continue
            (good.append((clip, n)) if n > 0 else bad.append(f"{clip.name}: no decodable frames"))
        if len(good) < shots:
            extra = f"; unreadable: {'; '.join(bad)}" if bad else ""
            raise DatasetError(f"support class '{name}' has {len(good)} readable clips, fewer than --shots "
                               f"{shots}{extra}")
        support[name] = good
    return support
