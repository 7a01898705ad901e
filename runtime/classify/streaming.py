"""Streaming over sliding windows: sampling T frames per window, the ring buffer of encoded frames (each sampled
frame is encoded once), batching every stream's due frames into one encoder call, smoothing and "unknown".

``StreamingMixin`` is mixed into :class:`~clipfsar.runtime.classify.classifier.Classifier`, which provides ``facts``,
``stats``, ``encode``, ``_scores`` and ``_result``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from typing import Callable, Deque, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.classify.results import Decision
from clipfsar.runtime.video.clips import sample_indices
from clipfsar.runtime.video.prefetch import Prefetcher
from clipfsar.runtime.video.sources import Frame, Gap, SourceError, open_source

log = logging.getLogger(__name__)


class StreamingMixin:
    # ----- streams (used by classify/classifier.Classifier) -------------------------------------------------
    def stream(self, source, window: Optional[float] = None, hop: Optional[float] = None,
               threshold: Optional[float] = None,
               smooth: int = 1, max_fps: Optional[float] = None,
               on_frame: Optional[Callable[[Frame, Optional[Decision]], None]] = None) -> Iterator[Decision]:
        """Classify a stream: decisions over sliding windows.

        Args:
            source: camera index, video file, image folder, URL, GStreamer pipeline, or an opened source.
            window: seconds a decision covers (default: the bundle's); T frames are sampled evenly in it.
            hop: seconds between decisions (default: one sampling interval, ``window / T``).
            threshold: below this smoothed score the label is ``unknown``; None = the bundle's fitted threshold
                (``clipfsar calibrate-threshold``; none fitted: 0, no rejection).
            smooth: average the scores of the last ``smooth`` windows.
            max_fps: read at most this many frames per second (paces files to real time, caps live sources).
            on_frame: called with every frame read and the latest decision (drawing, saving).
        Yields:
            Decision, one per hop once the first window is full.
        Raises:
            SourceError: the source cannot be opened, or the window is longer than a file.
        """
        for _, d in self.stream_many([source], window, hop, threshold, smooth, max_fps,
                                     None if on_frame is None else (lambda i, f, d: on_frame(f, d))):
            yield d

    def stream_many(self, sources: Sequence, window: Optional[float] = None, hop: Optional[float] = None,
                    threshold: Optional[float] = None, smooth: int = 1, max_fps: Optional[float] = None,
                    on_frame: Optional[Callable[[int, Frame, Optional[Decision]], None]] = None
                    ) -> Iterator[Tuple[int, Decision]]:
        """Several streams in one process: the frames due from every stream go through one encoder call.

        Yields ``(source index, Decision)``; see :meth:`stream` for the arguments.
        """
        for flag, value in (("--window", window), ("--hop", hop)):  # NaN fails every comparison: refused too
            if value is not None and not 0 < value < float("inf"):
                raise ClipFsarError(f"{flag} must be a positive number of seconds, got {value}")
        if threshold is not None and not 0 <= threshold <= 1:
            raise ClipFsarError(f"--threshold must be a score in [0, 1], got {threshold}")
        window = float(window or self.facts.window_seconds)
        T = self.facts.frames
        interval = window / T
        hop_samples = 1 if hop is None else max(1, int(round(hop / interval)))
        if smooth < 1:
            raise ClipFsarError(f"smooth must be >= 1, got {smooth}")
        states: List[_StreamState] = []
        try:
            for s in sources:
                states.append(_StreamState(s if hasattr(s, "frames") else open_source(s), T, smooth))
                src = states[-1].source
                states[-1].window = window  # the span check (_check_span)
                if hasattr(src, "min_useful_span"):  # a live reconnection too short for a decision counts as failed
                    src.min_useful_span = max(src.min_useful_span, window * (T - 1) / T)
                if src.duration < window:
                    raise SourceError(f"window of {window:g} s is longer than {src.name} ({src.duration:.2f} s); "
                                      f"pass a shorter --window")
                fps = getattr(src, "fps", None)
                if fps and window * fps < 1:
                    raise SourceError(f"window of {window:g} s is shorter than one frame of {src.name} "
                                      f"({1 / fps:.3g} s at {fps:g} fps); pass a longer --window")
            active = list(range(len(states)))
            while active:
                due: List[Tuple[int, Frame]] = []
                ended = []
                for i in list(active):
                    frame = self._next_sample(states[i], interval, max_fps, on_frame, i)
                    if frame is None:
                        active.remove(i)
                        ended.append(i)
                    else:
                        due.append((i, frame))
                for i in ended:  # a file or folder shorter than T samples: classified as training does
                    d = self._decide_short(states[i], threshold)
                    if d is not None:
                        yield i, d
                if not due:
                    break
                feats = self.encode([f.image for _, f in due])  # one encoder call for every stream
                ready = []
                for (i, frame), feat in zip(due, feats):
                    st = states[i]
                    st.ring.append((frame, feat))
                    st.since += 1
                    if len(st.ring) == T and st.since >= hop_samples:
                        st.since = 0
                        ready.append(i)
                if ready:
                    probs, out = self._scores(np.stack([np.stack([f for _, f in states[i].ring]) for i in ready]))
                    known = out.get("known")
                    for j, (i, p) in enumerate(zip(ready, probs)):
                        d = self._decide(states[i], p, threshold, None if known is None else float(known[j]))
                        yield i, d
        finally:
            for st in states:
                st.frames.close()  # the reader thread first: it may be inside the source's read
                close = getattr(st.source, "close", None)
                if close:
                    close()
        for st in states:
            if st.source.error:
                raise SourceError(st.source.error)

    def _next_sample(self, st: "_StreamState", interval: float, max_fps: Optional[float], on_frame, i: int):
        """Read frames until the next one due for sampling; None at the end of the source."""
        while True:
            t0 = time.perf_counter()
            item = next(st.frames, None)
            self.stats.seconds["decode"] += time.perf_counter() - t0
            if item is None:
                return None
            if isinstance(item, Gap):  # a live source came back: never span a window across the gap
                st.ring.clear()
                st.next_t = None
                self.stats.gaps += 1
                continue
            self.stats.frames_read += 1
            if max_fps:
                wait = st.last_read + 1.0 / max_fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                st.last_read = time.perf_counter()
            if on_frame is not None:
                on_frame(i, item, st.last)
            if st.next_t is None:
                st.next_t = item.time
            if item.time + 1e-6 >= st.next_t:
                st.next_t += interval
                if st.next_t <= item.time:  # a live source lagged: resume the cadence from now
                    st.next_t = item.time + interval
                self.stats.frames_sampled += 1
                return item

    def _decide_short(self, st: "_StreamState", threshold: float) -> Optional[Decision]:
        """The one decision of a finite source that ended before its first window filled (fewer than T samples):
        the sampled frames, repeated TSN-style to T (what training does with short clips). None for live
        sources, sources that already decided, and sources with no frame."""
        if st.last is not None or not st.ring or getattr(st.source, "live", False):
            return None
        T = self.facts.frames
        feats = np.stack([f for _, f in st.ring])[sample_indices(len(st.ring), T, "center")]  # (T, D)
        log.warning("%s ended after %d sampled frames, fewer than T = %d: classified once with frames repeated, "
                    "as in training", st.source.name, len(st.ring), T)
        probs, out = self._scores(feats[None])
        d = self._decide(st, probs[0], threshold, float(out["known"][0]) if "known" in out else None)
        d = dataclasses.replace(d, repeated_frames=True)
        st.last = d
        return d

    def _decide(self, st: "_StreamState", probs: np.ndarray, threshold: float,
                known: Optional[float] = None) -> Decision:
        t0 = time.perf_counter()
        st.history.append(probs)
        smoothed = np.mean(st.history, axis=0)
        if known is not None:  # the open-set score, smoothed over the same windows
            st.known_history.append(known)
            known = float(np.mean(st.known_history))
        label, score = self._result(smoothed, threshold, known)
        first, last = st.ring[0][0], st.ring[-1][0]
        self._check_span(st, last.time - first.time)
        d = Decision(label, score, tuple(float(p) for p in smoothed), first.time, last.time, last.index,
                     st.source.name, known=known)
        st.last = d
        self.stats.decisions += 1
        self.stats.seconds["post"] += time.perf_counter() - t0
        return d

    def _check_span(self, st: "_StreamState", span: float) -> None:
        """Warn once per stream when its windows cover more than 1.2x ``--window`` of video: the samples come
        further apart than window / T because the model is slower than that (a live source keeps only the newest
        frame). Says the rate the model sustains, the rate needed, and what to do. The first window is not judged
        (the first encoder calls warm up)."""
        T, window = self.facts.frames, getattr(st, "window", None)
        st.windows_seen = getattr(st, "windows_seen", 0) + 1
        if window is None or T < 2 or st.windows_seen < 2 or getattr(st, "span_warned", False):
            return
        achieved = span * T / (T - 1)  # the window T samples at this spacing cover
        if achieved <= 1.2 * window:
            return
        st.span_warned = True
        s = self.stats
        busy = s.seconds["preprocess"] + s.seconds["encoder"]
        rate = s.encoder_images / busy if busy > 0 else float("nan")
        need = T / window
        if rate < need:  # the encoder is the bottleneck
            todo = f"use a faster --precision (fp16, int8) or --backend, or a --window of at least {achieved:.1f} s"
        else:  # the encoder keeps up: decoding, drawing, --save or --max-fps hold the loop back
            todo = (f"the encoder keeps up, so decoding, drawing (--show, --save) or --max-fps hold the loop back; "
                    f"lighten those or use a --window of at least {achieved:.1f} s")
        log.warning("%s: windows span %.1f s of video, not the %g s of --window (%.0f%% longer): the model encodes "
                    "%.1f frames/s here and a %g s window of T = %d frames needs %.1f frames/s per stream; %s",
                    st.source.name, achieved, window, 100 * (achieved / window - 1), rate, window, T, T / window,
                    todo)


class _StreamState:
    def __init__(self, source, frames: int, smooth: int):
        self.source = source
        # decoding runs ahead in its own thread (bounded queue, newest first for live sources): video/prefetch.py
        self.frames = Prefetcher(iter(source.frames()), live=bool(getattr(source, "live", False)),
                                 name=str(getattr(source, "name", "source")))
        self.ring: Deque[Tuple[Frame, np.ndarray]] = deque(maxlen=frames)  # (frame, (D,) feature)
        self.history: Deque[np.ndarray] = deque(maxlen=smooth)
        self.known_history: Deque[float] = deque(maxlen=smooth)
        self.next_t: Optional[float] = None
        self.since = 0
        self.last: Optional[Decision] = None
        self.last_read = 0.0
