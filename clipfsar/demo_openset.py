"""The demo's open-set measurement, torch-free on a bundle's graphs: AUROC and OSCR of "unknown" at 1 and 5 shots.

Two kinds of unknown queries, each in seeded 5-way K-shot episodes over the bundle's split (the test classes):

* ``protocol``: clips of the split's classes outside the episode (the few-shot open-set protocol of
  ``runtime.teaching.openset.open_set_metrics``);
* ``factor_sharing``: clips of another split's classes (val) that share a factor (the shape, or the motion /
  scene) with at least one class of the episode and are never enrolled: the hard case where an unknown action
  looks half like a known one.

Scores: ``znorm`` (Z-normalised against the bundle's open-set cohort, what ``run`` thresholds), ``max_prob``
(the largest calibrated probability), ``neg_min_distance`` and ``max_fused`` (``calibration.rejection_scores``).
AUROC: known queries positive, unknown negative; OSCR (Dhamija et al. 2018).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

import numpy as np


def open_set_episodes(bundle, known, unknown, share, shot: int, episodes: int, seed: int, cohort,
                      way: int = 5) -> Dict:
    """Seeded open-set episodes over ``known`` (SplitFeatures): per episode ``way`` known queries (one per class),
    ``way`` protocol unknowns (clips of ``known`` classes outside the episode) and ``way`` factor-sharing unknowns
    (clips of ``unknown`` classes that share a factor with an episode class; ``share(a, b)`` says whether two class
    names do). One support head call and one cohort fit per episode serve both kinds.

    Returns:
        ``{"protocol": metrics, "factor_sharing": metrics}``, each with AUROC and OSCR per score.
    """
    from clipfsar.runtime.engines.backends import OnnxGraph
    from clipfsar.runtime.teaching.calibration import auroc, calibrated_probs, oscr, rejection_scores, video_text_cos
    from clipfsar.runtime.teaching.cohort import ZNorm
    sup_g = OnnxGraph(bundle.graph_path("support_head"), "cpu")
    qry_g = OnnxGraph(bundle.graph_path("query_head"), "cpu")
    calibration = bundle.manifest.calibration or {}
    counts = np.array([len(c) for c in known.clips])
    ucounts = np.array([len(c) for c in unknown.clips])
    rows: Dict[str, list] = {"d": [], "f": [], "c": [], "z": [], "y": []}  # y: class column, -1 protocol, -2 sharing
    for e in range(episodes):
        rng = np.random.default_rng([int(seed), e, 7])
        cls = rng.choice(len(known.classes), way, replace=False)
        picks = [rng.choice(counts[c], shot + 1, replace=False) for c in cls]
        support = np.stack([known.clips[c][p[:shot]] for c, p in zip(cls, picks)])  # (way, K, T, D)
        queries = [known.clips[c][p[shot]] for c, p in zip(cls, picks)]
        labels = list(range(way))
        others = np.setdiff1d(np.arange(len(known.classes)), cls)
        for c in rng.choice(others, way, replace=len(others) < way):
            queries.append(known.clips[c][rng.integers(counts[c])])
            labels.append(-1)
        sharing = [u for u, name in enumerate(unknown.classes) if any(share(name, known.classes[c]) for c in cls)]
        for u in rng.choice(sharing, way, replace=len(sharing) < way):
            queries.append(unknown.clips[u][rng.integers(ucounts[u])])
            labels.append(-2)
        q = np.stack(queries)  # (3 way, T, D)
        text = known.text[cls]
        protos = sup_g.run(support=support, text=text)["prototypes"]
        out = qry_g.run(query=q, prototypes=protos, text=text)
        cos = video_text_cos(q, text)
        shots = np.full(way, shot)
        rows["d"].append(out["distances"])
        rows["f"].append(out["probs"])
        rows["c"].append(cos)
        rows["y"] += labels
        rows["z"].append(ZNorm.fit(qry_g.run, cohort, protos, text, shots).known(out["distances"], cos, shots))
    d, f, c, z = (np.concatenate(rows[k]) for k in ("d", "f", "c", "z"))
    y = np.array(rows["y"])
    probs = calibrated_probs(d, c, np.ones(way, int), calibration)
    scores = {"znorm": z, **rejection_scores(probs, d, f)}
    ok = y >= 0
    correct = probs.argmax(-1)[ok] == y[ok]
    out: Dict = {}
    for kind, mark in (("protocol", -1), ("factor_sharing", -2)):
        bad = y == mark
        out[kind] = {"way": way, "shot": shot, "episodes": episodes, "seed": seed, "unknown_queries": int(bad.sum()),
                     "closed_set_accuracy": float(correct.mean() * 100),
                     "scores": {k: {"auroc": auroc(s[ok], s[bad]), "oscr": oscr(s[ok], correct, s[bad])}
                                for k, s in scores.items()}}
    return out


def open_set_tables(bundle_dir: Path, data: Path, share, known_split: str = "test", unknown_split: str = "val",
                    shots: Sequence[int] = (1, 5), episodes: int = 200, seed: int = 0) -> Dict:
    """``{"protocol": {"1-shot": metrics, ...}, "factor_sharing": {...}}`` on the bundle's graphs (module doc).

    The bundle must have an open-set cohort (``clipfsar calibrate-threshold`` stores one).
    """
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.cohort import load_cohort
    from clipfsar.runtime.teaching.openset import encode_split
    bundle = Bundle.open(bundle_dir)
    cohort = load_cohort(bundle)
    known = encode_split(bundle, data, known_split)
    unknown = encode_split(bundle, data, unknown_split)
    out: Dict = {"protocol": {}, "factor_sharing": {}, "known_split": known_split, "unknown_split": unknown_split,
                 "cohort_clips": int(len(cohort))}
    for k in shots:
        for kind, m in open_set_episodes(bundle, known, unknown, share, k, episodes, seed, cohort).items():
            out[kind][f"{k}-shot"] = m
    return out
