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
  its frame rate and ends at its end; a file read as live is never reopened (that would restart it);
* all-black frames: a camera's first ``black_warmup`` frames after an open are dropped when black (a sensor
  warming up; counted in ``black_frames`` and logged); black frames after that, and every black frame of a file
  or stream, are frames like any other. Every frame that arrives, black or not, feeds the watchdog;
* a reconnection that delivers only content already seen (a dead live playlist replaying its last segments: the
  same stream time and the same pixels) or less new content than ``min_useful_span`` seconds (what a decision
  needs; set by the classifier) counts as a *failed* attempt, so the bound on giving up holds; replayed frames are
  skipped (counted in ``replayed_frames``, logged);
* HTTP 401/403 ("unauthorised") and other definitive failures stop at once, credentials masked.

Time: a frame is stamped with the stream's own time (``CAP_PROP_POS_MSEC``: the presentation time FFmpeg gives
for files, HTTP and HLS; a V4L2 camera's buffer time), counted from the connection's first frame, and frames that
arrive in a burst (live HLS segments, TCP-buffered RTSP) are paced out at their stream times, so the classifier
samples a burst as the video it is. Where the source gives no usable timestamps (none, constant, or running at
less than half or more than twice real time over 3 s), frames are stamped with their arrival time, and that is
logged (``time_source`` says which). An explicit ``fps`` (``--fps``) wins over the rate the capture reports (and,
for a file read as live, over its timestamps: frame ``i`` is at ``i / fps``).

The time to give up is bounded: :func:`give_up_seconds`. ``open_timeout`` and ``read_timeout`` are also passed to
OpenCV's FFmpeg backend (``CAP_PROP_OPEN_TIMEOUT_MSEC``, ``CAP_PROP_READ_TIMEOUT_MSEC``), so a network stream that
stops sending returns from ``read()`` instead of hanging for FFmpeg's default 30 s.
"""
from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Iterator, List, Optional, Set, Tuple, Union

import cv2
import numpy as np

from clipfsar.runtime.base.redact import redact
from clipfsar.runtime.video.clips import DEFAULT_FPS, sane_fps, sane_frame_count
from clipfsar.runtime.video.frames import Frame, Gap, SourceError
from clipfsar.runtime.video.media_files import special_file_kind
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
    """A failure that retrying cannot fix (no such host, no such device, HTTP 404, HTTP 401/403)."""
    return bool(why) and ("not found" in why or "does not exist" in why or why.startswith("unauthorised"))


_MAX_LAG = 0.5  # s a frame may arrive after its stream time before the pacing is rebased (a late burst)
_MAX_LEAD = 5.0  # s a frame's stream time may run ahead of the clock: more is a jump in the timestamps
_TRUST_AFTER = 3.0  # s of a connection after which stream time must run at 0.5x..2x real time to be believed


class _StreamClock:
    """One connection's time line: stream timestamps (seconds) -> seconds since the source opened, and how long to
    wait so a burst is delivered at its stream times.

    ``stamp(pts, now)`` returns ``(time, wait)``; ``mode`` is ``"stream"`` while the timestamps are believed,
    ``"arrival"`` once they are missing, constant, or run at an unbelievable rate (then time = arrival time).
    """

    def __init__(self, t0: float):
        self.t0 = t0
        self.mode: Optional[str] = None
        self.pts0 = self.wall0 = self.base = self.last_pts = self.start = None
        self.why = ""

    def _arrival(self, now: float, why: str) -> Tuple[float, float]:
        if self.mode != "arrival":
            self.mode, self.why = "arrival", why
        return now - self.t0, 0.0

    def stamp(self, pts: Optional[float], now: float) -> Tuple[float, float]:
        if self.mode == "arrival":
            return now - self.t0, 0.0
        if pts is None or not math.isfinite(pts) or pts < 0:
            return self._arrival(now, "it gives no timestamps")
        if self.pts0 is None:  # the connection's first frame: its stream time starts at its arrival
            self.pts0, self.wall0, self.base, self.last_pts, self.start = pts, now, now - self.t0, pts, now
            return self.base, 0.0
        if pts <= self.last_pts:
            if pts == self.last_pts == self.pts0:
                return self._arrival(now, "its timestamps do not advance")
            self.base += self.last_pts - self.pts0 + 1e-3  # a step back (a discontinuity): go on from here
            self.pts0, self.wall0 = pts, now
        self.last_pts = pts
        due = self.wall0 + (pts - self.pts0)
        if due - now > _MAX_LEAD:  # a jump forward in the timestamps: rebase (the time line goes on from now)
            self.base += pts - self.pts0
            self.pts0, self.wall0, due = pts, now, now
        elif now - due > _MAX_LAG:  # a late burst: pace the rest of it from now, keep the stream's own times
            self.wall0 += now - due
            due = now
        if self.mode is None and now - self.start >= _TRUST_AFTER:
            rate = (pts - self.pts0 + (self.base - (self.start - self.t0))) / (now - self.start)
            if not 0.5 <= rate <= 2.0:
                return self._arrival(now, f"its timestamps run at {rate:.2f}x real time")
            self.mode = "stream"
        return self.base + (pts - self.pts0), max(0.0, due - now)


class _Connection:
    """One opened capture and the thread reading it. ``alive`` False = abandoned: the thread releases and exits."""

    def __init__(self, cap: cv2.VideoCapture):
        self.cap = cap
        self.alive = True
        self.last_frame = time.monotonic()
        self.frames = 0  # new frames delivered (replays and a camera's warm-up black frames not counted)
        self.arrived = 0  # frames read, of any kind
        self.first_t: Optional[float] = None  # stream times of the first and last new frame
        self.last_t: Optional[float] = None
        self.replayed = 0
        self.dropout: Optional[str] = None  # why the reader stopped (None while it reads)
        self.ended = False  # a file read as live reached its end

    def useful(self, min_span: float) -> bool:
        """Delivered new content spanning at least ``min_span`` seconds (a reconnection that did not fails)."""
        return self.frames > 0 and (self.last_t - self.first_t) + 1e-9 >= min_span


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
        ends_at_end: stop at the first dropout instead of reconnecting (default: when ``spec`` is a file or FIFO).
        fps: an explicit frame rate (``--fps``): wins over what the capture reports (logged); a file read as live
            is then played and timed at it.
        black_warmup: a camera's first frames after an open that are dropped when all-black (0: none).
        min_useful_span: seconds of new content a reconnection must deliver to count as a success (the classifier
            sets the span of one window; 0: one new frame).
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
                 ends_at_end: Optional[bool] = None, fps: Optional[float] = None, black_warmup: int = 30,
                 min_useful_span: float = 0.0):
        self.spec, self.name = spec, redact(str(spec))
        self._open = opener or (lambda: capture_for(spec, open_timeout, read_timeout))
        self.retry_initial, self.retry_max, self.max_retries = retry_initial, retry_max, max_retries
        self.open_timeout, self.read_timeout, self.max_failed_reads = open_timeout, read_timeout, max_failed_reads
        is_file = isinstance(spec, str) and opener is None and Path(spec).is_file()
        self.fifo = isinstance(spec, str) and opener is None and special_file_kind(Path(spec)) == "a FIFO (named pipe)"
        self.is_file = is_file
        self.ends_at_end = (is_file or self.fifo) if ends_at_end is None else ends_at_end
        self.error: Optional[str] = None
        self.black_frames = self.failed_reads = self.reconnects = self.stalls = self.replayed_frames = 0
        self.black_warmup = 0 if is_file or self.fifo else int(black_warmup)
        self.min_useful_span = float(min_useful_span)
        self.time_source: Optional[str] = None  # "stream time (CAP_PROP_POS_MSEC)" or "arrival time (why)"
        self._seen: Set[Tuple[int, bytes]] = set()  # (stream time in ms, pixels digest) of frames delivered
        self._seen_order: Deque[Tuple[int, bytes]] = deque()
        self._latest_time = 0.0
        self._readers: List[threading.Thread] = []  # reader threads, an abandoned stuck one among them
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
        reported = sane_fps(cap.get(cv2.CAP_PROP_FPS))
        self.fixed_fps = sane_fps(fps)
        if fps is not None and self.fixed_fps is None:
            cap.release()
            raise SourceError(f"--fps for {self.name} must be a positive frame rate below 1000, got {fps}")
        if self.fixed_fps is not None:
            log.info("%s: --fps %g wins over the %s the capture reports", self.name, self.fixed_fps,
                     f"{reported:g} fps" if reported else "no rate")
        self.fps = self.fixed_fps or reported or DEFAULT_FPS
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
            if self.fifo:  # opening a FIFO waits for a writer
                return None, (f"{self.spec} is a FIFO (named pipe) and no process wrote a stream OpenCV can decode "
                              f"to it within {self.open_timeout:g} s")
            return None, f"timed out after {self.open_timeout:g} s"
        if "error" in box:
            return None, redact(box["error"])
        cap = box["cap"]
        if cap.isOpened():
            return cap, None
        cap.release()
        took = time.monotonic() - t0
        if self.fifo:
            return None, (f"{self.spec} is a FIFO (named pipe) and no process wrote a stream OpenCV can decode to it "
                          f"within {self.open_timeout:g} s")
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
    def _stream_time(self, cap) -> Optional[float]:
        """The capture's time of the frame just read, seconds (None: it gives none)."""
        try:
            ms = float(cap.get(cv2.CAP_PROP_POS_MSEC))
        except Exception:  # noqa: BLE001 - an opener's capture without the property
            return None
        return ms / 1000.0 if math.isfinite(ms) and ms >= 0 else None

    def _replayed(self, pts: Optional[float], img: np.ndarray) -> bool:
        """True for a frame delivered before (same stream time and pixels); else remembers it (bounded)."""
        if pts is None:
            return False
        key = (int(round(pts * 1000)), hashlib.blake2b(np.ascontiguousarray(img[::8, ::8]).tobytes(),
                                                       digest_size=8).digest())
        if key in self._seen:
            return True
        self._seen.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > 4096:
            self._seen.discard(self._seen_order.popleft())
        return False

    def _note_time_source(self, clock: _StreamClock) -> None:
        if clock.mode != "arrival" and clock.pts0 is not None and self.time_source is None:
            self.time_source = "stream time (CAP_PROP_POS_MSEC)"
            log.info("%s: frames timed by the stream's own timestamps (CAP_PROP_POS_MSEC); bursts are paced",
                     self.name)
        elif clock.mode == "arrival" and not (self.time_source or "").startswith("arrival"):
            self.time_source = f"arrival time ({clock.why})"
            log.warning("%s: %s: frames are timed by their arrival, so frames that arrive in bursts are sampled as "
                        "one moment", self.name, clock.why)

    def _read_loop(self, conn: _Connection) -> None:
        fails = 0
        next_due = time.monotonic()
        clock = _StreamClock(self._t0)
        fixed = self.fixed_fps is not None and self.ends_at_end  # a file read as live at an explicit --fps
        if fixed:
            clock.mode, clock.why = "arrival", f"--fps {self.fixed_fps:g} given"
        while conn.alive and not self._stop.is_set():
            if self._pace and clock.mode == "arrival":  # no stream times to pace by: the frame rate
                next_due += self._pace
                self._stop.wait(max(0.0, next_due - time.monotonic()))
            ok, img = conn.cap.read()
            if not conn.alive:
                break
            if ok and img is not None and img.size:
                fails = 0
                now = time.monotonic()
                with self._cond:
                    conn.last_frame = now  # every frame that arrives feeds the watchdog, black ones too
                    conn.arrived += 1
                if conn.arrived <= self.black_warmup and not img[::8, ::8].any():
                    self.black_frames += 1  # a camera warming up: its first black frames are not classified
                    if self.black_frames == 1:
                        log.info("%s: all-black frames right after opening are skipped (a camera warming up; at "
                                 "most %d per open)", self.name, self.black_warmup)
                    continue
                pts = None if fixed else self._stream_time(conn.cap)
                if fixed:
                    t, wait = (conn.arrived - 1) / self.fixed_fps, 0.0
                else:
                    t, wait = clock.stamp(pts, now)
                    self._note_time_source(clock)
                if clock.mode == "arrival":
                    pts = None
                if self._replayed(pts, img):
                    conn.replayed += 1
                    self.replayed_frames += 1
                    continue
                if wait > 0 and self._stop.wait(wait):  # a burst: deliver it at its stream times
                    break
                with self._cond:
                    conn.frames += 1
                    conn.first_t = t if conn.first_t is None else conn.first_t
                    conn.last_t = t
                    self._latest, self._latest_id, self._latest_time = img, self._latest_id + 1, t
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
            self._readers = [t for t in self._readers if t.is_alive()] + [reader]
            why = self._watch(conn)
            conn.alive = False  # abandon: a stuck read is never joined; its thread releases the capture
            if conn.dropout is not None or why is None:
                reader.join(timeout=2.0)  # it stopped (or stops) by itself: let it release the capture first
            if why is None:
                break
            if conn.replayed:
                log.warning("%s: the connection replayed %d frames already seen (a live playlist that stopped "
                            "growing?); skipped", self.name, conn.replayed)
            if conn.ended:
                log.info("%s: end of file", self.name)
                break
            if self.is_file or self.fifo:  # reopening a file would restart it: never
                with self._cond:
                    if not self._stop.is_set():
                        self.error = (f"{self.name} stopped delivering frames ({why}); a file read as live is not "
                                      f"reopened")
                break
            lost = conn.last_frame - self._t0  # the gap starts at the last frame delivered
            log.warning("%s dropped out after %.1f s (%s); reconnecting", self.name, lost, why)
            if conn.useful(self.min_useful_span):  # new content, enough for a decision: the source is back
                failed_attempts = 0
            elif failed_attempts:
                log.warning("%s: the reconnection brought %s; counted as a failed attempt (%d/%d)", self.name,
                            "only content already seen" if conn.frames == 0 else
                            f"{conn.last_t - conn.first_t:.1f} s of new content, less than a decision needs",
                            failed_attempts, self.max_retries)
            cap, failed_attempts, last_why = self._reconnect(failed_attempts)
            if cap is None:
                with self._cond:
                    if not self._stop.is_set():
                        self.error = (f"live source {self.name!r} dropped out ({why}) and did not come back after "
                                      f"{failed_attempts} attempt{'s' if failed_attempts != 1 else ''}"
                                      + (f": {last_why}" if last_why else ""))
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
        """(capture or None, attempts used so far, why the last failed): reopen with backoff until ``max_retries``
        attempts are used; a definitive failure (HTTP 401, not found) stops at once."""
        delay = self.retry_initial * 2 ** attempts
        why = None
        while attempts < self.max_retries:
            if self._stop.wait(min(delay, self.retry_max)):
                return None, attempts, why
            attempts += 1
            cap, why = self._open_bounded()
            if cap is not None:
                return cap, attempts, None
            log.warning("%s: reconnect %d/%d failed: %s", self.name, attempts, self.max_retries, why)
            if _definitive(why):
                break
            delay *= 2
        return None, attempts, why

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
                    img, seen_now, finished, t = self._latest, self._latest_id, self._finished, self._latest_time
                for ev in events:
                    yield ev
                if seen_now != seen:
                    seen = seen_now
                    yield Frame(index, t, img)
                    index += 1
                elif finished:
                    return
        finally:
            self.close()

    def close(self) -> None:
        """Stop the capture. A read still stuck in the capture is waited for up to ``read_timeout`` + 1 s (FFmpeg's
        read timeout returns it by then): a process that exits while a reader thread is inside OpenCV's C++ code is
        aborted by the runtime ("FATAL: exception not rethrown") instead of exiting with its status."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        deadline = time.monotonic() + self.read_timeout + _GRACE
        for t in list(self._readers):
            if t is not threading.current_thread():
                t.join(timeout=max(0.0, deadline - time.monotonic()))
