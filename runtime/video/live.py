"""Live sources: a camera index, an RTSP/HTTP stream, a GStreamer pipeline (or a file read as if live), read by a
capture thread that keeps only the newest frame, survives faults and gives up in a bounded time.

Faults and what happens:

* an isolated failed read (``cap.read()`` returns no frame) is tolerated; ``max_failed_reads`` failures in a row,
  or no frame for ``read_timeout`` seconds, is a *dropout*;
* a read that blocks (a driver stall) is caught by a watchdog after ``read_timeout`` s: the stuck capture object is
  abandoned (released by its thread if the read ever returns, never joined) and the source is reopened;
* a dropout is followed by up to ``retries`` reopen attempts with exponential backoff (``retry_initial`` doubling
  up to ``retry_max`` s), each bounded by ``open_timeout`` s; the gap is reported as a :class:`Gap`;
* the first open is retried the same way; when it fails for good the error says why (timed out after N s,
  connection refused, host not found, HTTP 404 ...), with credentials masked (:mod:`.redact`);
* a video file read as live, or a stream whose capture reports a frame count (a file behind a URL), is paced at
  its frame rate and ends at its end.

The time to give up is bounded: :func:`give_up_seconds`. ``open_timeout`` and ``read_timeout`` are also passed to
OpenCV's FFmpeg backend (``CAP_PROP_OPEN_TIMEOUT_MSEC``, ``CAP_PROP_READ_TIMEOUT_MSEC``), so a network stream that
stops sending returns from ``read()`` instead of hanging for FFmpeg's default 30 s.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

import cv2
import numpy as np

from clipfsar.runtime.base.redact import redact
from clipfsar.runtime.video.clips import DEFAULT_FPS, sane_fps, sane_frame_count
from clipfsar.runtime.video.frames import Frame, Gap, SourceError
from clipfsar.runtime.video.netcheck import diagnose

log = logging.getLogger(__name__)


_GRACE = 1.0  # seconds an open may run past open_timeout before it is abandoned (FFmpeg's own timer acts first)


def give_up_seconds(open_timeout: float, read_timeout: float, retries: int, retry_initial: float = 0.5,
                    retry_max: float = 8.0) -> float:
    """Upper bound in seconds from the last frame of a dead source to the error: the watchdog, then every attempt
    (an open of at most ``open_timeout`` + 1 s, and a reopened source that delivers nothing is a dropout again
    after ``read_timeout``), and the waits between attempts.

    Example:
        >>> give_up_seconds(5, 5, 5)   # 5 + 5 * (5 + 1 + 5) + (0.5 + 1 + 2 + 4 + 8)
        75.5
    """
    waits, d = 0.0, retry_initial
    for _ in range(retries):
        waits, d = waits + d, min(d * 2, retry_max)
    return read_timeout + retries * (open_timeout + _GRACE + read_timeout) + waits


def capture_for(spec: Union[int, str], open_timeout: float = 10.0, read_timeout: float = 10.0) -> cv2.VideoCapture:
    """An OpenCV capture for a camera index, a GStreamer pipeline (contains ``!``) or a URL/file (FFmpeg backend,
    with ``open_timeout`` / ``read_timeout`` in seconds as its open parameters)."""
    if isinstance(spec, int):
        return cv2.VideoCapture(spec)
    if "!" in spec:
        return cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000)]
    return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)


def _definitive(why: Optional[str]) -> bool:
    """A failure that retrying cannot fix (no such host, no such device, HTTP 404)."""
    return bool(why) and ("not found" in why or "does not exist" in why)


class _Connection:
    """One opened capture and the thread reading it. ``alive`` False = abandoned: the thread releases and exits."""

    def __init__(self, cap: cv2.VideoCapture):
        self.cap = cap
        self.alive = True
        self.last_frame = time.monotonic()
        self.frames = 0
        self.dropout: Optional[str] = None  # why the reader stopped (None while it reads)
        self.ended = False  # a file read as live reached its end


class LiveSource:
    """A live source read by a capture thread (newest frame only) with a watchdog, reconnection and bounded give-up.

    Args:
        spec: camera index, URL, GStreamer pipeline, or a video file path (read as live: paced, ends at its end).
        opener: returns a new ``cv2.VideoCapture``-like object (``isOpened``, ``read``, ``get``, ``release``);
            default :func:`capture_for` of ``spec``. Tests use it for fake cameras.
        open_timeout: seconds one open attempt may take (FFmpeg's open timeout; other openers are abandoned).
        read_timeout: seconds without a frame before the source counts as dropped out (watchdog).
        retries: reopen attempts after a failed first open or a dropout before giving up.
        max_failed_reads: failed reads in a row that count as a dropout (fewer are tolerated).
        retry_initial, retry_max: backoff between attempts, seconds (doubling).
        ends_at_end: stop at the first dropout instead of reconnecting (default: when ``spec`` is a file).
    Raises:
        SourceError: the first open failed ``retries + 1`` times (the message says why).
    Example:
        >>> src = LiveSource("rtsp://user:pw@cam/stream", open_timeout=5, read_timeout=5, retries=3)
        >>> for item in src.frames(): ...   # Frame or Gap
    """
    live = True

    def __init__(self, spec: Union[int, str], opener: Optional[Callable[[], cv2.VideoCapture]] = None,
                 retry_initial: float = 0.5, retry_max: float = 8.0, max_retries: int = 5,
                 open_timeout: float = 5.0, read_timeout: float = 5.0, max_failed_reads: int = 5,
                 ends_at_end: Optional[bool] = None):
        self.spec, self.name = spec, redact(str(spec))
        self._open = opener or (lambda: capture_for(spec, open_timeout, read_timeout))
        self.retry_initial, self.retry_max, self.max_retries = retry_initial, retry_max, max_retries
        self.open_timeout, self.read_timeout, self.max_failed_reads = open_timeout, read_timeout, max_failed_reads
        is_file = isinstance(spec, str) and opener is None and Path(spec).is_file()
        self.ends_at_end = is_file if ends_at_end is None else ends_at_end
        self.error: Optional[str] = None
        self.black_frames = self.failed_reads = self.reconnects = self.stalls = 0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: Optional[np.ndarray] = None
        self._latest_id = 0
        self._events: List[Gap] = []
        self._finished = False
        self._t0 = time.monotonic()
        cap, why = self._open_bounded()
        attempt, delay = 0, retry_initial
        while cap is None and attempt < max_retries and not _definitive(why):
            attempt += 1
            log.warning("%s: %s; retrying in %.1f s (%d/%d)", self.name, why, delay, attempt, max_retries)
            time.sleep(delay)
            delay = min(delay * 2, retry_max)
            cap, why = self._open_bounded()
        if cap is None:
            raise SourceError(f"cannot open live source {self.name}: {why} "
                              f"({attempt + 1} attempt{'s' if attempt else ''})")
        self.fps = sane_fps(cap.get(cv2.CAP_PROP_FPS)) or DEFAULT_FPS
        # a stream whose capture reports a frame count is a file behind a URL (http://.../x.mp4): it ends at its
        # end instead of being reopened forever, and plays at its frame rate like a file read as live
        finite = (ends_at_end is None and opener is None
                  and sane_frame_count(cap.get(cv2.CAP_PROP_FRAME_COUNT)) is not None)
        if finite:
            self.ends_at_end = True
        self._pace = 1.0 / self.fps if is_file or finite else 0.0  # a file read as live plays at its frame rate
        self.duration = float("inf")
        self._thread = threading.Thread(target=self._supervise, args=(cap,), name=f"capture-{self.name}",
                                        daemon=True)
        self._thread.start()

    # ----- opening ------------------------------------------------------------------------------------------------
    def _open_bounded(self):
        """(capture, None) or (None, why): one open attempt that takes at most ``open_timeout`` (+1 s) seconds."""
        box: dict = {}
        done = threading.Event()

        def attempt():
            try:
                cap = self._open()
            except Exception as e:  # an opener's own failure is a failed attempt, reported with its message
                box["error"] = f"{type(e).__name__}: {e}"
                done.set()
                return
            if box.get("abandoned"):
                cap.release()
            box["cap"] = cap
            done.set()

        t0 = time.monotonic()
        threading.Thread(target=attempt, name=f"open-{self.name}", daemon=True).start()
        if not done.wait(self.open_timeout + _GRACE):
            box["abandoned"] = True  # the thread releases the capture if the open ever returns
            return None, f"timed out after {self.open_timeout:g} s"
        if "error" in box:
            return None, redact(box["error"])
        cap = box["cap"]
        if cap.isOpened():
            return cap, None
        cap.release()
        took = time.monotonic() - t0
        if took >= 0.9 * self.open_timeout:
            # a server that answers but sends what FFmpeg cannot decode also uses up the open timeout: probe it in
            # what is left of the attempt's bound, so the error says "sent no stream" rather than only "timed out"
            left = self.open_timeout + _GRACE - took
            why = diagnose(self.spec, left / 2) if isinstance(self.spec, str) and left > 0.2 else None
            return None, f"timed out after {self.open_timeout:g} s" + (f"; {why}" if why else "")
        if isinstance(self.spec, int):
            node = Path(f"/dev/video{self.spec}")
            if Path("/dev").is_dir() and not node.exists() and Path("/sys/class").is_dir():
                return None, f"no camera at index {self.spec} ({node} does not exist)"
            return None, "the camera is busy or its driver failed"
        why = diagnose(self.spec, max(0.2, (self.open_timeout - took) / 2))  # connect + answer, in budget
        return None, why or "not a stream OpenCV can open (wrong path, or a backend this OpenCV lacks)"

    # ----- capture ------------------------------------------------------------------------------------------------
    def _read_loop(self, conn: _Connection) -> None:
        fails = 0
        next_due = time.monotonic()
        while conn.alive and not self._stop.is_set():
            if self._pace:
                next_due += self._pace
                self._stop.wait(max(0.0, next_due - time.monotonic()))
            ok, img = conn.cap.read()
            if not conn.alive:
                break
            if ok and img is not None and img.size:
                fails = 0
                if not img[::8, ::8].any():
                    self.black_frames += 1  # a failing driver's all-black frame: never classified
                    continue
                with self._cond:
                    conn.last_frame = time.monotonic()
                    conn.frames += 1
                    self._latest, self._latest_id = img, self._latest_id + 1
                    self._cond.notify_all()
                continue
            fails += 1
            self.failed_reads += 1
            if self.ends_at_end or fails >= self.max_failed_reads:
                with self._cond:
                    conn.ended = self.ends_at_end
                    conn.dropout = f"{fails} failed read{'s' if fails > 1 else ''} in a row"
                    self._cond.notify_all()
                break
            self._stop.wait(min(0.05, 1.0 / self.fps))  # an isolated failure: try again shortly
        conn.cap.release()

    def _watch(self, conn: _Connection) -> Optional[str]:
        """Wait until ``conn`` drops out; returns why (None when the source is being closed)."""
        with self._cond:
            while not self._stop.is_set():
                if conn.dropout is not None:
                    return conn.dropout
                silent = time.monotonic() - conn.last_frame
                if silent > self.read_timeout:
                    self.stalls += 1
                    return f"no frame for {self.read_timeout:g} s (read stalled)"
                self._cond.wait(min(0.1, self.read_timeout - silent + 0.01))
        return None

    def _supervise(self, cap: cv2.VideoCapture) -> None:
        failed_attempts = 0  # reopen attempts since the last frame (a source that opens but sends nothing counts)
        while True:
            conn = _Connection(cap)
            reader = threading.Thread(target=self._read_loop, args=(conn,), name=f"read-{self.name}", daemon=True)
            reader.start()
            why = self._watch(conn)
            conn.alive = False  # abandon: a stuck read is never joined; its thread releases the capture
            if conn.dropout is not None or why is None:
                reader.join(timeout=2.0)  # it stopped (or stops) by itself: let it release the capture first
            if why is None:
                break
            if conn.ended:
                log.info("%s: end of file", self.name)
                break
            lost = conn.last_frame - self._t0  # the gap starts at the last frame delivered
            log.warning("%s dropped out after %.1f s (%s); reconnecting", self.name, lost, why)
            if conn.frames:
                failed_attempts = 0
            cap, failed_attempts = self._reconnect(failed_attempts)
            if cap is None:
                with self._cond:
                    if not self._stop.is_set():
                        self.error = (f"live source {self.name!r} dropped out ({why}) and did not come back after "
                                      f"{self.max_retries} attempts")
                break
            self.reconnects += 1
            back = time.monotonic() - self._t0
            with self._cond:
                self._events.append(Gap(lost, back))
                self._cond.notify_all()
            log.warning("%s is back after a %.1f s gap", self.name, back - lost)
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def _reconnect(self, attempts: int):
        """(capture or None, attempts used so far): reopen with backoff until ``max_retries`` attempts are used."""
        delay = self.retry_initial * 2 ** attempts
        while attempts < self.max_retries:
            if self._stop.wait(min(delay, self.retry_max)):
                return None, attempts
            attempts += 1
            cap, why = self._open_bounded()
            if cap is not None:
                return cap, attempts
            log.warning("%s: reconnect %d/%d failed: %s", self.name, attempts, self.max_retries, why)
            delay *= 2
        return None, attempts

    # ----- consumer -----------------------------------------------------------------------------------------------
    def frames(self) -> Iterator[Union[Frame, Gap]]:
        """Newest frames as they arrive (frames that arrived in between are skipped), and gaps."""
        seen, index = 0, 0
        try:
            while True:
                with self._cond:
                    while self._latest_id == seen and not self._finished and not self._events:
                        self._cond.wait(0.5)
                    events, self._events = self._events, []
                    img, seen_now, finished = self._latest, self._latest_id, self._finished
                for ev in events:
                    yield ev
                if seen_now != seen:
                    seen = seen_now
                    yield Frame(index, time.monotonic() - self._t0, img)
                    index += 1
                elif finished:
                    return
        finally:
            self.close()

    def close(self) -> None:
        """Stop the capture (a stuck read is abandoned, not waited for longer than 2 s)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
