"""A thread-to-asyncio broadcast: producer threads publish items, any number of async consumers wait for new ones.

The studio's stream thread publishes decisions and state changes, its renderer thread annotated frames; every open
page (an SSE or MJPEG response) reads them at its own pace. Producers never wait on a consumer: the channel keeps
the last ``keep`` items, and a consumer that falls further behind skips to the oldest one kept (a slow tab drops
frames, it never slows the source).

Example:
    >>> ch = Broadcast(keep=64)
    >>> seq = ch.publish({"label": "waving"})          # from any thread
    >>> items = await ch.wait_after(0, timeout=15.0)    # [(seq, item), ...] newer than 0, or [] on timeout
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Deque, List, Optional, Set, Tuple


class Broadcast:
    """The newest ``keep`` items with increasing sequence numbers (from 1), waited for from asyncio."""

    def __init__(self, keep: int = 1):
        self._items: Deque[Tuple[int, Any]] = deque(maxlen=max(1, keep))
        self._seq = 0
        self._lock = threading.Lock()
        self._waiters: Set[Tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def seq(self) -> int:
        """The sequence number of the newest item (0: none yet)."""
        return self._seq

    def latest(self) -> Optional[Any]:
        """The newest item, or None."""
        with self._lock:
            return self._items[-1][1] if self._items else None

    def publish(self, item: Any) -> int:
        """Add ``item`` (any thread; never blocks on consumers); returns its sequence number."""
        with self._lock:
            self._seq += 1
            self._items.append((self._seq, item))
            waiters = list(self._waiters)
            seq = self._seq
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that consumer's loop is closed
                pass
        return seq

    def after(self, seq: int) -> List[Tuple[int, Any]]:
        """The kept items newer than ``seq``, oldest first."""
        with self._lock:
            return [(s, x) for s, x in self._items if s > seq]

    async def wait_after(self, seq: int, timeout: float) -> List[Tuple[int, Any]]:
        """The kept items newer than ``seq``; waits up to ``timeout`` seconds for one ([] when none came)."""
        event = asyncio.Event()
        key = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(key)
        try:
            items = self.after(seq)
            if items:
                return items
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except asyncio.TimeoutError:
                return []
            return self.after(seq)
        finally:
            with self._lock:
                self._waiters.discard(key)
