"""Few-shot open-set episodes through a bundle's graphs (numpy + onnxruntime): calibration and threshold fitting.

Protocol (after Berti et al. 2026, arXiv 2603.04125): N-way K-shot episodes over a split's classes; the queries
are one clip of each episode class (known) plus ``unknown`` clips of classes outside the episode. Every clip is
encoded once (T frames, centre sampling); each episode runs ``support_head`` on its support clips and
``query_head`` on its queries. Episodes are seeded: episode i depends on (seed, i) only.

Example:
    >>> feats = encode_split(bundle, Path("data"), "val")
    >>> ep = run_episodes(bundle, feats, way=5, shot=1, episodes=500, seed=0)
    >>> ep.distances.shape  # (episodes, queries, way)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from clipfsar.runtime.base.errors import DatasetError
from clipfsar.runtime.base.redact import refuse_url
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.engines.backends import OnnxGraph
from clipfsar.runtime.teaching.calibration import video_text_cos
from clipfsar.runtime.teaching.splits import group_entries, parse_split
from clipfsar.runtime.teaching.tokenizer import ClipTokenizer
from clipfsar.runtime.video.clips import VIDEO_EXTS, is_clip, natural_sorted, read_clip
from clipfsar.runtime.video.preprocess import preprocess_frames


def read_split(root: Path, split: str) -> Dict[str, List[Path]]:
    """Class name -> clips of ``ROOT/splits/SPLIT.txt`` (lines: class folders, or ``class/clip``); ``_`` reads as
    a space in folder names, as in training.

    Raises:
        DatasetError: missing folder or list, a listed class or clip that does not exist.
    """
    root = Path(root)
    lst = root / "splits" / f"{split}.txt"
    if not lst.is_file():
        raise DatasetError(f"split list not found: {lst} (expected {root}/splits/{{train,val,test}}.txt)")
    folders = {" ".join(p.name.replace("_", " ").split()): p for p in natural_sorted(root.iterdir())
               if p.is_dir() and p.name != "splits" and not p.name.startswith(".")}
    keys = {k: name for name, p in folders.items() for k in (p.name, name)}

    def find(name: str, clip: Path):
        cands = [folders[name] / clip] + [folders[name] / f"{clip.as_posix()}{e}" for e in VIDEO_EXTS]
        return next((c for c in cands if c.exists()), None)

    # every split form training reads (BOM, official CLIP-FSAR paths, MMAction2 lines, backslashes): teaching/splits.py
    entries = parse_split(lst, lambda c: keys.get(c) or keys.get(" ".join(c.replace("_", " ").split())),
                          lambda name, clip: find(name, clip) is not None)
    out: Dict[str, List[Path]] = {}
    for name, rels in group_entries(entries, f"split list {lst}").items():
        for rel in rels:
            if rel is None:
                out.setdefault(name, []).extend(natural_sorted(
                    p for p in folders[name].iterdir() if not p.name.startswith(".") and is_clip(p)))
            else:
                out.setdefault(name, []).append(find(name, rel))
    if not out:
        raise DatasetError(f"split list {lst} is empty")
    return out


@dataclass
class SplitFeatures:
    """Encoded clips of a split: ``classes``; ``clips[c]`` (n_c, T, D) frame features; ``text`` (C, D)."""
    classes: List[str]
    clips: List[np.ndarray]
    text: np.ndarray


def encode_split(bundle: Bundle, root: Path, split: str, backend: str = "cpu") -> SplitFeatures:
    """Encode every clip of a split once with the bundle's image encoder, and every class name's prompt."""
    facts = bundle.manifest.model
    enc = OnnxGraph(bundle.graph_path("image_encoder"), backend)
    txt = OnnxGraph(bundle.graph_path("text_encoder"), backend)
    clips = read_split(root, split)
    names = sorted(clips)
    feats = []
    for n in names:
        if not clips[n]:
            raise DatasetError(f"class '{n}' of split '{split}' has no clips")
        feats.append(np.stack([enc.run(images=preprocess_frames(read_clip(p, facts.frames), facts.preprocess))
                               ["features"] for p in clips[n]]))
    if not bundle.manifest.tokenizer:
        raise DatasetError(f"bundle {bundle.root} has no tokenizer file; export it again")
    tok = ClipTokenizer.from_manifest(bundle.root, bundle.manifest.tokenizer)
    text = txt.run(tokens=tok([facts.prompt.format(n) for n in names]))["text_features"]
    return SplitFeatures(names, feats, text)


@dataclass
class EpisodeOutputs:
    """Per episode and query: ``distances``, ``fused`` (the paper's p), ``cos`` (video-text cosine), all
    (E, Q, way); ``labels`` (E, Q): the true column, or -1 for a query of an unknown class; ``known`` (E, Q): the
    Z-normalised open-set score against a cohort (runtime/teaching/cohort.py), when one was given."""
    distances: np.ndarray
    fused: np.ndarray
    cos: np.ndarray
    labels: np.ndarray
    known: Optional[np.ndarray] = None


def run_episodes(bundle: Bundle, feats: SplitFeatures, way: int = 5, shot: int = 1, episodes: int = 500,
                 seed: int = 0, unknown: int = 0, backend: str = "cpu",
                 cohort: Optional[np.ndarray] = None) -> EpisodeOutputs:
    """Seeded open-set episodes (``unknown`` queries of classes outside the episode; 0 = closed set); with a
    ``cohort`` (M, T, D), each episode's classes are Z-normalised against it and ``known`` is filled in.

    Raises:
        DatasetError: fewer than ``way`` classes with ``shot + 1`` clips, or too few classes for the unknowns.
    """
    sup_g = OnnxGraph(bundle.graph_path("support_head"), backend)
    qry_g = OnnxGraph(bundle.graph_path("query_head"), backend)
    counts = np.array([len(c) for c in feats.clips])
    eligible = np.flatnonzero(counts >= shot + 1)
    if len(eligible) < way:
        raise DatasetError(f"{way}-way {shot}-shot episodes need {way} classes with {shot + 1} clips; "
                           f"{len(eligible)} have that many")
    if unknown and len(feats.classes) <= way:
        raise DatasetError(f"open-set episodes need classes outside the {way} of an episode; the split has "
                           f"{len(feats.classes)}")
    from clipfsar.runtime.teaching.cohort import ZNorm
    dist, fused, cos, labels, known = [], [], [], [], []
    for e in range(episodes):
        rng = np.random.default_rng([int(seed), e])
        cls = rng.choice(eligible, way, replace=False)
        picks = [rng.choice(counts[c], shot + 1, replace=False) for c in cls]
        support = np.stack([feats.clips[c][p[:shot]] for c, p in zip(cls, picks)])  # (way, K, T, D)
        queries = [feats.clips[c][p[shot]] for c, p in zip(cls, picks)]
        lab = list(range(way))
        if unknown:
            others = np.setdiff1d(np.arange(len(feats.classes)), cls)
            for c in rng.choice(others, unknown, replace=len(others) < unknown):
                queries.append(feats.clips[c][rng.integers(counts[c])])
                lab.append(-1)
        q = np.stack(queries)  # (Q, T, D)
        text = feats.text[cls]
        protos = sup_g.run(support=support, text=text)["prototypes"]
        out = qry_g.run(query=q, prototypes=protos, text=text)
        dist.append(out["distances"])
        fused.append(out["probs"])
        cos.append(video_text_cos(q, text))
        labels.append(lab)
        if cohort is not None:
            shots = np.full(way, shot)
            known.append(ZNorm.fit(qry_g.run, cohort, protos, text, shots).known(dist[-1], cos[-1], shots))
    return EpisodeOutputs(np.stack(dist), np.stack(fused), np.stack(cos), np.array(labels),
                          np.stack(known) if known else None)


def fit_calibration(bundle: Bundle, feats: SplitFeatures, shot: int = 1, episodes: int = 300,
                    seed: int = 0) -> Dict:
    """Fit the temperature on closed-set episodes' queries, and the zero-shot map on the same episodes with one
    class per episode (in turn) given by its name only. Returns the manifest's ``calibration`` entry."""
    from clipfsar.runtime.teaching.calibration import fit_report, fit_temperature, fit_zero_shot
    way = min(5, len(feats.classes))
    ep = run_episodes(bundle, feats, way, shot, episodes, seed)
    d, y = ep.distances.reshape(-1, way), ep.labels.reshape(-1)
    tau = fit_temperature(d, y)
    zero_col = np.repeat(np.arange(len(ep.labels)) % way, ep.labels.shape[1])
    zs = fit_zero_shot(-d / tau, ep.cos.reshape(-1, way), zero_col, y)
    out = fit_report(tau, d, y, bundle.manifest.model.frames, zs, episodes)
    out["fitted_on"].update({"way": way, "shot": shot, "seed": seed, "classes": len(feats.classes)})
    return out


def open_set_metrics(bundle: Bundle, feats: SplitFeatures, calibration: Dict, shot: int = 1, episodes: int = 500,
                     seed: int = 0, way: int = 5, cohort: Optional[np.ndarray] = None) -> Dict:
    """AUROC and OSCR of each candidate rejection score, with closed-set accuracy, on open-set episodes
    (``way`` unknown queries per episode); ``znorm`` too when a ``cohort`` (M, T, D) is given."""
    from clipfsar.runtime.teaching.calibration import auroc, calibrated_probs, oscr, rejection_scores
    ep = run_episodes(bundle, feats, way, shot, episodes, seed, unknown=way, cohort=cohort)
    d, f, c = (a.reshape(-1, a.shape[-1]) for a in (ep.distances, ep.fused, ep.cos))
    y = ep.labels.reshape(-1)
    probs = calibrated_probs(d, c, np.ones(way, int), calibration)
    scores = rejection_scores(probs, d, f)
    if ep.known is not None:
        scores["znorm"] = ep.known.reshape(-1)
    known = y >= 0
    correct = probs.argmax(-1)[known] == y[known]
    out = {"way": way, "shot": shot, "episodes": episodes, "seed": seed,
           "closed_set_accuracy": float(correct.mean() * 100), "scores": {}}
    for name, s in scores.items():
        out["scores"][name] = {"auroc": auroc(s[known], s[~known]), "oscr": oscr(s[known], correct, s[~known])}
    return out


def fit_threshold(bundle: Bundle, data: Path, split: str = "val", far: float = 0.05, shot: int = 1,
                  episodes: int = 500, seed: int = 0, backend: str = "cpu",
                  cohort: Optional[Tuple[np.ndarray, Dict]] = None) -> Dict:
    """Fit the "unknown" threshold on clips of ``split`` classes the bundle has not enrolled, at false-accept
    rate ``far``, and measure every candidate rejection score on open-set episodes of the split.

    The threshold is on ``znorm`` (teaching/cohort.py) when there is an open-set cohort (``cohort``: features and
    info from :func:`make_cohort`, else the bundle's own), else on ``max_prob`` (the largest calibrated probability
    over the bundle's enrolled classes): the smallest value that at most ``far`` of those unknown clips reach.

    Returns:
        The ``threshold`` entry for the manifest's calibration (score, value, far, counts, open-set metrics).
    Raises:
        DatasetError: no clip of a class outside the bundle's classes in the split; bad ``far``, ``shot`` or
            ``episodes``.
    """
    from clipfsar.runtime.teaching.calibration import auroc, calibrated_probs, rejection_scores, threshold_at_far
    from clipfsar.runtime.teaching.cohort import SCORE_NAME, ZNorm, load_cohort
    if not 0 < far < 1:
        raise DatasetError(f"--far must be in (0, 1), got {far}")
    for flag, value in (("--shot", shot), ("--episodes", episodes)):
        if not isinstance(value, int) or value < 1:
            raise DatasetError(f"{flag} must be a positive whole number, got {value!r}")
    feats = encode_split(bundle, Path(refuse_url(data, "--data")), split, backend)
    store = bundle.store
    enrolled = set(store.class_names)
    unknown = [i for i, c in enumerate(feats.classes) if c not in enrolled]
    if not unknown:
        raise DatasetError(f"split '{split}' of {data} has no class outside the bundle's enrolled classes: the "
                           f"threshold needs clips of classes that are not enrolled")
    cal = dict(bundle.manifest.calibration)
    if not cal.get("temperature"):
        cal["temperature"] = float(bundle.manifest.model.frames)  # the paper's softmax((T - D) / T)
    head = OnnxGraph(bundle.graph_path("query_head"), backend)
    known_idx = [i for i, c in enumerate(feats.classes) if c in enrolled]
    n_unknown = sum(len(feats.clips[i]) for i in unknown)
    q = np.concatenate([feats.clips[i] for i in unknown + known_idx])  # (M, T, D): unknown clips first
    out = head.run(query=q, prototypes=store.prototypes, text=store.text_features)
    cos = video_text_cos(q, store.text_features)
    probs = calibrated_probs(out["distances"], cos, store.shots, cal)
    scores = rejection_scores(probs, out["distances"], out["probs"])
    cohort, info = cohort if cohort is not None else (load_cohort(bundle), bundle.manifest.cohort)
    name = "max_prob"
    if cohort is not None:
        overlap = sorted(set(info.get("class_names", [])) & {feats.classes[i] for i in unknown})
        if overlap:
            raise DatasetError(f"the bundle's open-set cohort holds clips of {', '.join(overlap)}, which split "
                               f"'{split}' uses as unknown: fit the threshold on another split, or rebuild the "
                               f"cohort from one (--cohort-split)")
        name = SCORE_NAME
        znorm = ZNorm.fit(head.run, cohort, store.prototypes, store.text_features, store.shots)
        scores[name] = znorm.known(out["distances"], cos, store.shots)
    s_unknown, s_known = scores[name][:n_unknown], scores[name][n_unknown:]
    value = threshold_at_far(s_unknown, far)
    entry = {"score": name, "value": value, "far": far, "split": split, "unknown_clips": int(n_unknown),
             "unknown_classes": len(unknown), "accepted_unknown": float((s_unknown >= value).mean())}
    if len(s_known):  # the deployed bundle's own operating point: clips of its enrolled classes in the split
        entry.update(enrolled_clips=int(len(s_known)), accepted_enrolled=float((s_known >= value).mean()),
                     bundle_auroc=auroc(s_known, s_unknown))
    way = min(5, len(feats.classes) - 1)
    if way >= 2:  # open-set episodes need classes outside each episode
        entry["open_set"] = open_set_metrics(bundle, feats, cal, shot, episodes, seed, way, cohort)
    return entry


def make_cohort(bundle: Bundle, data: Path, split: str = "train", max_clips: int = 256, seed: int = 0,
                backend: str = "cpu") -> Tuple[np.ndarray, Dict]:
    """Encode up to ``max_clips`` clips of ``split`` (classes the bundle has not enrolled, spread evenly): the
    open-set cohort (runtime/teaching/cohort.py) as ((M, T, D) features, manifest info); store it with
    ``bundle_edit.set_cohort``.

    Raises:
        DatasetError: no such split, or no clip of a class outside the enrolled ones.
    """
    from clipfsar.runtime.teaching.cohort import sample_cohort
    feats = encode_split(bundle, Path(refuse_url(data, "--data")), split, backend)
    enrolled = set(bundle.store.class_names)
    keep = [i for i, c in enumerate(feats.classes) if c not in enrolled]
    if not keep:
        raise DatasetError(f"split '{split}' of {data} has only enrolled classes; the open-set cohort needs clips "
                           f"of other actions")
    cohort, n = sample_cohort([feats.clips[i] for i in keep], max_clips, seed)
    info = {"split": split, "classes": n, "class_names": [feats.classes[i] for i in keep], "seed": seed}
    return cohort, info


def build_cohort(bundle: Bundle, data: Path, split: str = "train", max_clips: int = 256, seed: int = 0,
                 backend: str = "cpu") -> Bundle:
    """:func:`make_cohort`, then store it in the bundle atomically; returns the reopened bundle."""
    from clipfsar.runtime.bundle.edit import set_cohort
    return set_cohort(bundle.root, *make_cohort(bundle, data, split, max_clips, seed, backend))


def store_threshold(bundle: Bundle, entry: Dict) -> Bundle:
    """Write a threshold entry into the manifest's calibration (keeping the temperature), atomically."""
    from clipfsar.runtime.bundle.edit import update_manifest
    cal = dict(bundle.manifest.calibration)
    cal["threshold"] = entry
    return update_manifest(bundle.root, "calibration", cal)
