"""Support folders for export: a folder per class (names from the folders, or a class-name map), K clips each."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from clipfsar.runtime.base.errors import DatasetError
from clipfsar.runtime.bundle.names import bad_name_characters
from clipfsar.train.class_names import mapped_name, warn_id_like
from clipfsar.train.data import _find_clip, class_folders, display_name, list_clips, scan_clips
from clipfsar.train.splits import parse_line, read_lines

log = logging.getLogger(__name__)


def read_support(root: Path, shots: int, classes_file: Optional[Path] = None,
                 class_map: Optional[Dict[str, str]] = None) -> Dict[str, List[Tuple[Path, int]]]:
    """Class name -> the first ``shots`` readable clips (natural name order) with their decodable frame counts.

    Clips are decoded once (the data scan): unreadable ones are listed and skipped, damaged ones (frames skipped,
    or fewer decoded than the container states) are listed with the counts. ``class_map`` (folder or id -> name)
    names the folders; then each class used must be in it. ``classes_file`` lists the classes to export, one per
    line (folder name or class name; a UTF-8 BOM is fine), or a split file of clip lines (SSv2's ``test0/88644``, any
    form :mod:`clipfsar.runtime.teaching.splits` reads): then its classes, in the order they first appear.

    Raises:
        DatasetError: missing folder, a class listed but absent (with its line), an empty class, fewer readable
            clips than ``shots`` (unreadable ones named), two folders with the same class name, or a folder the
            class-name map lacks.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"support folder not found: {root}")
    if shots < 1:
        raise DatasetError(f"--shots must be >= 1, got {shots}")
    by_name = class_folders(root)  # display name -> folder
    if class_map:
        absent = [p.name for p in by_name.values() if mapped_name(p.name, class_map) is None]
        folders = {mapped_name(p.name, class_map): p for p in by_name.values()
                   if mapped_name(p.name, class_map) is not None}
    else:
        absent, folders = [], dict(by_name)
    if classes_file is not None:
        names: List[str] = []
        from_clips: set = set()  # classes taken from clip lines (a class has many; one is enough)

        def class_of(component: str) -> Optional[str]:
            return next((n for n, p in folders.items() if component in (p.name, n) or display_name(component) in
                         (display_name(p.name), n)), None)

        for no, line in read_lines(Path(classes_file)):
            key = line.replace("\\", "/").strip("/")
            name = class_of(key)
            if name is None and ("/" in key or len(key.split()) > 1):  # a clip line (SSv2's 'test0/88644', MMAction2)
                entry = parse_line(no, line, class_of, lambda n, clip: _find_clip(folders[n], clip) is not None,
                                   f"{classes_file}")
                if entry.folder not in names:
                    names.append(entry.folder)
                from_clips.add(entry.folder)
                continue
            if name is None:
                raise DatasetError(f"{classes_file}, line {no}: class '{line}' has no folder under {root}")
            if name in names and name not in from_clips:
                raise DatasetError(f"{classes_file}, line {no}: names class '{line}' twice")
            if name not in names:
                names.append(name)
        folders = {n: folders[n] for n in names}
    elif absent:
        raise DatasetError(f"support folder {root}: the class-name map has no entry for {len(absent)} folders: "
                           + ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""))
    if not folders:
        raise DatasetError(f"support folder {root} has no class folders")
    for name, folder in folders.items():
        if bad_name_characters(name):
            raise DatasetError(f"support folder {root}: class name {name!r} (folder {folder.name!r}) holds control "
                               f"characters ({bad_name_characters(name)}); rename the folder or map it with "
                               f"--class-names")
    warn_id_like(list(folders), f"support folder {root}")
    support: Dict[str, List[Tuple[Path, int]]] = {}
    for name, folder in folders.items():
        clips, other = list_clips(folder)
        if other:
            log.warning("support class '%s': %d entries are not clips and are ignored: %s", name, len(other),
                        ", ".join(p.name for p in other[:10]))
        if not clips:
            raise DatasetError(f"support class '{name}' ({folder}) has no clips")
        good: List[Tuple[Path, int]] = []
        bad: List[str] = []
        for clip in clips:  # scan one at a time: only as many as needed
            if len(good) == shots:
                break
            ok, unreadable, _ = scan_clips([clip], f"support class '{name}'")
            good += ok
            bad += [f"{p.name}: {why}" for p, why in unreadable]
        if len(good) < shots:
            extra = f"; unreadable: {'; '.join(bad)}" if bad else ""
            raise DatasetError(f"support class '{name}' has {len(good)} readable clips, fewer than --shots "
                               f"{shots}{extra}")
        support[name] = good
    return support
