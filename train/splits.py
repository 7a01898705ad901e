"""Split lists in the wild: the reader lives in :mod:`clipfsar.runtime.teaching.splits` (torch-free, shared with the
runtime's open-set evaluation); this module re-exports it for the training side."""
from clipfsar.runtime.teaching.splits import FORMATS, SplitEntry, group_entries, parse_line, parse_split, read_lines

__all__ = ["FORMATS", "SplitEntry", "group_entries", "parse_line", "parse_split", "read_lines"]
