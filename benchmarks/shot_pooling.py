"""Benchmark: the text token at K shots with the shots pooled before or after the temporal Transformer.

``clipfsar ablation`` evaluates its 5-shot rows on the 1-shot models with the paper's pooling: the K support clips'
frame features and the text token are averaged *before* the Transformer (``shot_pooling="before"``). This script
takes the finished runs of an ablation and evaluates both pooling modes on the same test episodes: ``after`` runs
each shot through the Transformer with its text token (as the 1-shot models were trained) and averages the K
outputs (``train/model.py: CLIPFSAR.prototypes``). Nothing is retrained.

    .venv/bin/python benchmarks/shot_pooling.py --out ABLATION_OUT --family appearance-clutter [--shot 5]

Prints, per training seed, the few-shot accuracy of the text and no-text runs in both modes and the text token's
gain, on ``--episodes`` test episodes (seed 0, 5-way, 1 query per class, centre-sampled clips).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the OUT of a finished `clipfsar ablation`")
    ap.add_argument("--family", required=True, help="a family of that ablation (a folder of OUT/runs and OUT/data)")
    ap.add_argument("--shot", type=int, default=5, help="support clips per class (default 5)")
    ap.add_argument("--episodes", type=int, default=2000, help="seeded test episodes (default 2000, seed 0)")
    args = ap.parse_args()
    if args.shot < 2:
        ap.error(f"--shot must be >= 2 (pooling needs several shots); got {args.shot}")
    if args.episodes < 1:
        ap.error(f"--episodes must be >= 1; got {args.episodes}")
    runs = args.out / "runs" / args.family
    seeds = sorted({p.name.split("_")[0] for p in runs.glob("seed*_shot1_text")})
    if not seeds:
        families = args.out / "runs"
        have = sorted(p.name for p in families.iterdir() if p.is_dir()) if families.is_dir() else []
        where = f"families in {args.out}: {', '.join(have)}" if have else f"{args.out} is not an ablation's OUT"
        ap.error(f"{runs}: no finished 1-shot runs (seedN_shot1_text); {where}")

    import numpy as np
    import torch

    from clipfsar.runtime.base.errors import ClipFsarError
    from clipfsar.train.checkpoint import best_checkpoint, load_checkpoint
    from clipfsar.train.data import load_split
    from clipfsar.train.evaluate import episode_probs, fused_accuracy
    from clipfsar.train.features import ClipLoader, all_clips, class_offsets, encode_clips

    torch.set_num_threads(1)
    clipset = feats = None
    gains = {"before": [], "after": []}
    print(f"{args.family}: test split, 5-way {args.shot}-shot, {args.episodes} episodes (seed 0), 1-shot models")
    print("| seed | text, before | no text, before | gain, before | text, after | no text, after | gain, after |")
    print("|---|---|---|---|---|---|---|")
    try:
        for seed in seeds:
            acc = {}
            for variant in ("text", "notext"):
                model, prep, _ = load_checkpoint(best_checkpoint(runs / f"{seed}_shot1_{variant}"))
                if feats is None:  # the prior's tower is frozen: every run shares the test features
                    clipset = load_split(args.out / "data" / args.family, "test", min_clips=args.shot + 1)
                    loader = ClipLoader(prep, model.cfg.frames)
                    try:
                        feats = encode_clips(model, loader, all_clips(clipset))
                    finally:
                        loader.close()
                for pooling in ("before", "after"):
                    model.cfg.shot_pooling = pooling
                    probs = episode_probs(model, feats, class_offsets(clipset), clipset.counts(), clipset.classes,
                                          5, args.shot, args.episodes, 0)
                    acc[variant, pooling] = fused_accuracy(probs, 0.0).accuracy
            cells = []
            for pooling in ("before", "after"):
                t, n = acc["text", pooling], acc["notext", pooling]
                gains[pooling].append(t - n)
                cells += [f"{t:.1f}", f"{n:.1f}", f"{t - n:+.1f}"]
            print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)
    except ClipFsarError as e:  # a missing run or data set, a split too small for the shots
        raise SystemExit(f"error: {e}") from None
    print("mean gain: " + ", ".join(f"{k} {np.mean(v):+.1f}" for k, v in gains.items()) + f" ({len(seeds)} seeds)")


if __name__ == "__main__":
    main()
