"""How many onnxruntime intra-op threads a streaming process uses by default.

A streaming process decodes video on the same cores the encoder runs on. onnxruntime's default (one thread per
core, idle threads spinning) makes its pool compete with the decoder; spinning is turned off for streaming
(``session.intra_op.allow_spinning=0``) and the thread count below was measured with
``benchmarks/threads_bench.py`` (README, "Threads").
"""
from __future__ import annotations

import os
from typing import Optional


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def streaming_threads(requested: Optional[int] = None) -> int:
    """Intra-op threads for a streaming process: ``requested`` when given (0 = onnxruntime's default), else one
    core left to the video decoder (``cores - 1``, at least 1).

    Example:
        >>> streaming_threads(3)
        3
    """
    if requested is not None:
        return requested
    return max(1, usable_cores() - 1)
