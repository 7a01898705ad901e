"""The studio's live session: one classifier streaming one source in a thread, the annotated picture, the decision
feed, recording, and the teaching actions on the bundle.

Threads and what each owns:

* the **capture thread** of the source (runtime/video/live.py ``LiveSource``): keeps only the newest frame, detects
  dropouts and reconnects with backoff exactly as ``clipfsar run`` does; nothing here ever waits on it;
* the **stream thread**: ``Classifier.stream`` over the source (one encoder call per sampled frame, the ring buffer,
  smoothing, "unknown"); its ``on_frame`` hook hands each frame to the recorder and to the renderer (references
  only) and swaps in a bundle changed by a teaching action between two frames, so no decision ever mixes two
  stores. When the source gives up it is reopened every few seconds while the page stays up;
* the **renderer thread**: draws the newest frame as ``run --save`` does (runtime/classify/annotate.py), adds the
  recording countdown, encodes it to JPEG and publishes it; frames it had no time for are skipped, never queued;
* request threads (Starlette's pool): teaching actions, one at a time (a lock), through the teaching layer's own
  code: ``Enroller.enroll`` (what ``clipfsar enroll`` runs), ``remove_class`` / ``rename_class`` (``clipfsar
  classes``), ``fit_threshold`` / ``store_threshold`` (``clipfsar calibrate-threshold``).
"""
from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

import cv2
import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.classify.annotate import annotate
from clipfsar.runtime.classify.classifier import Classifier
from clipfsar.runtime.classify.results import UNKNOWN, Decision
from clipfsar.runtime.studio.channel import Broadcast
from clipfsar.runtime.studio.clips_folder import class_folder, stored_clip_name
from clipfsar.runtime.studio.recorder import Recorder, _number
from clipfsar.runtime.teaching.enroll import Enroller, EnrollError
from clipfsar.runtime.video.frames import Gap
from clipfsar.runtime.video.sources import open_source

log = logging.getLogger(__name__)

HISTORY = 12            # runs of equal labels kept for the page
DISPLAY_MIN_SIDE = 360  # small frames (the synthetic 64 px clips) are enlarged before drawing, so text is legible
STALL_SECONDS = 1.5     # no frame for this long: the page says the source is not delivering
REOPEN_SECONDS = 5.0    # after a source gave up (as `run` would): wait this long, then open it again


def _ema(mean: Optional[float], x: float, alpha: float = 0.05) -> float:
    """Exponential moving average (the first value starts it)."""
    return x if mean is None else (1 - alpha) * mean + alpha * x


class _Restart(Exception):
    """Raised from ``on_frame`` to restart the stream (smoothing over a changed set of classes)."""


class _Feed:
    """The opened source as ``Classifier.stream`` reads it; the stream may stop and restart on the same frames
    (its ``close`` leaves the source open: the session closes it)."""

    def __init__(self, src, on_gap):
        self.src, self.on_gap = src, on_gap
        self._it = iter(src.frames())
        self.live = getattr(src, "live", False)
        self.fps = getattr(src, "fps", 30.0)
        self.name = src.name
        self.duration = float("inf") if self.live else src.duration
        self.ended = False

    @property
    def error(self):
        return self.src.error

    def frames(self):
        for item in self._it:
            if isinstance(item, Gap):
                self.on_gap(item)
            yield item
        self.ended = True

    def close(self) -> None:
        pass


class StudioSession:
    """The live session behind the studio page and API.

    Args:
        bundle: the bundle folder (changed in place by teaching actions, atomically).
        source: what ``clipfsar run --source`` takes; a file is read as live (paced at its frame rate).
        clips_dir: where recorded clips are kept (a folder per class).
        backend, threads, precision, cache_dir: as ``clipfsar run`` (the engine cache: runtime/engines/cache_dir.py).
        window, hop, smooth: as ``clipfsar run`` (default: the bundle's window, one decision per sampled frame).
        loop: replay a file source from its start when it ends.
        data, split: a dataset folder and split to refit the threshold on (``calibrate-threshold --data/--split``);
            without them the threshold is refit on the bundle's open-set cohort.
        live_options: ``open_timeout``, ``read_timeout``, ``max_retries`` for the live source.
    Raises:
        BundleError, BackendUnavailableError: as ``Classifier.load``.
    """

    def __init__(self, bundle: Path, source: str, clips_dir: Path, backend: str = "auto", threads: int = 1,
                 precision: str = "auto", window: Optional[float] = None, hop: Optional[float] = None,
                 smooth: int = 1, loop: bool = False, data: Optional[Path] = None, split: str = "val",
                 spinning: bool = False, cache_dir: Optional[Path] = None, **live_options):
        self.root = Path(bundle)
        self.source_spec = source
        self.clips_dir = Path(clips_dir)
        self.clips_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir
        self.clf = Classifier.load(self.root, backend=backend, threads=threads, spinning=spinning,
                                   precision=precision, cache_dir=cache_dir)
        self.window = float(window or self.clf.facts.window_seconds)
        self.hop, self.smooth, self.loop = hop, smooth, loop
        self.data, self.split = (Path(data) if data else None), split
        self.live_options = live_options
        self.events = Broadcast(keep=256)   # {"type": "decision" | "state", ...}
        self.frames = Broadcast(keep=1)     # (jpeg bytes, frame index, monotonic time the frame was read)
        self.recorder = Recorder(self.clips_dir, self.clf.facts.frames, self.publish_state)
        self._enroller: Optional[Enroller] = None
        self._teach = threading.Lock()          # one teaching action at a time (two tabs)
        self._swap = threading.Lock()
        self._pending: Optional[Bundle] = None  # a changed bundle the stream thread adopts between two frames
        self._streaming = False
        self._threshold: Optional[float] = None  # the page's live threshold (None: the bundle's)
        self._stop = threading.Event()
        self._latest = None                      # (Frame, Decision or None) for the renderer
        self._latest_cond = threading.Condition()
        self._src = None
        self.history: Deque[Dict[str, Any]] = deque(maxlen=HISTORY)
        self.last: Optional[Dict[str, Any]] = None
        self.status: Dict[str, Any] = {"state": "starting", "message": f"opening {source}"}
        self.frames_read = self.frames_shown = self.gaps = 0
        self.source_fps = self.shown_fps = 0.0
        self._source_dt = self._shown_dt = None
        self._last_frame_at = 0.0
        self.started_at = time.monotonic()
        self._threads = [threading.Thread(target=self._stream_loop, name="studio-stream", daemon=True),
                         threading.Thread(target=self._render_loop, name="studio-render", daemon=True)]

    # ----- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> "StudioSession":
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        """Stop streaming and rendering, release the source (a stuck camera read is abandoned after 2 s)."""
        self._stop.set()
        self.recorder.cancel("the studio stopped")
        src = self._src
        if src is not None:
            src.close()
        with self._latest_cond:
            self._latest_cond.notify_all()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)

    # ----- the stream thread -------------------------------------------------------------------------------------
    def _set_status(self, state: str, message: str = "") -> None:
        if (state, message) != (self.status.get("state"), self.status.get("message")):
            self.status = {"state": state, "message": message}
            log.info("source %s: %s%s", self.source_spec, state, f" ({message})" if message else "")
            self.publish_state()

    def _open(self):
        return open_source(self.source_spec, live=True, **self.live_options)

    def _stream_loop(self) -> None:
        while not self._stop.is_set():
            try:
                src = self._open()
            except ClipFsarError as e:
                self._set_status("fault", f"{e}; trying again in {REOPEN_SECONDS:g} s")
                self._stop.wait(REOPEN_SECONDS)
                continue
            self._src = src
            feed = _Feed(src, self._on_gap)
            self._set_status("live" if feed.live else "playing", "")
            max_fps = None if feed.live else feed.fps  # an image folder is paced at its rate, like a camera
            try:
                while not self._stop.is_set():
                    try:
                        self._run_stream(feed, max_fps)
                        break
                    except _Restart:
                        continue
            except ClipFsarError as e:  # the source gave up (as `run` would stop), or a window longer than a file
                self.recorder.source_lost(str(e))
                self._set_status("fault", f"{e}; trying again in {REOPEN_SECONDS:g} s")
                src.close()
                self._stop.wait(REOPEN_SECONDS)
                continue
            except Exception as e:  # never a dead page: say what broke, keep serving, try again
                log.exception("studio stream failed")
                self._set_status("fault", f"{type(e).__name__}: {e}; trying again in {REOPEN_SECONDS:g} s")
                src.close()
                self._stop.wait(REOPEN_SECONDS)
                continue
            finally:
                with self._swap:
                    self._streaming = False
                    self._adopt_pending()
            src.close()
            if self._stop.is_set():
                break
            if self.loop:
                continue
            self._set_status("ended", f"{src.name} ended (pass --loop to replay a file)")
            self._stop.wait()

    def _run_stream(self, feed: _Feed, max_fps: Optional[float]) -> None:
        with self._swap:
            self._streaming = True
            self._adopt_pending()
        for d in self.clf.stream(feed, self.window, self.hop, None, self.smooth, max_fps, on_frame=self._on_frame):
            self._on_decision(d)
            if self._stop.is_set():
                return

    def _adopt_pending(self) -> bool:
        """Adopt a changed bundle (called with ``_swap`` held). True when one was adopted."""
        b, self._pending = self._pending, None
        if b is None:
            return False
        self.clf._use_bundle(b)  # the classifier's own way to take a changed store and calibration
        if self._threshold is not None:
            self.clf.default_threshold = self._threshold
        return True

    def _on_frame(self, frame, decision: Optional[Decision]) -> None:
        now = time.monotonic()
        if self._last_frame_at:  # the mean interval, then its inverse (a mean of 1/dt is biased by bursts)
            self._source_dt = _ema(self._source_dt, now - self._last_frame_at)
            self.source_fps = 1 / max(self._source_dt, 1e-6)
        self._last_frame_at = now
        self.frames_read += 1
        if self.status.get("state") not in ("live", "playing"):
            self._set_status("live" if getattr(self._src, "live", False) else "playing", "")
        self.recorder.feed(frame.image)
        with self._latest_cond:
            self._latest = (frame, decision, now)
            self._latest_cond.notify()
        if self._pending is not None:
            with self._swap:
                adopted = self._adopt_pending()
            if adopted and self.smooth > 1:  # the smoothing history holds scores of the old classes
                raise _Restart()

    def _on_gap(self, gap: Gap) -> None:
        self.gaps += 1
        self.recorder.source_lost("a gap in the stream")
        self._set_status("live", f"the source came back after a {gap.end - gap.start:.1f} s gap")

    def _on_decision(self, d: Decision) -> None:
        names = self.clf.class_names
        out = {"type": "decision", "label": d.label, "score": round(d.score, 6),
               "known": None if d.known is None else round(d.known, 6), "t_start": round(d.t_start, 4),
               "t_end": round(d.t_end, 4), "frame": d.frame, "time": time.time(),
               "scores": {n: round(s, 6) for n, s in zip(names, d.scores)},
               "source_fps": round(self.source_fps, 2), "shown_fps": round(self.shown_fps, 2)}
        self.last = out
        h = self.history[-1] if self.history else None
        if h is not None and h["label"] == d.label:
            h.update(to=out["t_end"], n=h["n"] + 1, score=max(h["score"], out["score"]))
        else:
            self.history.append({"label": d.label, "score": out["score"], "from": out["t_start"],
                                 "to": out["t_end"], "n": 1})
        self.events.publish(out)

    # ----- the renderer thread -----------------------------------------------------------------------------------
    def _render_loop(self) -> None:
        seen = None
        last_pub = 0.0
        while not self._stop.is_set():
            with self._latest_cond:
                if self._latest is None or self._latest[0] is seen:
                    self._latest_cond.wait(0.5)
                latest = self._latest
            self._watchdog()
            if latest is None or latest[0] is seen:
                continue
            frame, decision, read_at = latest
            seen = frame
            jpeg = self._draw(frame.image, decision)
            now = time.monotonic()
            if last_pub:
                self._shown_dt = _ema(self._shown_dt, now - last_pub)
                self.shown_fps = 1 / max(self._shown_dt, 1e-6)
            last_pub = now
            self.frames_shown += 1
            self.frames.publish((jpeg, frame.index, read_at))

    def _watchdog(self) -> None:
        """Say so in the page when a live source stops delivering (it reconnects by itself, as in `run`)."""
        if self.status.get("state") == "live" and self._last_frame_at:
            silent = time.monotonic() - self._last_frame_at
            if silent > STALL_SECONDS:
                src = self._src
                self._set_status("stalled", f"no frame for {math.floor(silent)} s: the camera or stream stopped "
                                 f"delivering; reconnecting (reconnects so far: {getattr(src, 'reconnects', 0)})")

    def _draw(self, image: np.ndarray, decision: Optional[Decision]) -> bytes:
        h, w = image.shape[:2]
        if min(h, w) < DISPLAY_MIN_SIDE:
            f = math.ceil(DISPLAY_MIN_SIDE / min(h, w))
            image = cv2.resize(image, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
        img = annotate(image, decision, self.source_fps or None)
        text = self.recorder.overlay()
        if text:
            H, W = img.shape[:2]
            rec = text.startswith("REC")
            colour = (40, 40, 230) if rec else (0, 200, 255)
            if rec:
                cv2.rectangle(img, (0, 0), (W - 1, H - 1), colour, max(3, W // 100))
            scale = max(0.6, min(W, H) / 300)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
            x, y = (W - tw) // 2, H - th - 12
            cv2.rectangle(img, (x - 8, y - th - 8), (x + tw + 8, y + 8), (0, 0, 0), -1)
            cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2, cv2.LINE_AA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return buf.tobytes()

    # ----- state -------------------------------------------------------------------------------------------------
    def publish_state(self) -> None:
        self.events.publish({"type": "state", "state": self.state()})

    def _bundle(self) -> Bundle:
        return self.clf.bundle if self._pending is None else self._pending

    def threshold_info(self) -> Dict[str, Any]:
        b = self._bundle()
        t = (b.manifest.calibration or {}).get("threshold") or {}
        has_cohort = bool(b.manifest.cohort)
        live = self._threshold if self._threshold is not None else float(t.get("value") or 0.0)
        return {"live": live, "bundle": t.get("value"), "score": t.get("score") or "max_prob",
                "far": t.get("far"), "fitted_on": t.get("split"), "has_cohort": has_cohort,
                "refit_with": "data" if self.data else "cohort" if has_cohort else None}

    def classes(self) -> List[Dict[str, Any]]:
        st = self._bundle().store
        out = []
        for n, k in zip(st.class_names, st.shots):
            try:
                folder = class_folder(self.clips_dir, n)
                kept = len(list(folder.glob("*.mp4"))) if folder.is_dir() else 0
            except EnrollError:
                kept = 0
            out.append({"name": n, "shots": int(k), "clips_kept": kept})
        return out

    def state(self) -> Dict[str, Any]:
        """Everything the page shows, as JSON-ready values."""
        active = [t.to_json() for t in self.recorder.takes()]
        facts = self.clf.facts
        return {
            "bundle": str(self.root), "source": str(self.source_spec), "clips_dir": str(self.clips_dir),
            "model": {"window_seconds": self.window, "frames": facts.frames, "calibrated": self.clf.calibrated,
                      "backend": self.clf.providers["image_encoder"], "precision": self.clf.precisions},
            "source_state": dict(self.status, source_fps=round(self.source_fps, 2), shown_fps=round(self.shown_fps, 2),
                                 frames_read=self.frames_read, frames_shown=self.frames_shown, gaps=self.gaps),
            "classes": self.classes(), "threshold": self.threshold_info(), "takes": active,
            "recording": self.recorder.busy, "last": self.last, "history": list(self.history),
        }

    # ----- teaching (request threads) ----------------------------------------------------------------------------
    def _changed(self, bundle: Bundle) -> None:
        """Hand a bundle changed on disk to the stream thread (or adopt it now when nothing streams)."""
        with self._swap:
            self._pending = bundle
            if not self._streaming:
                self._adopt_pending()
        self.publish_state()

    def enroll(self, name: str, take: Optional[str] = None, mode: str = "new") -> Dict[str, Any]:
        """Enrol ``name`` from a take's kept clips (``Enroller.enroll``: what ``clipfsar enroll`` runs), or by name
        only (no take: zero-shot); ``mode`` new / add / replace. The clips then move into the class's folder.

        Raises:
            EnrollError: a bad name (checked as ``enroll`` checks it, and as a folder name), an unknown take, a
                take with no clips, or what ``Enroller.enroll`` refuses. TokenizerError, VideoError, BundleError.
        """
        folder = class_folder(self.clips_dir, name)  # refuses the name before any work
        with self._teach:
            clips = []
            t = None
            if take:
                t = self.recorder.get(take)
                if t.state not in ("done",):
                    raise EnrollError(f"take {take} is not finished ({t.state})")
                clips = t.kept()
                if not clips:
                    raise EnrollError(f"take {take} has no clips left (all discarded); record again")
            elif mode == "add":
                raise EnrollError(f"adding shots to '{name.strip()}' needs a take of recorded clips")
            if self._enroller is None:
                self._enroller = Enroller(Bundle.open(self.root), cache_dir=self.cache_dir)  # `enroll`'s default
            else:
                self._enroller.bundle = Bundle.open(self.root)  # the graphs' sessions are kept
            b = self._enroller.enroll(name, [c.path for c in clips], mode)
            if t is not None:  # kept for reuse (training, calibration): <clips>/<class>/<time>-<take>-<n>.mp4
                folder.mkdir(parents=True, exist_ok=True)
                for c in clips:
                    shutil.move(str(c.path), str(folder / stored_clip_name(t.id, c.n + 1)))
                self.recorder.drop(t.id)
            self._changed(b)
        return {"enrolled": name.strip(), "shots": int(b.store.shots[b.store.class_names.index(name.strip())]),
                "state": self.state()}

    def remove(self, name: str) -> Dict[str, Any]:
        """``clipfsar classes remove``; the class's recorded clips stay in its folder."""
        from clipfsar.runtime.teaching.classes import remove_class
        if not isinstance(name, str):
            raise EnrollError(f"class name {name!r} is not text")
        with self._teach:
            self._changed(remove_class(self.root, name))
        return {"removed": name, "state": self.state()}

    def rename(self, old: str, new: str) -> Dict[str, Any]:
        """``clipfsar classes rename``; the class's clips folder is renamed too (when the new one is free)."""
        from clipfsar.runtime.teaching.classes import rename_class
        if not isinstance(old, str):
            raise EnrollError(f"class name {old!r} is not text")
        dst = class_folder(self.clips_dir, new)
        with self._teach:
            self._changed(rename_class(self.root, old, new))
            try:
                src = class_folder(self.clips_dir, old)
            except EnrollError:
                src = None
            if src is not None and src.is_dir() and not dst.exists():
                src.rename(dst)
        return {"renamed": old, "to": new.strip(), "state": self.state()}

    def set_threshold(self, value) -> Dict[str, Any]:
        """The live threshold (0 = no "unknown"; ``None`` = back to the bundle's); not written to the bundle."""
        if value is None:
            self._threshold = None
            t = (self._bundle().manifest.calibration or {}).get("threshold") or {}
            self.clf.default_threshold = float(t.get("value") or 0.0)
        else:
            self._threshold = _number(value, "threshold", 0, 1)
            self.clf.default_threshold = self._threshold  # read at every decision
        self.publish_state()
        return {"threshold": self.threshold_info()}

    def refit_threshold(self, far) -> Dict[str, Any]:
        """Refit the "unknown" threshold at false-accept rate ``far`` and store it in the bundle, with
        ``calibrate-threshold``'s code: on ``--data``'s split when given (``fit_threshold``, the bundle's cohort
        kept), else on the bundle's open-set cohort (:func:`cohort_threshold`).

        Raises:
            EnrollError: ``far`` not in (0, 1), or neither ``--data`` nor a cohort. DatasetError: as
                ``calibrate-threshold``.
        """
        from clipfsar.runtime.teaching.openset import fit_threshold, store_threshold
        far = _number(far, "false-accept rate", 0, 1)
        if not 0 < far < 1:
            raise EnrollError(f"false-accept rate must be in (0, 1), got {far}")
        with self._teach:
            b = Bundle.open(self.root)
            if self.data is not None:
                entry = fit_threshold(b, self.data, self.split, far, episodes=100)
            elif b.manifest.cohort:
                entry = cohort_threshold(b, far)
            else:
                raise EnrollError("the bundle has no open-set cohort and the studio was started without --data: "
                                  "run `clipfsar calibrate-threshold BUNDLE --data DATA` once, or restart the "
                                  "studio with --data DATA")
            self._threshold = None  # the refit one is the bundle's now
            self._changed(store_threshold(b, entry))
        return {"threshold": self.threshold_info(), "fit": {k: v for k, v in entry.items() if k != "open_set"}}


def cohort_threshold(bundle: Bundle, far: float, seed: int = 0) -> Dict[str, Any]:
    """The "unknown" threshold on the open-set score (znorm) at false-accept rate ``far``, measured on the bundle's
    own cohort (clips of actions that are not enrolled) by 2-fold cross-fitting: the cohort statistics are fitted on
    one half and the other half is scored, both ways, so no clip scores against statistics it helped fit.

    Returns:
        The manifest's ``threshold`` entry (``score`` znorm, ``value``, ``far``, ``split`` "cohort (2-fold)", counts).
    Raises:
        EnrollError: the bundle has no cohort, or fewer than 4 cohort clips.
    """
    from clipfsar.runtime.engines.backends import OnnxGraph
    from clipfsar.runtime.teaching.calibration import threshold_at_far, video_text_cos
    from clipfsar.runtime.teaching.cohort import SCORE_NAME, ZNorm, load_cohort
    cohort = load_cohort(bundle)
    if cohort is None or len(cohort) < 4:
        raise EnrollError(f"bundle {bundle.root} has no open-set cohort of at least 4 clips to refit on")
    store = bundle.store
    head = OnnxGraph(bundle.graph_path("query_head"), "cpu")
    order = np.random.default_rng(seed).permutation(len(cohort))
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    scores = []
    for fit_half, score_half in (halves, halves[::-1]):
        z = ZNorm.fit(head.run, cohort[fit_half], store.prototypes, store.text_features, store.shots)
        q = np.ascontiguousarray(cohort[score_half])
        out = head.run(query=q, prototypes=store.prototypes, text=store.text_features)
        scores.append(z.known(out["distances"], video_text_cos(q, store.text_features), store.shots))
    s = np.concatenate(scores)
    value = threshold_at_far(s, far)
    info = bundle.manifest.cohort
    return {"score": SCORE_NAME, "value": value, "far": far, "split": "cohort (2-fold)",
            "unknown_clips": int(len(s)), "unknown_classes": int(info.get("classes") or 0),
            "accepted_unknown": float((s >= value).mean())}


__all__ = ["StudioSession", "cohort_threshold", "UNKNOWN"]
