"""Class names: the folder -> name map (``--class-names FILE``), id-like name warnings, and the prompt checks
(a prompt must fit the text encoder's context; two classes must not tokenise identically).

Map files (UTF-8, a BOM is fine):

- JSON object ``{"test18": "pretending to open something", "87": "..."}`` (folder or id -> name);
- JSON object in Something-Something v2's ``labels.json`` form ``{"Approaching something with your camera":
  "0", ...}`` (name -> id, recognised by its values all being integers): folder ``0`` (or ``000``) gets that name;
- JSON list ``["name of id 0", "name of id 1", ...]``;
- CSV or TSV ``folder,name`` rows (a header row ``id,name`` / ``folder,name`` / ``class,name`` is skipped);
- plain text, one name per line: line ``i`` (0-based) names id ``i`` (MMAction2's label maps).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from clipfsar.runtime.base.errors import ClipFsarError, DatasetError
from clipfsar.runtime.bundle.names import bad_name_characters

log = logging.getLogger(__name__)

ID_LIKE = re.compile(r"^[A-Za-z]{0,12}[ _-]?\d+$")
_HEADER_KEYS = {"id", "folder", "class", "class_id", "label", "index", "key"}


class ClassNameError(ClipFsarError, ValueError):
    """A class name cannot be embedded: its prompt exceeds the text context, or it tokenises like another."""


def looks_like_id(name: str) -> bool:
    """``87``, ``train12``, ``test-18``: names the text encoder cannot read as an action."""
    return bool(ID_LIKE.match(name.strip()))


def warn_id_like(names: Sequence[str], where: str) -> List[str]:
    """Log one warning listing the names that look like ids; returns them."""
    bad = [n for n in names if looks_like_id(n)]
    if bad:
        shown = ", ".join(f"'{n}'" for n in bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        log.warning("%s: %d class names look like ids (%s); the text encoder reads them literally (\"a photo of "
                    "%s\"). Pass --class-names FILE (JSON/CSV folder -> name, or SSv2's labels.json)",
                    where, len(bad), shown, bad[0])
    return bad


def _from_json(data, path: Path) -> Dict[str, str]:
    if isinstance(data, list):
        return {str(i): str(n) for i, n in enumerate(data)}
    if not isinstance(data, dict):
        raise DatasetError(f"class-name map {path}: expected a JSON object or list, got {type(data).__name__}")
    values = list(data.values())
    ids = [v for v in values if isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit())]
    if values and len(ids) == len(values) and not all(str(k).strip().isdigit() for k in data):
        return {str(int(v)): str(k) for k, v in data.items()}  # SSv2 labels.json: name -> id
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise DatasetError(f"class-name map {path}: the value of '{bad[0]}' is not a string")
    return {str(k): v for k, v in data.items()}


def _from_text(text: str, path: Path) -> Dict[str, str]:
    lines = [ln for ln in text.splitlines()]
    if not any("," in ln or "\t" in ln for ln in lines):  # one name per line: line i names id i
        return {str(i): ln.strip() for i, ln in enumerate(ln for ln in lines if ln.strip())}
    delim = "\t" if any("\t" in ln for ln in lines) and not any("," in ln for ln in lines) else ","
    out: Dict[str, str] = {}
    for no, row in enumerate(csv.reader(io.StringIO(text), delimiter=delim), 1):
        if not row or not any(c.strip() for c in row) or row[0].strip().startswith("#"):
            continue
        if len(row) != 2:
            raise DatasetError(f"class-name map {path}, line {no}: expected 'folder{delim}name', got {row}")
        key, name = row[0].strip(), row[1].strip()
        if no == 1 and key.lower() in _HEADER_KEYS:
            continue
        if key in out:
            raise DatasetError(f"class-name map {path}, line {no}: '{key}' is mapped twice")
        out[key] = name
    return out


def load_class_map(path: Path) -> Dict[str, str]:
    """Read a class-name map file (formats in the module docstring) -> {folder or id: class name}.

    Raises:
        DatasetError: missing or unreadable file, malformed JSON/CSV (with the line), an empty name, or two
            keys given the same name.

    Example:
        >>> load_class_map(Path("labels.json"))["87"]
        'Pretending to open something without actually opening it'
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class-name map not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read class-name map {path} as UTF-8 text: {e}") from e
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            cmap = _from_json(json.loads(text), path)
        except json.JSONDecodeError as e:
            raise DatasetError(f"class-name map {path} is not valid JSON: {e}") from e
    else:
        cmap = _from_text(text, path)
    if not cmap:
        raise DatasetError(f"class-name map {path} is empty")
    seen: Dict[str, str] = {}
    for key, name in cmap.items():
        name = " ".join(name.split())
        if not name:
            raise DatasetError(f"class-name map {path}: '{key}' has an empty name")
        if bad_name_characters(name):
            raise DatasetError(f"class-name map {path}: the name of '{key}', {name!r}, holds control characters "
                               f"({bad_name_characters(name)})")
        if name in seen:
            raise DatasetError(f"class-name map {path}: '{seen[name]}' and '{key}' are both named '{name}'")
        seen[name] = key
        cmap[key] = name
    return cmap


def mapped_name(folder: str, cmap: Dict[str, str]) -> Optional[str]:
    """The name ``cmap`` gives class folder ``folder`` (by folder name, or by id with leading zeros dropped)."""
    if folder in cmap:
        return cmap[folder]
    if folder.isdigit() and str(int(folder)) in cmap:
        return cmap[str(int(folder))]
    return None


# ----- prompts -------------------------------------------------------------------------------------------------
def prompt_token_count(tokenizer, text: str) -> int:
    """Tokens of ``text`` including start and end tokens, untruncated (open_clip's SimpleTokenizer or HF)."""
    if hasattr(tokenizer, "encode"):  # open_clip SimpleTokenizer: BPE ids without start/end
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip HFTokenizer wraps a transformers tokenizer
    if inner is not None:
        return len(inner(text)["input_ids"])
    raise TypeError(f"cannot count tokens with {type(tokenizer).__name__}")


def check_prompts(tokenizer, prompt: str, names: Sequence[str]) -> None:
    """Refuse class names the text encoder would silently truncate or confuse.

    Raises:
        ClassNameError: a prompt longer than the context (token count and limit given), or two names whose
            prompts tokenise identically (e.g. names differing only after the context, or only in case).
    """
    context = int(getattr(tokenizer, "context_length", 77))
    for n in names:
        text = prompt.format(n)
        count = prompt_token_count(tokenizer, text)
        if count > context:
            raise ClassNameError(f"class name '{n}': the prompt \"{text}\" is {count} tokens, longer than the text "
                                 f"encoder's context of {context} (start and end tokens included); shorten the "
                                 f"name (a --class-names map can rename it)")
    if len(names) < 2:
        return
    rows = tokenizer([prompt.format(n) for n in names])
    first: Dict[tuple, str] = {}
    for n, row in zip(names, rows.tolist()):
        key = tuple(row)
        if key in first and first[key] != n:
            raise ClassNameError(f"classes '{first[key]}' and '{n}' tokenise identically (prompt \"{prompt}\"), "
                                 f"so the text encoder cannot tell them apart; rename one")
        first.setdefault(key, n)
