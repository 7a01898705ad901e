"""Benchmark: how far CLIP-FSAR's video-text branch can go on a split, estimated with class vectors fitted on the
split's own clips.

The video-text branch scores a query by ``s * cos(mean_t f, w_c)`` (DESIGN.md section 3): the frames' features are
mean-pooled and compared with one text vector per class, so with *these* frame features, whatever text features
``w_c`` a prior gives, the branch is a linear classifier without bias on the normalised pooled features. How well
such a classifier can do is estimated, on the same seeded 5-way test episodes as ``clipfsar eval`` (one query per
class), by fitting class vectors on the test classes' own clips, which no text prior ever sees:

1. ``zero_shot``: the branch itself (text features of the episode's class names, as ``clipfsar eval``).
2. ``fitted_probe``: a linear probe on the pooled features (5-fold: each clip is scored by a probe fitted on the
   other folds; L2 weight chosen inside); ``fitted_centroid``: leave-one-out class centroids of the pooled features
   (unit vectors, no bias: the branch's own family); ``ceiling_estimate``: the better of the two. Both are
   estimates from ~20 clips per class, not a proof: a better-fitted vector could do a few points more.
3. ``centroid_Kshot``: the mean of K support clips' pooled features as the class vector (a prototype made of
   pooled features).
4. ``factor_probes``: for synthetic data (class names "a <shape> <motion>", and a train split), the shape and the
   motion kind (horizontal, vertical, rotation, scale, bounce) of each test clip from train-split centroids of
   those factors (nearest centroid; chance 1/5 each): what the features carry that a compositional text prior could
   use on unseen combinations.
5. With ``--run`` (a trained checkpoint), the few-shot branch and the fusion ``p_vt^beta * p_fs^(1-beta)`` at
   several betas (is there any beta at which the video-text branch adds to the few-shot branch?).

    .venv/bin/python benchmarks/videotext_ceiling.py --data DATA (--run RUN | --weights synth) [--episodes 2000]
        [--betas 0,0.05,0.1,0.3,0.5,0.9] [--out FILE.json]

Prints a markdown table; with ``--out``, writes every number as JSON. Bad arguments: ``error: ...``, exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
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


def loo_centroid_scores(v, labels: np.ndarray, classes: int):
    """(B, C) cosine of each clip to the class centroids of the pooled features, its own class's centroid made
    without it (leave-one-out): unit class vectors without bias, the branch's own family, fitted on the scored
    classes' clips."""
    import torch
    onehot = torch.nn.functional.one_hot(torch.as_tensor(labels), classes).float()  # (B, C)
    sums = onehot.T @ v  # (C, D)
    cent = sums[None] - onehot[:, :, None] * v[:, None]  # (B, C, D): own class without the clip itself
    cent = torch.nn.functional.normalize(cent, dim=-1)
    return torch.einsum("bd,bcd->bc", v, cent)


def _accuracy(eps, offsets: np.ndarray, class_scores) -> Dict[str, float]:
    """Accuracy (% and 95 % CI) over episodes: ``class_scores(ep, q)`` gives the (N*Q, N) scores of the episode's
    query clips ``q`` (rows into the split, class-major, as ``clipfsar eval``) against its N classes."""
    from clipfsar.train.episodes import Accuracy
    per = []
    for ep in eps:
        q = (offsets[ep.classes][:, None] + ep.query).reshape(-1)  # (N*Q,)
        labels = np.repeat(np.arange(len(ep.classes)), ep.query.shape[1])
        per.append(float((class_scores(ep, q).argmax(1) == labels).mean()))
    a = Accuracy.of(per)
    return {"accuracy": round(a.accuracy, 2), "ci95": round(a.ci95, 2)}


def episode_accuracy(scores: np.ndarray, offsets: np.ndarray, eps) -> Dict[str, float]:
    """Per-clip (B, C) scores, each query's argmax taken over its episode's classes only."""
    return _accuracy(eps, offsets, lambda ep, q: scores[q][:, ep.classes])


def centroid_accuracy(v, offsets: np.ndarray, eps) -> Dict[str, float]:
    """Nearest centroid of the K support clips' pooled features, per episode."""
    vn = v.numpy()

    def scores(ep, q):
        sup = vn[offsets[ep.classes][:, None] + ep.support].mean(1)  # (N, D)
        return vn[q] @ (sup / np.linalg.norm(sup, axis=1, keepdims=True)).T
    return _accuracy(eps, offsets, scores)


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
    ap.add_argument("--arch", default="tiny", help="with --weights (a --run checkpoint knows its own)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--way", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--betas", default="0,0.05,0.1,0.3,0.5,0.9")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    try:
        betas = [float(b) for b in args.betas.split(",")]
    except ValueError:
        ap.error(f"--betas must be comma-separated numbers, got {args.betas!r}")
    if not all(0 <= b <= 1 for b in betas):
        ap.error(f"--betas must lie in [0, 1], got {args.betas}")
    if args.episodes < 1 or args.way < 2:
        ap.error(f"--episodes must be >= 1 (got {args.episodes}) and --way >= 2 (got {args.way})")
    if args.out is not None and not args.out.parent.is_dir():
        ap.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # open_clip's "initialized randomly" before a checkpoint loads
        handler.addFilter(lambda r: "open_clip" not in r.pathname or r.levelno >= logging.ERROR)
    from clipfsar.runtime.base.errors import ClipFsarError
    try:
        return measure(args, betas)
    except ClipFsarError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def measure(args, betas: Sequence[float]) -> dict:
    """Every number of the report (see the module docstring)."""

    import torch

    from clipfsar.train.data import load_split
    from clipfsar.train.episodes import episodes as make_episodes
    from clipfsar.train.evaluate import evaluate_features
    from clipfsar.train.features import ClipLoader, all_clips, class_offsets, encode_clips

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.run is not None:
        from clipfsar.train.checkpoint import best_checkpoint, load_checkpoint
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

    train = train_feats = None
    if (args.data / "splits" / "train.txt").is_file():  # first: a bad train split fails before the long part
        train, train_feats = features("train")
    else:
        print(f"note: {args.data} has no splits/train.txt: the shape / motion-kind probes are skipped",
              file=sys.stderr)
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
    report["fitted_probe"] = episode_accuracy(probe_logits(v, labels, len(counts), args.seed).numpy(), offsets,
                                              eps1)
    report["fitted_centroid"] = episode_accuracy(loo_centroid_scores(v, labels, len(counts)).numpy(), offsets, eps1)
    report["ceiling_estimate"] = max(report["fitted_probe"], report["fitted_centroid"], key=lambda a: a["accuracy"])
    for shot in (1, 5):
        eps = make_episodes(args.seed, args.episodes, counts, args.way, shot, 1)
        report[f"centroid_{shot}shot"] = centroid_accuracy(v, offsets, eps)
    per_clip = lambda clipset: [n for n, c in zip(clipset.classes, clipset.counts()) for _ in range(c)]  # noqa: E731
    report["factor_probes"] = ({} if train is None else
                               factor_probes(pooled(train_feats), per_clip(train), v, per_clip(test)))
    if args.run is not None:
        report["fusion_1shot"] = {}
        with torch.no_grad():
            for beta in betas:
                acc = evaluate_features(model, feats, offsets, counts, test.classes, args.way, 1, args.episodes,
                                        args.seed, beta=beta)
                report["fusion_1shot"][f"{beta:g}"] = round(acc["fusion"].accuracy, 2)
                report["few_shot_1shot"] = round(acc["fewshot"].accuracy, 2)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["machine"] = f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores"

    print("| source | zero-shot | fitted on the test clips: probe / leave-one-out centroid | centroid 1-shot / "
          "5-shot | shape / motion kind from train |")
    print("|---|---|---|---|---|")
    fp = report["factor_probes"]
    print(f"| {source} | {report['zero_shot']['accuracy']} | {report['fitted_probe']['accuracy']} / "
          f"{report['fitted_centroid']['accuracy']} | {report['centroid_1shot']['accuracy']} / "
          f"{report['centroid_5shot']['accuracy']} | {fp.get('shape', '-')} / {fp.get('motion kind', '-')} |")
    if "fusion_1shot" in report:
        print(f"few-shot (1-shot) {report['few_shot_1shot']}; fusion by beta: {report['fusion_1shot']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
