"""On-device enrolment, torch-free: a class from its name and K clips (or its name alone), into the bundle's store.

The path is the one export takes, through the bundle's own graphs: name -> prompt -> runtime tokenizer (open_clip's
ids) -> ``text_encoder`` -> text feature (D,); each clip -> T frames sampled TSN-style at the centre of equal
segments (the runtime's sampling; a clip shorter than T frames has frames repeated, as in training) -> the
runtime's preprocessing -> ``image_encoder`` -> (T, D); the K shots -> ``support_head`` (which pools them as the
model does) -> the text-modulated prototype (T, D). The store also keeps each class's mean support features, so
``add`` pools new shots with the old ones exactly as enrolling all of them at once would.

Example:
    >>> e = Enroller(Bundle.open("bundle"))
    >>> bundle = e.enroll("waving a hand", ["a.mp4", "b.mp4"])          # new class, 2 shots
    >>> bundle = e.enroll("waving a hand", ["c.mp4"], mode="add")       # now 3 shots
    >>> bundle = e.enroll("juggling", [])                               # zero-shot: name only
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from clipfsar.runtime.base.errors import BundleError, ClipFsarError, VideoError
from clipfsar.runtime.base.redact import refuse_url
from clipfsar.runtime.bundle.edit import replace_store
from clipfsar.runtime.bundle.names import bad_name_characters
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.bundle.store import PrototypeStore
from clipfsar.runtime.engines.backends import create_graph
from clipfsar.runtime.engines.cache_dir import engine_cache_dir
from clipfsar.runtime.teaching.tokenizer import ClipTokenizer
from clipfsar.runtime.video.clips import IMAGE_EXTS, VIDEO_EXTS, count_frames, is_clip, read_clip, sample_indices
from clipfsar.runtime.video.preprocess import as_bgr_uint8, preprocess_frames

log = logging.getLogger(__name__)
Clip = Union[str, Path, np.ndarray, Sequence[np.ndarray]]
MODES = ("new", "add", "replace")


class EnrollError(ClipFsarError, ValueError):
    """A class cannot be enrolled, removed or renamed as asked (bad name, clip, or mode)."""


def check_name(name: str) -> str:
    """A class name, stripped; refuses empty or whitespace-only names and control characters (:mod:`.names`)."""
    if not isinstance(name, str) or not name.strip():
        raise EnrollError(f"class name {name!r} is empty or whitespace only")
    bad = bad_name_characters(name.strip())
    if bad:
        raise EnrollError(f"class name {name.strip()!r} holds control characters ({bad}); use printable text")
    return name.strip()


class Enroller:
    """Computes text features and prototypes with a bundle's graphs and writes them into its store.

    Args:
        bundle: the opened bundle. backend: the backend of the three graphs (``cpu`` is plenty; ``trt`` on a
        Jetson without onnxruntime). cache_dir: engine cache (runtime/engines/cache_dir.py; unused on ``cpu``).
    Raises:
        BundleError: the bundle has no tokenizer file, text encoder or support head.
    """

    def __init__(self, bundle: Bundle, backend: str = "cpu", threads: int = 0, cache_dir: Optional[Path] = None):
        self.bundle, self._cache_dir = bundle, cache_dir
        m = bundle.manifest
        missing = [g for g in ("image_encoder", "text_encoder", "support_head") if g not in m.graphs]
        if missing:
            raise BundleError(f"bundle {bundle.root} has no {' or '.join(missing)} graph: it cannot enrol classes "
                              f"(export it again with this version)")
        if not m.tokenizer:
            raise BundleError(f"bundle {bundle.root} has no tokenizer file (exported by an older version): "
                              f"export it again to enrol classes on the device")
        self.tokenizer = ClipTokenizer.from_manifest(bundle.root, m.tokenizer)
        self._backend, self._threads = backend, threads
        self._graphs: Dict[str, Any] = {}  # OnnxGraph or TrtGraph (create_graph)

    def _graph(self, name: str):
        if name not in self._graphs:
            cache = None if self._backend == "cpu" else engine_cache_dir(self.bundle.root, self._cache_dir)
            spec = self.bundle.manifest.graphs[name]
            self._graphs[name] = create_graph(self.bundle.graph_path(name), self._backend, cache, self._threads,
                                              spec=spec, graph_sha256=spec.sha256)
        return self._graphs[name]

    # ----- features -------------------------------------------------------------------------------------------
    def tokens(self, name: str) -> np.ndarray:
        """The prompt's token row (1, L) for ``name``; refuses a prompt longer than the text context."""
        prompt = self.bundle.manifest.model.prompt.format(name)
        self.tokenizer.check_fits(prompt, what=f"class name {name!r} in the prompt")
        return self.tokenizer([prompt])

    def text_feature(self, name: str) -> np.ndarray:
        """(D,) text feature of the prompt with ``name``, from the bundle's ``text_encoder``."""
        return self._graph("text_encoder").run(tokens=self.tokens(name))["text_features"][0]

    def clip_features(self, clip: Clip) -> np.ndarray:
        """(T, D) frame features of one clip: a video file, a folder of frames, or frames (uint8 BGR arrays).

        Raises:
            VideoError: the clip is missing, not a video file (by extension) or a folder of frames, unreadable, or
                has no frames.
        """
        facts = self.bundle.manifest.model
        T = facts.frames
        if isinstance(clip, (str, Path)):
            path = Path(refuse_url(clip, "a clip"))
            if not path.exists():
                raise VideoError(f"clip not found: {path}")
            if not is_clip(path):  # OpenCV's FFmpeg would read a text file as frames
                raise VideoError(f"clip {path} is not a video file ({', '.join(VIDEO_EXTS)}) or a folder of image "
                                 f"frames ({', '.join(IMAGE_EXTS)})")
            n = count_frames(path)
            if n == 0:
                raise VideoError(f"clip {path} has no decodable frames")
            if n < T:
                log.info("clip %s has %d frames < T=%d: frames are repeated, as in training", path, n, T)
            frames = read_clip(path, T, "center", n_frames=n)
        else:
            arr = list(clip)
            if not arr:
                raise VideoError("a clip given as frames has no frames")
            idx = sample_indices(len(arr), T, "center")  # uint16, gray and BGRA converted, others refused
            frames = [as_bgr_uint8(arr[i], f"frame {i} of a clip given as frames") for i in idx]
        x = preprocess_frames(frames, facts.preprocess)
        return self._graph("image_encoder").run(images=x)["features"]

    def prototype(self, support: np.ndarray, text: np.ndarray) -> np.ndarray:
        """support (K, T, D) features, text (D,) -> (T, D) prototype through the bundle's ``support_head``."""
        out = self._graph("support_head").run(support=np.ascontiguousarray(support[None], np.float32),
                                              text=np.ascontiguousarray(text[None], np.float32))
        return out["prototypes"][0]

    # ----- store changes --------------------------------------------------------------------------------------
    def _check_distinct(self, name: str, store: PrototypeStore, skip: Optional[str]) -> None:
        """Refuse a name whose prompt tokenises exactly as an enrolled class's (other than ``skip``)."""
        mine = self.tokens(name)
        for other in store.class_names:
            if other == skip:
                continue
            if other == name:
                raise EnrollError(f"class '{name}' is already enrolled; pass --add to add shots to it or "
                                  f"--replace to enrol it again (nothing was changed)")
            try:
                theirs = self.tokenizer([self.bundle.manifest.model.prompt.format(other)])
            except ClipFsarError:
                continue
            if np.array_equal(mine, theirs):
                raise EnrollError(f"class name '{name}' tokenises exactly as the enrolled class '{other}' (the text "
                                  f"encoder cannot tell them apart); choose another name or rename '{other}'")

    def enroll(self, name: str, clips: Sequence[Clip] = (), mode: str = "new", timeout: float = 30.0) -> Bundle:
        """Enrol ``name`` from ``clips`` (none: zero-shot, text feature only) and write the store atomically.

        Args:
            name: the class name (put into the bundle's prompt, e.g. ``a photo of {}``).
            clips: video files, frame folders, or frame lists (uint8 BGR). Empty: a zero-shot class.
            mode: ``new`` (refuses an enrolled name), ``add`` (pools these shots with the class's), ``replace``.
            timeout: seconds to wait for another writer's lock.
        Returns:
            The reopened bundle.
        Raises:
            EnrollError: bad name or mode, name already enrolled / not enrolled, indistinguishable tokens.
            TokenizerError: the prompt is longer than the text context (token count and limit in the message).
            VideoError: a clip cannot be read. BundleError: read-only or locked bundle.
        """
        name = check_name(name)
        if mode not in MODES:
            raise EnrollError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
        if mode == "add" and not clips:
            raise EnrollError(f"--add needs clips to add to class '{name}'")
        self.tokens(name)  # refuse a too-long name before decoding any clip
        feats = np.stack([self.clip_features(c) for c in clips]) if clips else None  # (K, T, D)
        text = self.text_feature(name)
        facts = self.bundle.manifest.model
        T, D = facts.frames, facts.embed_dim

        def change(store: PrototypeStore) -> PrototypeStore:
            present = name in store.class_names
            if mode == "new":
                self._check_distinct(name, store, None)
            elif not present:
                raise EnrollError(f"class '{name}' is not enrolled; nothing to {mode} (enrolled: "
                                  f"{', '.join(store.class_names) or 'none'})")
            else:
                self._check_distinct(name, store, name)
            k_new = 0 if feats is None else len(feats)
            if feats is None:
                mean, proto, shots, tx = np.zeros((T, D), np.float32), np.zeros((T, D), np.float32), 0, text
            elif mode == "add" and store.shots[store.class_names.index(name)] > 0:
                i = store.class_names.index(name)
                if store.support_features is None or np.isnan(store.support_features[i]).any():
                    raise EnrollError(f"class '{name}' has no stored support features (older bundle): enrol it "
                                      f"again with --replace and all its clips")
                k_old, tx = int(store.shots[i]), store.text_features[i]
                shots = k_old + k_new
                mean = (k_old * store.support_features[i] + feats.sum(axis=0)) / shots
                if facts.shot_pooling == "before":
                    proto = self.prototype(mean[None], tx)
                else:
                    proto = (k_old * store.prototypes[i] + k_new * self.prototype(feats, tx)) / shots
            else:
                tx = store.text_features[store.class_names.index(name)] if mode == "add" else text
                mean, proto, shots = feats.mean(axis=0), self.prototype(feats, tx), k_new
            return _put(store, name, proto, tx, shots, mean)

        bundle = replace_store(self.bundle.root, change, timeout)
        self.bundle = bundle
        return bundle


def _support_or_nan(store: PrototypeStore) -> np.ndarray:
    """The stored mean support features; NaN rows for classes stored without them (older bundles)."""
    if store.support_features is not None:
        return store.support_features
    return np.full(store.prototypes.shape, np.nan, np.float32)


def _put(store: PrototypeStore, name: str, proto: np.ndarray, text: np.ndarray, shots: int,
         mean: np.ndarray) -> PrototypeStore:
    """The store with class ``name`` set (replaced in place, or appended)."""
    names: List[str] = list(store.class_names)
    protos, texts = store.prototypes.copy(), store.text_features.copy()
    shot_arr, support = store.shots.copy(), _support_or_nan(store).copy()
    if name in names:
        i = names.index(name)
        protos[i], texts[i], shot_arr[i], support[i] = proto, text, shots, mean
    else:
        names.append(name)
        protos = np.concatenate([protos, proto[None].astype(np.float32)])
        texts = np.concatenate([texts, np.asarray(text, np.float32)[None]])
        shot_arr = np.concatenate([shot_arr, np.array([shots], shot_arr.dtype)])
        support = np.concatenate([support, np.asarray(mean, np.float32)[None]])
    return PrototypeStore(tuple(names), protos.astype(np.float32), texts.astype(np.float32), shot_arr,
                          support.astype(np.float32))
