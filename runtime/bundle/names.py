"""What a class name may hold: no control characters (``\\n``, ``\\t``, ``\\x01`` ...) nor line or paragraph
separators, which would make ``classes list``, label files (Triton's ``classes.txt``) and logs ambiguous.

Every place a class name enters checks it: ``enroll``, ``classes rename``, export's support folders and class-name
map, and the prototype store itself (:class:`~clipfsar.runtime.bundle.reader.PrototypeStore`).
"""
from __future__ import annotations

import unicodedata
from typing import Optional


def bad_name_characters(name: str) -> Optional[str]:
    """``None`` when ``name`` may be a class name, else the offending characters as escapes (``'\\n', '\\x01'``).

    Refused: Unicode categories Cc (control: ``\\n``, ``\\t``, ``\\x00``-``\\x1f``, ``\\x7f``-``\\x9f``), Zl and
    Zp (line / paragraph separators, which ``str.splitlines`` splits on).

    Example:
        >>> bad_name_characters("waving a hand") is None, bad_name_characters("wave\\tit")
        (True, "'\\\\t'")
    """
    bad = sorted({c for c in str(name) if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    return ", ".join(repr(c) for c in bad) if bad else None
