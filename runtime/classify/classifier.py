"""The embeddable classifier: ``Classifier.load(bundle)``, ``classify_clip(frames)``, ``stream(source)``.

Example:
    >>> from clipfsar.runtime import Classifier
    >>> clf = Classifier.load("bundle/", backend="auto")
    >>> for d in clf.stream("0"):            # camera 0
    ...     print(d.label, d.score, d.t_end)
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from clipfsar.runtime.base.errors import BundleError, ClipFsarError
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.classify.fusion import fuse_probs
from clipfsar.runtime.classify.results import UNKNOWN, ClipResult, Decision, StreamStats
from clipfsar.runtime.classify.streaming import StreamingMixin
from clipfsar.runtime.engines.backends import create_graph
from clipfsar.runtime.engines.cache_dir import engine_cache_dir
from clipfsar.runtime.engines.precision import choose_precisions
from clipfsar.runtime.video.clips import sample_indices
from clipfsar.runtime.video.preprocess import preprocess_frames

__all__ = ["Classifier", "ClipResult", "Decision", "StreamStats", "UNKNOWN"]

log = logging.getLogger(__name__)


class Classifier(StreamingMixin):
    """Few-shot action classifier over a bundle, torch-free (onnxruntime + numpy + OpenCV)."""

    def __init__(self, bundle: Bundle, backend: str = "auto", threads: int = 0, spinning: bool = True,
                 precision: str = "auto", cache_dir: Optional[Path] = None):
        self.bundle = bundle
        facts = bundle.manifest.model
        self.facts, self.prep = facts, facts.preprocess
        cache = engine_cache_dir(bundle.root, cache_dir)  # --cache-dir, $CLIPFSAR_CACHE_DIR, engines/, per user
        graphs = bundle.manifest.graphs
        chosen = choose_precisions(bundle, precision, backend, ("image_encoder", "query_head"))
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

    # ----- classes and calibration (teaching/enroll.py, teaching/classes.py, teaching/calibration.py) ----------
    def _use_bundle(self, bundle: Bundle) -> None:
        """Adopt a (re)opened bundle's store and calibration; the sessions stay."""
        from clipfsar.runtime.teaching.calibration import runtime_calibration, split_threshold
        self.bundle, self.class_names = bundle, bundle.store.class_names
        cal = runtime_calibration(bundle.manifest.calibration, bundle.store.shots, self.facts.frames,
                                  self.facts.vt_scale)  # uncalibrated with zero-shot classes: the paper's scales
        self._calibration = cal
        self.open_set_score, threshold = split_threshold(cal)
        self.default_threshold = threshold or 0.0
        self._znorm = None
        if self.open_set_score == "znorm":  # per-class cohort statistics for the open-set score (teaching/cohort.py)
            from clipfsar.runtime.teaching.cohort import ZNorm, load_cohort
            cohort = load_cohort(bundle)
            if cohort is None:
                raise BundleError(f"bundle {bundle.root}: its 'unknown' threshold is on 'znorm' but it has no "
                                  f"open-set cohort; run `clipfsar calibrate-threshold` again")
            store = bundle.store
            self._znorm = ZNorm.fit(self.query_head.run, cohort, store.prototypes, store.text_features, store.shots)

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
        from clipfsar.runtime.teaching.enroll import Enroller
        if add and replace:
            raise ClipFsarError("enroll: pass add or replace, not both")
        mode = "add" if add else "replace" if replace else "new"
        self._use_bundle(Enroller(self.bundle).enroll(name, clips, mode))

    def remove_class(self, name: str) -> None:
        """Remove an enrolled class from the bundle (atomic); this classifier stops scoring it."""
        from clipfsar.runtime.teaching.classes import remove_class
        self._use_bundle(remove_class(self.bundle.root, name))

    def rename_class(self, old: str, new: str) -> None:
        """Rename an enrolled class (its text feature and prototype follow the new name); see classes.rename_class."""
        from clipfsar.runtime.teaching.classes import rename_class
        self._use_bundle(rename_class(self.bundle.root, old, new))

    @staticmethod
    def load(bundle: Union[str, Path], backend: str = "auto", threads: int = 0, spinning: bool = True,
             precision: str = "auto", cache_dir: Optional[Union[str, Path]] = None) -> "Classifier":
        """Open and validate a bundle and create its inference sessions.

        Args:
            bundle: the bundle folder.
            backend: ``auto`` (the best that truly runs), ``trt`` (native TensorRT engines), ``tensorrt``
                (onnxruntime's TensorRT EP), ``cuda`` or ``cpu``; or a Triton server running ``clipfsar serve``
                (``grpc://HOST:PORT``, ``http://HOST:PORT``): the encoder and head calls go there, everything
                else stays here (runtime/engines/triton_client.py).
            threads: CPU threads per session (0 = onnxruntime's default).
            spinning: let idle onnxruntime threads spin (False when a video decoder shares the cores).
            precision: ``auto`` (from the bundle's precision report, see runtime/engines/precision.py), ``fp32``,
                ``fp16`` or ``int8``; the variant each graph really runs is in ``clf.precisions``.
            cache_dir: engine cache folder (``--cache-dir``; None: ``$CLIPFSAR_CACHE_DIR``, else the bundle's
                ``engines/``, else a per-user folder for a read-only bundle: runtime/engines/cache_dir.py).
        Raises:
            BundleError: the bundle fails validation, or has no variant of ``precision`` (lists those it has).
            BackendUnavailableError: the backend cannot run here. PrecisionUnavailableError: the backend cannot
            run that variant (dynamic int8 on a GPU).
        """
        clf = Classifier(Bundle.open(Path(bundle)), backend, threads, spinning, precision,
                         None if cache_dir is None else Path(cache_dir))
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
        """(B, T, D) frame features -> (B, N) class probabilities: the calibrated ones when the bundle has a
        calibration, else the bundle's fusion; with ``beta``, the paper's fusion at that beta."""
        return self._scores(feats, beta)[0]

    def _scores(self, feats: np.ndarray, beta: Optional[float] = None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """``scores`` and the query head's raw outputs, from one head call."""
        t0 = time.perf_counter()
        store = self.bundle.store
        out = self.query_head.run(query=np.ascontiguousarray(feats, np.float32), prototypes=store.prototypes,
                                  text=store.text_features)
        probs = out["probs"] if beta is None else fuse_probs(out["p_fewshot"], out["p_videotext"], beta)
        if (beta is None and self.calibrated) or self._znorm is not None:
            from clipfsar.runtime.teaching.calibration import calibrated_probs, video_text_cos
            cos = video_text_cos(feats, store.text_features)
            if beta is None and self.calibrated:  # what users read: calibrated probabilities (teaching/calibration.py)
                probs = calibrated_probs(out["distances"], cos, store.shots, self._calibration).astype(np.float32)
            if self._znorm is not None:  # the open-set score (runtime/teaching/cohort.py), (B,)
                out = dict(out, known=self._znorm.known(out["distances"], cos, store.shots))
        self.stats.seconds["head"] += time.perf_counter() - t0
        self.stats.head_calls += 1
        return probs, out

    def _result(self, probs: np.ndarray, threshold: Optional[float],
                known: Optional[float] = None) -> Tuple[str, float]:
        """(label, score): the top class and its score, or ``unknown`` when the open-set score (``known`` with a
        'znorm' threshold, else the top score) is below the threshold."""
        if threshold is None:  # the bundle's threshold (fitted by `clipfsar calibrate-threshold`), else none
            threshold = self.default_threshold
        top = int(np.argmax(probs))
        score = float(probs[top])
        gate = known if known is not None else score
        return (self.class_names[top] if gate >= threshold else UNKNOWN), score

    # ----- clips ----------------------------------------------------------------------------------------------
    def classify_clip(self, frames: Sequence[np.ndarray], threshold: Optional[float] = None) -> ClipResult:
        """Classify one clip given as frames (uint8 BGR, as OpenCV gives them; uint16 is scaled, gray expanded and
        BGRA's alpha dropped: runtime/video/preprocess.as_bgr_uint8); T are sampled TSN-style.

        ``threshold``: below it the label is ``unknown``; None = the bundle's fitted threshold (none: 0).

        Raises:
            ClipFsarError: no frames. VideoError: a frame of another dtype or shape (named with its index).
        """
        if len(frames) == 0:
            raise ClipFsarError("classify_clip: no frames given")
        idx = sample_indices(len(frames), self.facts.frames, "center")
        feats = self.encode([frames[i] for i in idx])[None]  # (1, T, D)
        probs, out = self._scores(feats)
        probs = probs[0]
        fused = fuse_probs(out["p_fewshot"], out["p_videotext"], self.facts.beta)[0] if self.calibrated else probs
        known = float(out["known"][0]) if "known" in out else None
        label, score = self._result(probs, threshold, known)
        return ClipResult(label, score, tuple(float(p) for p in probs), tuple(float(p) for p in fused), known)
