"""Benchmark: how far CLIP-FSAR's video-text branch can go on a split, whatever text prior feeds it.

The video-text branch scores a query by ``s * cos(mean_t f, w_c)`` (DESIGN.md section 3): the frames' features are
mean-pooled and compared with one text vector per class. Whatever text features ``w_c`` a prior gives, the branch is
a linear classifier without bias on the normalised mean-pooled features, so its accuracy is bounded by how well those
features separate the classes. On the same seeded 5-way test episodes as ``clipfsar eval`` (one query per class),
this script measures:

1. ``zero_shot``: the branch itself (text features of the episode's class names, as ``clipfsar eval``).
2. ``oracle_text``: the branch with the best class vectors money could buy: a linear probe on the mean-pooled
   features, fitted on the *test classes' own clips* (5-fold: each clip is scored by the probe fitted on the other
   folds; L2 weight chosen inside), its scores restricted to the episode's classes. A text prior, which never sees
   these clips, can approach it but should not pass it by more than the probe's estimation error.
3. ``centroid_Kshot``: the same mean-pooled features with the mean of K support clips as the class vector (what a
   prototype made of pooled features would do).
4. ``factor probes``: for synthetic data (class names "a <shape> <motion>"), the shape and the motion kind
   (horizontal, vertical, rotation, scale, bounce) of each test clip from train-split centroids of those factors:
   what the features carry that a compositional text prior could use on unseen combinations (chance 1/5 each).
5. For a checkpoint, the few-shot branch and the fusion ``p_vt^beta * p_fs^(1-beta)`` at several betas (is there
   any beta at which the video-text branch adds to the few-shot branch?).

    .venv/bin/python benchmarks/videotext_ceiling.py --data DATA (--run RUN | --weights synth) [--episodes 2000]
        [--betas 0,0.05,0.1,0.3,0.5,0.9] [--out FILE.json]

Prints a markdown table; with ``--out``, writes every number as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

MOTION_KIND = {"moving left": "horizontal", "moving right": "horizontal", "moving up": "vertical",
               "moving down": "vertical", "rotating clockwise": "rotation", "rotating anticlockwise": "rotation",
               "growing": "scale", "shrinking": "scale", "bouncing": "bounce"}


def pooled(feats):
    """(B, T, D) frame features -> (B, D) normalised mean over frames (the video-text branch's video vector)."""
    import torch
    return torch.nn.functional.normalize(feats.float().mean(1), dim=-1)


def _fit_probe(x, y, classes: int, decay: float, steps: int = 300):
    """A linear softmax probe (weights and bias) on standardised ``x``; returns a function scoring new rows."""
    import torch
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = torch.nn.Parameter(torch.zeros(classes, x.shape[1]))
    b = torch.nn.Parameter(torch.zeros(classes))
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        (torch.nn.functional.cross_entropy(z @ w.T + b, y) + decay * (w ** 2).sum()).backward()
        opt.step()
    return lambda new: ((new - mu) / sd) @ w.detach().T + b.detach()


def _folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per row, balanced within each class."""
    g = np.random.default_rng(seed)
    fold = np.zeros(len(labels), int)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        fold[g.permutation(idx)] = np.arange(len(idx)) % folds
    return fold


def probe_logits(v, labels: np.ndarray, classes: int, seed: int = 0, folds: int = 5,
                 decays: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1)):
    """Out-of-fold (B, C) scores of a linear probe on the pooled features ``v`` (B, D): the best class vectors
    money could buy, fitted on the scored classes' own clips.

    ``folds``-fold within each class: every clip is scored by a probe fitted on the other folds; the L2 weight is
    chosen among ``decays`` by a 2-fold split inside those folds. The probe (standardised features, per-class
    bias) is a superset of the branch (one shared scale, unit text vectors, no bias), so it bounds it from above up
    to its own estimation error (a few clips per class)."""
    import torch
    y = torch.as_tensor(labels)
    out = torch.zeros(len(labels), classes)
    for f in range(folds):
        fit, held = np.flatnonzero(_folds(labels, folds, seed) != f), np.flatnonzero(_folds(labels, folds, seed) == f)
        inner = _folds(labels[fit], 2, seed + 1)
        def inner_acc(decay: float) -> float:
            hits = 0
            for g in (0, 1):
                a, b = fit[inner != g], fit[inner == g]
                hits += int((_fit_probe(v[a], y[a], classes, decay)(v[b]).argmax(1) == y[b]).sum())
            return hits
        best = max(decays, key=inner_acc)
        out[held] = _fit_probe(v[fit], y[fit], classes, best)(v[held])
    return out


def episode_accuracy(scores: np.ndarray, offsets: np.ndarray, eps) -> Dict[str, float]:
    """Accuracy (% and 95 % CI) of per-clip (B, C) scores over episodes, each query's argmax over its episode's
    classes only."""
    from clipfsar.train.episodes import Accuracy
    per = []
    for ep in eps:
        q = (offsets[ep.classes][:, None] + ep.query).reshape(-1)  # (N*Q,) clip rows, class-major
        s = scores[q][:, ep.classes]  # (N*Q, N)
        labels = np.repeat(np.arange(len(ep.classes)), ep.query.shape[1])
        per.append(float((s.argmax(1) == labels).mean()))
    a = Accuracy.of(per)
    return {"accuracy": round(a.accuracy, 2), "ci95": round(a.ci95, 2)}


def centroid_accuracy(v, offsets: np.ndarray, eps) -> Dict[str, float]:
    """Nearest centroid of the K support clips' pooled features, per episode."""
    from clipfsar.train.episodes import Accuracy
    per = []
    vn = v.numpy()
    for ep in eps:
        sup = vn[offsets[ep.classes][:, None] + ep.support].mean(1)  # (N, D)
        sup /= np.linalg.norm(sup, axis=1, keepdims=True)
        q = (offsets[ep.classes][:, None] + ep.query).reshape(-1)
        labels = np.repeat(np.arange(len(ep.classes)), ep.query.shape[1])
        per.append(float(((vn[q] @ sup.T).argmax(1) == labels).mean()))
    a = Accuracy.of(per)
    return {"accuracy": round(a.accuracy, 2), "ci95": round(a.ci95, 2)}


def factor_probes(v_train, train_names: Sequence[str], v_test, test_names: Sequence[str]) -> Dict[str, float]:
    """Shape and motion-kind accuracy (%) of test clips from train-split centroids of each factor; {} when the class
    names are not the synthetic "a <shape> <motion>"."""
    def factors(name: str):
        parts = name.split(" ", 2)
        return (parts[1], MOTION_KIND.get(parts[2])) if len(parts) == 3 else (None, None)
    out = {}
    for i, key in enumerate(("shape", "motion kind")):
        tr = [factors(n)[i] for n in train_names]
        te = [factors(n)[i] for n in test_names]
        if None in tr or None in te:
            return {}
        kinds = sorted(set(tr))
        cent = np.stack([v_train.numpy()[[j for j, k in enumerate(tr) if k == u]].mean(0) for u in kinds])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True)
        pred = (v_test.numpy() @ cent.T).argmax(1)
        out[key] = round(100 * float(np.mean([kinds[p] == k for p, k in zip(pred, te)])), 1)
        out[f"{key} chance"] = round(100 / len(kinds), 1)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a run folder or checkpoint (the fine-tuned model)")
    src.add_argument("--weights", help="open_clip weights (tag such as synth, or a file) of the tiny model")
    ap.add_argument("--arch", default="tiny", help="with --weights")
    ap.add_argument("--split", default="test")
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--betas", default="0,0.05,0.1,0.3,0.5,0.9")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch
    from clipfsar.train.data import load_split
    from clipfsar.train.episodes import episodes as make_episodes
    from clipfsar.train.evaluate import evaluate_features
    from clipfsar.train.features import ClipLoader, all_clips, class_offsets, encode_clips

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.run is not None:
        from clipfsar.train.checkpoint import load_checkpoint
        from clipfsar.train.loop import best_checkpoint
        model, prep, _ = load_checkpoint(best_checkpoint(args.run))
        source = str(args.run)
    else:
        from clipfsar.train.factory import create_model_and_transforms
        model, prep = create_model_and_transforms(args.arch, weights=args.weights, frames=8)
        source = f"{args.arch} weights {args.weights}"
    model.eval()

    def features(split: str):
        clipset = load_split(args.data, split, min_clips=2)
        loader = ClipLoader(prep, model.cfg.frames)
        try:
            return clipset, encode_clips(model, loader, all_clips(clipset))
        finally:
            loader.close()

    test, feats = features(args.split)
    offsets, counts = class_offsets(test), test.counts()
    labels = np.repeat(np.arange(len(counts)), counts)
    v = pooled(feats)
    report: dict = {"source": source, "data": str(args.data), "split": args.split, "way": args.way,
                    "episodes": args.episodes, "seed": args.seed, "classes": list(test.classes)}
    eps1 = make_episodes(args.seed, args.episodes, counts, args.way, 1, 1)
    with torch.no_grad():
        branches = evaluate_features(model, feats, offsets, counts, test.classes, args.way, 1, args.episodes,
                                     args.seed, beta=1.0)
    report["zero_shot"] = {"accuracy": round(branches["videotext"].accuracy, 2),
                           "ci95": round(branches["videotext"].ci95, 2)}
    report["oracle_text"] = episode_accuracy(probe_logits(v, labels, len(counts), args.seed).numpy(), offsets, eps1)
    for shot in (1, 5):
        eps = make_episodes(args.seed, args.episodes, counts, args.way, shot, 1)
        report[f"centroid_{shot}shot"] = centroid_accuracy(v, offsets, eps)
    train, train_feats = features("train")
    per_clip = lambda clipset: [n for n, c in zip(clipset.classes, clipset.counts()) for _ in range(c)]  # noqa: E731
    report["factor_probes"] = factor_probes(pooled(train_feats), per_clip(train), v, per_clip(test))
    if args.run is not None:
        report["fusion_1shot"] = {}
        with torch.no_grad():
            for beta in (float(b) for b in args.betas.split(",")):
                acc = evaluate_features(model, feats, offsets, counts, test.classes, args.way, 1, args.episodes,
                                        args.seed, beta=beta)
                report["fusion_1shot"][f"{beta:g}"] = round(acc["fusion"].accuracy, 2)
                report["few_shot_1shot"] = round(acc["fewshot"].accuracy, 2)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores"

    print("| source | zero-shot | oracle text (probe) | centroid 1-shot | centroid 5-shot | shape / motion kind "
          "from train |")
    print("|---|---|---|---|---|---|")
    fp = report["factor_probes"]
    print(f"| {source} | {report['zero_shot']['accuracy']} | {report['oracle_text']['accuracy']} | "
          f"{report['centroid_1shot']['accuracy']} | {report['centroid_5shot']['accuracy']} | "
          f"{fp.get('shape', '-')} / {fp.get('motion kind', '-')} |")
    if "fusion_1shot" in report:
        print(f"few-shot (1-shot) {report['few_shot_1shot']}; fusion by beta: {report['fusion_1shot']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
