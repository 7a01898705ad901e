"""Where recorded clips live: a folder the user names, one sub-folder per class, as the training data layout reads
it (``<clips>/<class name with _ for spaces>/<clip>.mp4``; ``_`` reads as a space again, runtime/teaching/openset.py),
so the clips can be reused for training (``clipfsar train --data``) or ``calibrate-threshold``.

Clips recorded but not yet enrolled wait in ``<clips>/.takes/<take id>/`` (a dot folder: not read as a class).

Every path built here is checked to stay inside the clips folder: a class name is first checked as ``enroll`` checks
it (:func:`~clipfsar.runtime.teaching.enroll.check_name`), then refused when it cannot be one folder name (``/``,
``\\``, a leading ``.``, ``..``), and the resolved folder must be a direct child of the clips folder.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from clipfsar.runtime.teaching.enroll import EnrollError, check_name

TAKES = ".takes"
TAKE_ID = re.compile(r"^[0-9a-f]{12}$")


def default_clips_dir(bundle: Path) -> Path:
    """``<bundle's parent>/<bundle name>-clips``: next to the bundle, not inside it (a bundle holds only its
    manifest's files)."""
    b = Path(bundle).resolve()
    return b.parent / f"{b.name}-clips"


def class_folder(clips_dir: Path, name: str) -> Path:
    """The folder of class ``name`` inside ``clips_dir`` (not created).

    Raises:
        EnrollError: the name is refused by ``enroll`` (empty, control characters), or cannot be a single folder
            name inside the clips folder (path separators, a leading dot).
    """
    name = check_name(name)
    folder = name.replace(" ", "_")
    if "/" in folder or "\\" in folder or folder.startswith(".") or "\x00" in folder:
        raise EnrollError(f"class name {name!r} cannot be a folder name in the clips folder (no '/', '\\' or "
                          f"leading '.'); choose another name")
    root = Path(clips_dir).resolve()
    path = (root / folder).resolve()
    if path.parent != root:  # belt and braces: nothing outside the clips folder, whatever the name held
        raise EnrollError(f"class name {name!r} would leave the clips folder {root}")
    return path


def take_folder(clips_dir: Path, take_id: str) -> Path:
    """``<clips>/.takes/<take_id>``; the id must be one the studio made (12 hex digits).

    Raises:
        EnrollError: any other id.
    """
    if not isinstance(take_id, str) or not TAKE_ID.match(take_id):
        raise EnrollError(f"take {take_id!r} is not a take id (12 hex digits)")
    return Path(clips_dir).resolve() / TAKES / take_id


def stored_clip_name(take_id: str, n: int) -> str:
    """The file name a recorded clip gets in its class folder: ``<UTC time>-<take>-<n>.mp4`` (sorts by time)."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{take_id}-{n:02d}.mp4"
