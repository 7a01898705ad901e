"""Checks before a command writes (or replaces) an output folder, so that ``--force``/``--overwrite`` never destroy
what the user did not mean to replace.

A folder may be written when it does not exist yet, or (with the replace flag) when it is empty or holds what
the same command writes (``looks_like``). It is never replaced when it is one of the command's inputs or contains
one (``clipfsar export-triton B B --overwrite``, ``clipfsar export --checkpoint RUN --out RUN --force``).

Example:
    >>> check_output_folder(Path("repo"), replace=True, inputs=[Path("bundle")], what="model repository",
    ...                     looks_like=lambda p: (p / "bundle_info").is_dir(), flag="--overwrite")
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional

from clipfsar.runtime.base.errors import ClipFsarError


def _resolved(p: Path) -> Path:
    return Path(p).expanduser().resolve()


def check_output_folder(out: Path, replace: bool, inputs: Iterable[Optional[Path]], what: str,
                        looks_like: Callable[[Path], bool], flag: str = "--force") -> None:
    """Raise ``ClipFsarError`` (naming ``out``) unless ``out`` can be written as a ``what`` folder.

    Args:
        out: the output folder. replace: the user passed ``flag`` (replace an existing ``out``).
        inputs: the command's input paths (files or folders; None entries are skipped).
        what: what the command writes (``bundle``, ``model repository``), for the messages.
        looks_like: True for an existing folder holding a ``what`` (the only kind ``flag`` may replace).
    Raises:
        ClipFsarError: a parent of ``out`` is a file; ``out`` is a file; ``out`` exists and ``replace`` is False;
        ``out`` is an input or contains one; ``out`` is a non-empty folder that is not a ``what``.
    """
    out = Path(out)
    target = _resolved(out)
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise ClipFsarError(f"output {out}: {parent} is not a folder")
    for inp in inputs:
        if inp is None:
            continue
        src = _resolved(inp)
        if src == target or target in src.parents:
            raise ClipFsarError(f"output {out} is {'the' if src == target else 'a folder holding the'} input "
                                f"{inp}; choose another output folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise ClipFsarError(f"output {out} exists and is not a folder")
    if not replace:
        raise ClipFsarError(f"output {out} exists; pass {flag} to replace it")
    if any(out.iterdir()) and not looks_like(out):
        raise ClipFsarError(f"output {out} exists and is not a {what}; {flag} replaces only a {what} "
                            "(choose a new or empty folder)")
