"""Recording K clips from the live source: a countdown, then K clips of a set length with a short pause between
them, written as video files into the clips folder (``.takes/<take id>/clip-NN.mp4``) and shown as thumbnails.

The stream thread hands every frame it reads to :meth:`Recorder.feed`, which only appends a reference (the source is
never blocked); a finished clip is encoded to a file by a writer thread. Its frame rate is the one measured while
recording (frames / seconds), so the file lasts as long as the recording did. The thumbnail is a strip of the T
frames enrolment samples from the clip (TSN-style centres, runtime/video/clips.py): what the model will see.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import LOW_SPACE, VideoError, free_bytes, no_space
from clipfsar.runtime.studio.clips_folder import take_folder
from clipfsar.runtime.teaching.enroll import EnrollError
from clipfsar.runtime.video.clips import fourcc_for, sample_indices
from clipfsar.runtime.video.preprocess import as_bgr_uint8

log = logging.getLogger(__name__)

MAX_SHOTS = 20
MAX_CLIP_SECONDS = 30.0
MAX_WAIT_SECONDS = 30.0
THUMB_HEIGHT = 72


class TakeNotFound(EnrollError):
    """No such take, or no such clip in it (the API answers 404)."""


@dataclasses.dataclass
class RecordedClip:
    """One recorded clip: its index in the take, file, frame count, seconds and thumbnail (JPEG bytes)."""
    n: int
    path: Path
    frames: int
    seconds: float
    thumb: bytes = b""


@dataclasses.dataclass
class Take:
    """A recording of ``shots`` clips. ``state``: countdown, recording, pause, writing, done, failed."""
    id: str
    folder: Path
    shots: int
    seconds: float
    countdown: float
    pause: float
    state: str = "countdown"
    message: str = ""
    clips: Dict[int, RecordedClip] = dataclasses.field(default_factory=dict)
    discarded: List[int] = dataclasses.field(default_factory=list)
    recorded: int = 0  # clips whose recording finished (written, being written, or lost)

    def kept(self) -> List[RecordedClip]:
        """The clips not discarded, in recording order."""
        return [self.clips[n] for n in sorted(self.clips)]

    def to_json(self) -> Dict:
        return {"id": self.id, "state": self.state, "message": self.message, "shots": self.shots,
                "seconds": self.seconds, "clips": [{"n": c.n, "frames": c.frames, "seconds": round(c.seconds, 3),
                                                    "file": c.path.name} for c in self.kept()]}


def _number(value, name: str, lo: float, hi: float, integer: bool = False) -> float:
    """``value`` as a finite number in [lo, hi] (an int when ``integer``); EnrollError naming ``name`` otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise EnrollError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x) or not lo <= x <= hi or (integer and x != int(x)):
        kind = "a whole number" if integer else "a number"
        raise EnrollError(f"{name} must be {kind} from {lo:g} to {hi:g}, got {value!r}")
    return int(x) if integer else x


def thumbnail(frames: List[np.ndarray], T: int) -> bytes:
    """A JPEG strip of the ``T`` frames enrolment samples from ``frames`` (each ``THUMB_HEIGHT`` px high)."""
    tiles = []
    for i in sample_indices(len(frames), T, "center"):
        f = frames[i]
        h, w = f.shape[:2]
        tiles.append(cv2.resize(f, (max(1, round(w * THUMB_HEIGHT / h)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA))
    ok, buf = cv2.imencode(".jpg", np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""


def write_clip(path: Path, frames: List[np.ndarray], fps: float) -> None:
    """Write ``frames`` to a video file at ``fps`` (frames of another size are resized to the first's; gray, 16-bit
    and BGRA frames converted by ``as_bgr_uint8``), staged and renamed into place once the file holds every frame.

    Raises:
        VideoError: OpenCV cannot write the file, or the written file does not hold the frames.
        DiskFullError: the disk filled up (nothing is left at ``path``).
    """
    frames = [as_bgr_uint8(f, f"frame {i} of clip {path}") for i, f in enumerate(frames)]
    h, w = frames[0].shape[:2]
    with staged_file(Path(path), suffix=f".tmp{Path(path).suffix}") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc_for(path)), fps, (w, h))
        if not writer.isOpened():
            if free_bytes(Path(path).parent) < LOW_SPACE:
                raise no_space(path)
            raise VideoError(f"cannot write clip {path}")
        try:
            for f in frames:
                writer.write(f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h)))
        finally:
            writer.release()
        cap = cv2.VideoCapture(str(tmp))
        held = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        cap.release()
        if held < len(frames):  # OpenCV's writer reports no error: a full disk shows as a short or unreadable file
            if free_bytes(Path(path).parent) < LOW_SPACE:
                raise no_space(path)  # staged_file says it the one way
            raise VideoError(f"clip {path} could not be written: it holds {held} of {len(frames)} frames")


class Recorder:
    """Takes (recordings of K clips) fed frame by frame from the stream thread.

    Args:
        clips_dir: the clips folder (takes go to ``.takes/`` inside it).
        frames_per_clip: T, the frames a clip needs at least (a shorter recording is refused).
        on_change: called (from any thread) when a take changes state; the studio publishes its state then.
    """

    def __init__(self, clips_dir: Path, frames_per_clip: int, on_change: Callable[[], None]):
        self.clips_dir = Path(clips_dir)
        self.T = frames_per_clip
        self.on_change = on_change
        self._lock = threading.Lock()
        self._takes: Dict[str, Take] = {}
        self._active: Optional[Take] = None
        self._buffer: List[np.ndarray] = []
        self._phase_end = 0.0
        self._clip_start = 0.0

    # ----- control (API threads) ---------------------------------------------------------------------------------
    def start(self, shots=5, seconds=1.0, countdown=3.0, pause=1.0) -> Take:
        """Start a take: after ``countdown`` s, ``shots`` clips of ``seconds`` s each, ``pause`` s apart.

        Raises:
            EnrollError: a take is already recording, or a number is out of range.
        """
        shots = _number(shots, "shots", 1, MAX_SHOTS, integer=True)
        seconds = _number(seconds, "clip seconds", 0.1, MAX_CLIP_SECONDS)
        countdown = _number(countdown, "countdown", 0, MAX_WAIT_SECONDS)
        pause = _number(pause, "pause", 0, MAX_WAIT_SECONDS)
        with self._lock:
            if self._active is not None:
                raise EnrollError(f"take {self._active.id} is still recording; wait for it or cancel it")
            take_id = secrets.token_hex(6)
            folder = take_folder(self.clips_dir, take_id)
            folder.mkdir(parents=True, exist_ok=False)
            take = Take(take_id, folder, shots, seconds, countdown, pause)
            self._takes[take_id] = take
            self._active, self._buffer = take, []
            self._phase_end = time.monotonic() + countdown
        self.on_change()
        return take

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the take being recorded (its finished clips stay)."""
        with self._lock:
            take = self._active
            if take is None:
                return
            self._active, self._buffer = None, []
            take.state, take.message = ("done" if take.clips else "failed"), reason
        self.on_change()

    def get(self, take_id: str) -> Take:
        """Raises EnrollError for an unknown take."""
        take_folder(self.clips_dir, take_id)  # refuses ids that are not ids
        with self._lock:
            take = self._takes.get(take_id)
        if take is None:
            raise TakeNotFound(f"no take {take_id} (takes: {', '.join(self._takes) or 'none'})")
        return take

    def discard(self, take_id: str, n: int) -> Take:
        """Delete clip ``n`` of a take (its file too)."""
        take = self.get(take_id)
        with self._lock:
            clip = take.clips.pop(int(n), None)
        if clip is None:
            raise TakeNotFound(f"take {take_id} has no clip {n}")
        clip.path.unlink(missing_ok=True)
        take.discarded.append(clip.n)
        self.on_change()
        return take

    def drop(self, take_id: str) -> None:
        """Forget a take and delete its folder (its clips were moved out when they were enrolled)."""
        take = self.get(take_id)
        if take is self._active:
            self.cancel("dropped")
        with self._lock:
            self._takes.pop(take_id, None)
        shutil.rmtree(take.folder, ignore_errors=True)
        self.on_change()

    def takes(self) -> List[Take]:
        with self._lock:
            return list(self._takes.values())

    @property
    def busy(self) -> bool:
        return self._active is not None

    def overlay(self) -> Optional[str]:
        """What the live picture shows while a take runs: ``get ready 3``, ``REC 2/5``, ``next 1``; else None."""
        take = self._active
        if take is None:
            return None
        left = max(0.0, self._phase_end - time.monotonic())
        if take.state == "countdown":
            return f"get ready {math.ceil(left)}"
        if take.state == "pause":
            return f"clip {take.recorded + 1}/{take.shots} in {math.ceil(left)}"
        return f"REC {take.recorded + 1}/{take.shots}"

    # ----- frames (the stream thread) ----------------------------------------------------------------------------
    def feed(self, image: np.ndarray) -> None:
        """One frame read from the source (cheap: a state check and an append)."""
        take = self._active
        if take is None:
            return
        now = time.monotonic()
        changed = False
        with self._lock:
            if self._active is not take:
                return
            if take.state in ("countdown", "pause") and now >= self._phase_end:
                take.state, self._clip_start, self._buffer = "recording", now, []
                changed = True
            if take.state == "recording":
                self._buffer.append(image)
                if now - self._clip_start >= take.seconds:
                    frames, seconds = self._buffer, now - self._clip_start
                    self._buffer = []
                    n = take.recorded
                    take.recorded += 1
                    last = take.recorded >= take.shots
                    take.state = "writing" if last else "pause"
                    self._phase_end = now + take.pause
                    if last:
                        self._active = None
                    threading.Thread(target=self._write, args=(take, n, frames, seconds, last),
                                     name=f"write-{take.id}-{n}", daemon=True).start()
                    changed = True
        if changed:
            self.on_change()

    def source_lost(self, why: str) -> None:
        """The source dropped out: the clip being recorded is lost; the take stops with what it has."""
        if self._active is not None:
            self.cancel(f"the source dropped out while recording ({why}); record again")

    def _write(self, take: Take, n: int, frames: List[np.ndarray], seconds: float, last: bool) -> None:
        if len(frames) < 2:
            with self._lock:
                take.message = f"clip {n + 1} got {len(frames)} frame(s); the source is too slow for that length"
                take.discarded.append(n)
        else:
            path = take.folder / f"clip-{n + 1:02d}.mp4"
            try:
                write_clip(path, frames, max(1.0, min(120.0, (len(frames) - 1) / max(seconds, 1e-3))))
                clip = RecordedClip(n, path, len(frames), seconds, thumbnail(frames, self.T))
                with self._lock:
                    take.clips[n] = clip
                if len(frames) < self.T:
                    take.message = (f"clip {n + 1} has {len(frames)} frames < T = {self.T}: frames are repeated "
                                    f"when enrolled, as in training")
            except Exception as e:  # a full disk, an unwritable folder: the take says so
                log.warning("take %s: cannot write clip %d: %s", take.id, n + 1, e)
                with self._lock:
                    take.message = f"cannot write clip {n + 1}: {e}"
                    take.discarded.append(n)
        with self._lock:
            if last or take.state == "writing":
                written = len(take.clips) + len(take.discarded) >= take.recorded
                if written:
                    take.state = "done" if take.clips else "failed"
                else:
                    take.state = "writing"
        self.on_change()
