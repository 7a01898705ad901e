"""Decoding ahead of the encoder: a source's frames read in their own thread into a bounded queue.

A stream decodes, encodes and runs the head; in one thread the encoder waits while a frame decodes. A
``Prefetcher`` runs the source's frame iterator in a daemon thread (OpenCV's decoder releases the GIL, so it
overlaps with the encoder's call) and hands the frames over through a bounded queue:

- files and image folders (``live`` false): in order, none lost; the reader blocks while the queue is full
  (``depth`` frames), so memory stays bounded;
- live sources (``live`` true): newest first; when the consumer falls behind, the oldest queued frame is dropped
  (``dropped`` counts them). A ``Gap`` marker (a live source that reconnected) is never dropped.

An exception the source raises in the reader thread is raised again from ``next()`` in the consumer, after the
frames read before it. ``close()`` stops the reader (it finishes the frame it is decoding) and joins it.

Example:
    >>> with Prefetcher(FileSource("clip.mp4").frames(), live=False) as frames:
    ...     for frame in frames:
    ...         encode(frame.image)
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Deque, Iterator, Optional

_END = object()


class Prefetcher:
    """Iterate ``frames`` from a reader thread through a queue of at most ``depth`` items.

    Args:
        frames: the source's frame iterator (``source.frames()``).
        live: newest first (drop the oldest queued frame when full) instead of in order (block when full).
        depth: queue size in frames (>= 1).
        name: the thread's name (for debugging).
    Raises:
        ValueError: ``depth`` < 1.
    """

    def __init__(self, frames: Iterator, live: bool = False, depth: int = 4, name: str = "frames"):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.live, self.depth, self.dropped = live, depth, 0
        self._frames = frames
        self._queue: Deque[Any] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._read, name=f"prefetch-{name}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        """Queue ``item``; False when closed. Live: drop the oldest frame (never a gap or the end) when full."""
        with self._cond:
            while len(self._queue) >= self.depth and not self._stop:
                if self.live and item is not _END:
                    victim = next((i for i, x in enumerate(self._queue) if type(x).__name__ != "Gap"), None)
                    if victim is not None:
                        del self._queue[victim]
                        self.dropped += 1
                        break
                if item is _END:  # the end always gets in: one over depth at most
                    break
                self._cond.wait()
            if self._stop:
                return False
            self._queue.append(item)
            self._cond.notify_all()
            return True

    def _read(self) -> None:
        try:
            for item in self._frames:
                if not self._put(item):
                    return
        except BaseException as e:  # handed to the consumer, raised there after the frames before it
            self._error = e
        self._put(_END)

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self):
        with self._cond:
            while not self._queue:
                self._cond.wait()
            item = self._queue[0]
            if item is _END:  # stays queued: every later next() ends too
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopIteration
            self._queue.popleft()
            self._cond.notify_all()
            return item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and wait for it (at most ``timeout`` s: it may be inside a blocking read)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        close = getattr(self._frames, "close", None)  # a generator: run its finally blocks (release the capture)
        if close is not None and not self._thread.is_alive():
            try:
                close()
            except (RuntimeError, ValueError):  # still running in the reader thread
                pass

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
