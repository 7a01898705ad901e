"""The evaluation protocol: seeded N-way K-shot test episodes, 1 query per class, mean accuracy +- 95% CI,
for the few-shot branch, the video-text branch and their fusion."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from clipfsar.runtime.classify.fusion import fuse_probs

from .episodes import Accuracy, Episode, episode_accuracies
from .episodes import episodes as make_episodes
from .model import CLIPFSAR, fuse

BETA_GRID = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0, 0.05, ..., 0.95: the fusion weights fit_beta tries


@torch.no_grad()
def classify_episodes(model: CLIPFSAR, feats: torch.Tensor, offsets: np.ndarray, text: torch.Tensor,
                      eps: Sequence[Episode], beta: float, batch: int = 64) -> Dict[str, np.ndarray]:
    """Run episodes on precomputed clip features.

    Args:
        feats: (B, T, D) features of every clip of the split; offsets: first clip index per class.
        text: (C, D) text features of the split's classes.
    Returns:
        (E, Q, N) arrays ``p_fewshot``, ``p_videotext``, ``p``.
    """
    model.eval()
    out: Dict[str, List[np.ndarray]] = {"p_fewshot": [], "p_videotext": [], "p": []}
    for i in range(0, len(eps), batch):
        chunk = eps[i:i + batch]
        e, (n, k), q = len(chunk), chunk[0].support.shape, chunk[0].query.shape[1]
        cls = torch.as_tensor(np.stack([ep.classes for ep in chunk]))  # (E, N)
        sup_idx = torch.as_tensor(np.stack([offsets[ep.classes][:, None] + ep.support for ep in chunk]))
        qry_idx = torch.as_tensor(np.stack([(offsets[ep.classes][:, None] + ep.query).reshape(-1) for ep in chunk]))
        t, d = feats.shape[1:]
        ep_text = text[cls]  # (E, N, D)
        protos = model.prototypes(feats[sup_idx].reshape(e * n, k, t, d), ep_text.reshape(e * n, d))
        queries = model.query_embeddings(feats[qry_idx].reshape(e * n * q, t, d))
        dist = model.distances(queries.reshape(e, n * q, t, d), protos.reshape(e, n, t, d))  # (E, N*Q, N)
        vt = model.video_text_logits(feats[qry_idx], ep_text)  # (E, N*Q, N)
        res = fuse(dist, vt, beta, model.cfg.frames)
        for key in out:
            out[key].append(res[key].float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def episode_probs(model: CLIPFSAR, feats: torch.Tensor, offsets: np.ndarray, counts: Sequence[int],
                  class_names: Sequence[str], way: int, shot: int, episodes: int, seed: int,
                  beta: Optional[float] = None, queries: int = 1) -> Dict[str, np.ndarray]:
    """The (E, Q, N) probabilities of :func:`classify_episodes` on ``episodes`` seeded episodes of the split whose
    clips ``feats`` holds (``offsets``, ``counts`` per class, ``class_names`` for the text features)."""
    eps = make_episodes(seed, episodes, counts, way, shot, queries)
    text = model.text_features(list(class_names)).to(feats.dtype)
    return classify_episodes(model, feats, offsets, text, eps, model.cfg.beta if beta is None else beta)


def evaluate_features(model: CLIPFSAR, feats: torch.Tensor, offsets: np.ndarray, counts: Sequence[int],
                      class_names: Sequence[str], way: int, shot: int, episodes: int, seed: int,
                      beta: Optional[float] = None, queries: int = 1) -> Dict[str, Accuracy]:
    """Accuracy of the three branches over ``episodes`` seeded episodes."""
    probs = episode_probs(model, feats, offsets, counts, class_names, way, shot, episodes, seed, beta, queries)
    return {b: Accuracy.of(a) for b, a in episode_accuracies(probs).items()}


def fused_accuracy(probs: Dict[str, np.ndarray], beta: float) -> Accuracy:
    """Accuracy of the fusion ``p_vt^beta * p_fs^(1 - beta)`` on (E, Q, N) branch probabilities (query rows in
    class-major order, as :func:`classify_episodes` returns them)."""
    fused = fuse_probs(probs["p_fewshot"], probs["p_videotext"], beta)
    return Accuracy.of(episode_accuracies({**probs, "p": fused})["fusion"])


def fit_beta(probs: Dict[str, np.ndarray], grid: Sequence[float] = BETA_GRID) -> float:
    """The fusion weight of ``grid`` with the best accuracy on ``probs`` (validation episodes); among equally
    accurate weights (a saturated split), the one whose fused probability of the true class has the highest mean
    log-likelihood, then the smallest (a video-text branch that never helps gives 0: the few-shot branch alone)."""
    e, q, n = probs["p_fewshot"].shape
    labels = np.repeat(np.arange(n), q // n)[None, :, None]  # (1, Q, 1): the class row of each query

    def score(beta: float):
        fused = fuse_probs(probs["p_fewshot"], probs["p_videotext"], beta)
        accuracy = float(episode_accuracies({**probs, "p": fused})["fusion"].mean())
        true = np.take_along_axis(fused, labels.repeat(e, 0), axis=-1)
        return accuracy, float(np.log(np.maximum(true, 1e-30)).mean())

    scores = [score(b) for b in grid]
    return float(grid[max(range(len(grid)), key=lambda i: scores[i])])


def evaluate_checkpoint(checkpoint, data, split: str = "test", way: int = 5, shot: int = 1,
                        episodes: int = 10000, seed: int = 0, beta: Optional[float] = None,
                        class_map: Optional[Dict[str, str]] = None) -> Dict:
    """Evaluate a checkpoint (or run folder) on a dataset split; returns the report ``clipfsar eval`` prints.

    ``class_map`` names numbered class folders (default: the map the checkpoint was trained with).

    The report has ``accuracy`` and ``ci95`` of the few-shot branch at top level (what the paper reports), and
    every branch under ``branches``.
    """
    from pathlib import Path

    from .checkpoint import best_checkpoint, load_checkpoint
    from .data import load_split
    from .features import ClipLoader, all_clips, class_offsets, encode_clips

    ckpt = best_checkpoint(Path(checkpoint))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, prep, meta = load_checkpoint(ckpt, map_location=device)
    if class_map is None:  # numbered class folders: the names the checkpoint was trained with
        class_map = dict((meta.get("train") or {}).get("class_names") or {}) or None
    model.to(device)
    clipset = load_split(Path(data), split, min_clips=shot + 1, class_map=class_map)
    if len(clipset.classes) < way:
        from clipfsar.runtime.base.errors import DatasetError
        raise DatasetError(f"split '{split}' has {len(clipset.classes)} classes; {way}-way needs {way}")
    beta = 0.9 if beta is None else beta
    loader = ClipLoader(prep, model.cfg.frames)
    try:
        feats = encode_clips(model, loader, all_clips(clipset), device=device)  # each clip once, centre sampling
    finally:
        loader.close()
    acc = evaluate_features(model, feats.to(device), class_offsets(clipset), clipset.counts(), clipset.classes, way,
                            shot, episodes, seed, beta)
    return {"checkpoint": str(ckpt), "split": split, "way": way, "shot": shot, "episodes": episodes, "seed": seed,
            "beta": beta, "accuracy": acc["fewshot"].accuracy, "ci95": acc["fewshot"].ci95,
            "branches": {b: {"accuracy": a.accuracy, "ci95": a.ci95} for b, a in acc.items()}}
