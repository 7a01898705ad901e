"""Split lists as they exist in the wild: one entry per line, each naming a class or a clip.

Accepted, line by line (``#`` starts a comment; a UTF-8 byte-order mark and blank lines are ignored):

- a class: ``brush_hair`` or ``brush hair`` (``_`` reads as a space);
- a clip: ``brush_hair/clip_name`` (extension optional), as the public few-shot splits (``test18/195025``);
- a clip with folders before the class, which are ignored: the official CLIP-FSAR lists
  (``train3//videos/brush_hair/clip.avi``), absolute paths (``/data/hmdb51/brush_hair/clip.avi``), Windows paths
  (``C:\\data\\hmdb51\\brush_hair\\clip.avi``; ``\\`` reads as ``/``). The class is the nearest folder above the
  clip that is a class folder of the dataset;
- MMAction2 annotation lines: ``path label`` (videos) or ``path total_frames label`` (raw frames); the path is
  read as above (it may hold spaces: ``blasting sand/clip.mp4 0``; the numbers are the last fields); when it holds
  no class folder, a class folder named by the label (``87``) is used.

A line that fits none of these is an error naming the file, the line number and the formats.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from clipfsar.runtime.base.errors import DatasetError

FORMATS = ("a class ('brush_hair'), a clip ('brush_hair/clip_name', extension optional), a path whose last "
           "class folder names the class ('train3//videos/brush_hair/clip.avi', '/data/hmdb51/brush_hair/clip.avi', "
           "'C:\\data\\brush_hair\\clip.avi'), or an MMAction2 line ('brush_hair/clip.avi 3', "
           "'brush_hair/clip 120 3')")


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split list: the class folder it names and, for a clip line, the clip's path."""
    line: int
    text: str
    folder: str
    clip: Optional[Path]


def read_lines(path: Path) -> List[Tuple[int, str]]:
    """(line number, text) of the non-blank, non-comment lines; BOM stripped; any line ending.

    Raises:
        DatasetError: the file is missing, unreadable or not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split list not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"split list {path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from e
    except OSError as e:
        raise DatasetError(f"cannot read split list {path}: {e.strerror or e}") from e
    out = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.replace("\ufeff", "").strip()
        if line and not line.startswith("#"):
            out.append((no, line))
    return out


def _components(path_text: str) -> List[str]:
    parts = [p for p in path_text.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and len(parts[0]) == 2 and parts[0][1] == ":":  # a Windows drive
        parts = parts[1:]
    return parts


def _candidates(line: str) -> List[Tuple[str, Optional[str]]]:
    """(path text, MMAction2 label or None) readings of a line, the plain reading first."""
    out: List[Tuple[str, Optional[str]]] = [(line, None)]
    tokens = line.split()
    # the numbers are the last one or two fields; the path is everything before them, spaces included
    # (``blasting sand/clip.mp4 0``: a class folder with a space)
    for k in (1, 2):
        if len(tokens) > k and all(t.isdigit() for t in tokens[-k:]):
            out.append((line.rsplit(None, k)[0], tokens[-1]))
    return out


def parse_line(no: int, line: str, class_folder: Callable[[str], Optional[str]],
               clip_exists: Callable[[str, Path], bool], where: str) -> SplitEntry:
    """Read one split line.

    Args:
        class_folder: maps a path component to the class folder it names (None if it names none).
        clip_exists: whether ``clip`` exists under class folder ``folder``.
        where: the split list, for messages.
    Raises:
        DatasetError: with the line number: a clip that is not there, or a line that fits no format.
    """
    missing: Optional[str] = None
    for text, label in _candidates(line):
        parts = _components(text)
        if not parts:
            continue
        if len(parts) == 1 and label is None:
            folder = class_folder(parts[0])
            if folder is not None:
                return SplitEntry(no, line, folder, None)
            continue
        for j in range(len(parts) - 2, -1, -1):  # the nearest class folder above the clip
            folder = class_folder(parts[j])
            if folder is not None:
                clip = Path(*parts[j + 1:])
                if clip_exists(folder, clip):
                    return SplitEntry(no, line, folder, clip)
                missing = missing or f"{folder}/{clip.as_posix()}"
                break
        if label is not None:
            folder = class_folder(label)
            if folder is not None:
                clip = Path(*parts)
                if clip_exists(folder, clip):
                    return SplitEntry(no, line, folder, clip)
                missing = missing or f"{folder}/{clip.as_posix()}"
    if missing is not None:
        raise DatasetError(f"{where}, line {no}: names clip '{missing}', which is not in the dataset "
                           f"('{line}')")
    raise DatasetError(f"{where}, line {no}: '{line}' names no class folder of the dataset. Accepted lines: "
                       f"{FORMATS}")


def parse_split(path: Path, class_folder: Callable[[str], Optional[str]],
                clip_exists: Callable[[str, Path], bool]) -> List[SplitEntry]:
    """Read every line of a split list (see the module docstring for the formats).

    Raises:
        DatasetError: the list is missing, empty, not UTF-8, or a line fits no format (with its number).
    """
    lines = read_lines(path)
    if not lines:
        raise DatasetError(f"split list {path} is empty")
    return [parse_line(no, text, class_folder, clip_exists, f"split list {path}") for no, text in lines]


def group_entries(entries: List[SplitEntry], where: str) -> Dict[str, List[Optional[Path]]]:
    """Class folder -> its clip paths (None for a whole-class line). A class listed twice as a class is an error."""
    out: Dict[str, List[Optional[Path]]] = {}
    whole: Dict[str, int] = {}
    for e in entries:
        if e.clip is None:
            if e.folder in whole:
                raise DatasetError(f"{where}, line {e.line}: class '{e.folder}' is listed twice "
                                   f"(first on line {whole[e.folder]})")
            whole[e.folder] = e.line
        out.setdefault(e.folder, []).append(e.clip)
    return out
