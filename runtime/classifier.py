"""The embeddable classifier: ``Classifier.load(bundle)``, ``classify_clip(frames)``, ``stream(source)``.

Example:
    >>> from clipfsar.runtime import Classifier
    >>> clf = Classifier.load("bundle/", backend="auto")
    >>> for d in clf.stream("0"):            # camera 0
    ...     print(d.label, d.score, d.t_end)
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .bundle import Bundle
from .engines import create_graph
from .errors import ClipFsarError
from .fusion import fuse_probs
from .precision import choose_precisions
from .preprocess import preprocess_frames
from .sources import Frame, Gap, SourceError, open_source
from .video import sample_indices

log = logging.getLogger(__name__)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClipResult:
    """The class of one clip: ``label`` (or ``unknown``), its ``score``, and every class's score.

    ``scores`` are the calibrated probabilities when the bundle has a calibration (see runtime/calibration.py);
    ``fused`` are the paper's fused probabilities ``p_vt^beta * softmax((T - D) / T)^(1 - beta)``.
    """
    label: str
    score: float
    scores: Tuple[float, ...]
    fused: Tuple[float, ...] = ()


@dataclass(frozen=True)
class Decision:
    """One streaming decision over a window of frames.

    Attributes:
        label: the top class, or ``unknown`` when its smoothed score is below the threshold.
        score: the smoothed score of the top class.
        scores: every class's smoothed score, in ``Classifier.class_names`` order.
        t_start, t_end: times (seconds) of the window's first and last sampled frames.
        frame: index of the window's last sampled frame in the source.
        source: the source's name.
        repeated_frames: the source (a file or folder) ended before T frames were sampled; this one decision
            covers the whole clip with frames repeated TSN-style, as in training.
    """
    label: str
    score: float
    scores: Tuple[float, ...]
    t_start: float
    t_end: float
    frame: int
    source: str = ""
    repeated_frames: bool = False


@dataclass
class StreamStats:
    """Counters and per-stage seconds, for benchmarks and for checking that each sampled frame is encoded once."""
    frames_read: int = 0
    frames_sampled: int = 0
    encoder_calls: int = 0
    encoder_images: int = 0
    head_calls: int = 0
    decisions: int = 0
    gaps: int = 0
    seconds: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("decode", "preprocess", "encoder", "head", "post"), 0.0))
    precisions: Dict[str, str] = field(default_factory=dict)  # graph -> the variant it really runs


class Classifier:
    """Few-shot action classifier over a bundle, torch-free (onnxruntime + numpy + OpenCV)."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int = 0, spinning: bool = True,
                 precision: str = "auto"):
        self.bundle = bundle
        facts = bundle.manifest.model
        self.facts, self.prep = facts, facts.preprocess
        cache = bundle.root / "engines"
        graphs = bundle.manifest.graphs
        chosen = choose_precisions(bundle, precision, backend)
        self.precisions: Dict[str, str] = {g: chosen[g] for g in ("image_encoder", "query_head")}
        p_enc, p_head = self.precisions["image_encoder"], self.precisions["query_head"]
        self.image_encoder = create_graph(bundle.graph_path("image_encoder", p_enc), backend, cache, threads,
                                          precision=p_enc, spec=graphs["image_encoder"], spinning=spinning,
                                          graph_sha256=bundle.graph_sha256("image_encoder", p_enc))
        self.query_head = create_graph(bundle.graph_path("query_head", p_head), backend, cache, threads,
                                       precision=p_head, spec=graphs["query_head"], spinning=spinning,
                                       graph_sha256=bundle.graph_sha256("query_head", p_head))
        self.backend = self.image_encoder.backend
        for g, graph in (("image_encoder", self.image_encoder), ("query_head", self.query_head)):
            self.precisions[g] = getattr(graph, "served_precision", self.precisions[g])  # on a Triton server
        self.providers = {"image_encoder": self.image_encoder.providers[0],
                          "query_head": self.query_head.providers[0]}
        self.class_names: Tuple[str, ...] = bundle.store.class_names
        self.stats = StreamStats(precisions=dict(self.precisions))
        self._use_bundle(bundle)

    # ----- classes and calibration (runtime/enroll.py, runtime/classes.py, runtime/calibration.py) ---------------
    def _use_bundle(self, bundle: Bundle) -> None:
        """Adopt a (re)opened bundle's store and calibration; the sessions stay."""
        from .calibration import runtime_calibration, split_threshold
        self.bundle, self.class_names = bundle, bundle.store.class_names
        cal = runtime_calibration(bundle.manifest.calibration, bundle.store.shots, self.facts.frames,
                                  self.facts.vt_scale)  # uncalibrated with zero-shot classes: the paper's scales
        self._calibration = cal
        self.default_threshold = split_threshold(cal)[1] or 0.0

    @property
    def calibrated(self) -> bool:
        """True when scores are the calibrated probabilities (a fitted temperature, or zero-shot classes)."""
        return bool(self._calibration.get("temperature"))

    def enroll(self, name: str, clips: Sequence = (), add: bool = False, replace: bool = False) -> None:
        """Enrol class ``name`` from clips (video files, frame folders or frame lists; none = zero-shot), torch-free,
        writing the bundle's store atomically; this classifier uses it at once. See :class:`~.enroll.Enroller`.

        Raises:
            EnrollError, TokenizerError, VideoError, BundleError (see ``Enroller.enroll``).
        """
        from .enroll import Enroller
        if add and replace:
            raise ClipFsarError("enroll: pass add or replace, not both")
        mode = "add" if add else "replace" if replace else "new"
        self._use_bundle(Enroller(self.bundle).enroll(name, clips, mode))

    def remove_class(self, name: str) -> None:
        """Remove an enrolled class from the bundle (atomic); this classifier stops scoring it."""
        from .classes import remove_class
        self._use_bundle(remove_class(self.bundle.root, name))

    def rename_class(self, old: str, new: str) -> None:
        """Rename an enrolled class (its text feature and prototype follow the new name); see classes.rename_class."""
        from .classes import rename_class
        self._use_bundle(rename_class(self.bundle.root, old, new))

    @staticmethod
    def load(bundle: Union[str, Path], backend: str = "auto", threads: int = 0, spinning: bool = True,
             precision: str = "auto") -> "Classifier":
        """Open and validate a bundle and create its inference sessions.

        Args:
            bundle: the bundle folder.
            backend: ``auto`` (the best that truly runs), ``trt`` (native TensorRT engines), ``tensorrt``
                (onnxruntime's TensorRT EP), ``cuda`` or ``cpu``; or a Triton server running ``clipfsar serve``
                (``grpc://HOST:PORT``, ``http://HOST:PORT``): the encoder and head calls go there, everything
                else stays here (runtime/triton_client.py).
            threads: CPU threads per session (0 = onnxruntime's default).
            spinning: let idle onnxruntime threads spin (False when a video decoder shares the cores).
            precision: ``auto`` (from the bundle's precision report, see runtime/precision.py), ``fp32``,
                ``fp16`` or ``int8``; the variant each graph really runs is in ``clf.precisions``.
        Raises:
            BundleError: the bundle fails validation, or has no variant of ``precision`` (lists those it has).
            BackendUnavailableError: the backend cannot run here. PrecisionUnavailableError: the backend cannot
            run that variant (dynamic int8 on a GPU).
        """
        clf = Classifier(Bundle.open(Path(bundle)), backend, threads, spinning, precision)
        log.info("bundle %s: %d classes; image encoder on %s (%s), heads on %s (%s)", bundle, len(clf.class_names),
                 clf.providers["image_encoder"], clf.precisions["image_encoder"], clf.providers["query_head"],
                 clf.precisions["query_head"])
        return clf

    # ----- building blocks ------------------------------------------------------------------------------------
    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 BGR frames -> (B, D) image features, in one encoder call."""
        t0 = time.perf_counter()
        x = preprocess_frames(images, self.prep)
        t1 = time.perf_counter()
        feats = self.image_encoder.run(images=x)["features"]
        t2 = time.perf_counter()
        s = self.stats
        s.seconds["preprocess"] += t1 - t0
        s.seconds["encoder"] += t2 - t1
        s.encoder_calls += 1
        s.encoder_images += len(images)
        return feats

    def scores(self, feats: np.ndarray, beta: Optional[float] = None) -> np.ndarray:
        """(B, T, D) frame features -> (B, N) class probabilities (the bundle's fusion, or ``beta``)."""
        t0 = time.perf_counter()
        store = self.bundle.store
        out = self.query_head.run(query=np.ascontiguousarray(feats, np.float32), prototypes=store.prototypes,
                                  text=store.text_features)
        probs = out["probs"] if beta is None else fuse_probs(out["p_fewshot"], out["p_videotext"], beta)
        if beta is None and self.calibrated:  # what users read: calibrated probabilities (runtime/calibration.py)
            from .calibration import calibrated_probs, video_text_cos
            probs = calibrated_probs(out["distances"], video_text_cos(feats, store.text_features), store.shots,
                                     self._calibration).astype(np.float32)
        self.stats.seconds["head"] += time.perf_counter() - t0
        self.stats.head_calls += 1
        return probs

    def _result(self, probs: np.ndarray, threshold: Optional[float]) -> Tuple[str, float]:
        if threshold is None:  # the bundle's threshold (fitted by `clipfsar calibrate-threshold`), else none
            threshold = self.default_threshold
        top = int(np.argmax(probs))
        score = float(probs[top])
        return (self.class_names[top] if score >= threshold else UNKNOWN), score

    # ----- clips ----------------------------------------------------------------------------------------------
    def classify_clip(self, frames: Sequence[np.ndarray], threshold: Optional[float] = None) -> ClipResult:
        """Classify one clip given as frames (uint8 BGR, as OpenCV gives them); T are sampled TSN-style.

        ``threshold``: below it the label is ``unknown``; None = the bundle's fitted threshold (none: 0).

        Raises:
            ClipFsarError: no frames.
        """
        if len(frames) == 0:
            raise ClipFsarError("classify_clip: no frames given")
        idx = sample_indices(len(frames), self.facts.frames, "center")
        feats = self.encode([frames[i] for i in idx])[None]  # (1, T, D)
        probs = self.scores(feats)[0]
        fused = self.scores(feats, beta=self.facts.beta)[0] if self.calibrated else probs
        label, score = self._result(probs, threshold)
        return ClipResult(label, score, tuple(float(p) for p in probs), tuple(float(p) for p in fused))

    # ----- streams --------------------------------------------------------------------------------------------
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
                    probs = self.scores(np.stack([np.stack([f for _, f in states[i].ring]) for i in ready]))
                    for i, p in zip(ready, probs):
                        d = self._decide(states[i], p, threshold)
                        yield i, d
        finally:
            for st in states:
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
        d = self._decide(st, self.scores(feats[None])[0], threshold)
        d = dataclasses.replace(d, repeated_frames=True)
        st.last = d
        return d

    def _decide(self, st: "_StreamState", probs: np.ndarray, threshold: float) -> Decision:
        t0 = time.perf_counter()
        st.history.append(probs)
        smoothed = np.mean(st.history, axis=0)
        label, score = self._result(smoothed, threshold)
        first, last = st.ring[0][0], st.ring[-1][0]
        d = Decision(label, score, tuple(float(p) for p in smoothed), first.time, last.time, last.index,
                     st.source.name)
        st.last = d
        self.stats.decisions += 1
        self.stats.seconds["post"] += time.perf_counter() - t0
        return d


class _StreamState:
    def __init__(self, source, frames: int, smooth: int):
        self.source = source
        self.frames = iter(source.frames())
        self.ring: Deque[Tuple[Frame, np.ndarray]] = deque(maxlen=frames)  # (frame, (D,) feature)
        self.history: Deque[np.ndarray] = deque(maxlen=smooth)
        self.next_t: Optional[float] = None
        self.since = 0
        self.last: Optional[Decision] = None
        self.last_read = 0.0
