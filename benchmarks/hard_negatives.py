"""Experiment: does continuing the prior on hard-negative frame batches teach its image tower the object's shape?

The shipped prior encodes the scene of a frame but not the shape (benchmarks/prior_probe.py). This continues it
(``--weights``, default ``synth``) on per-frame captioned frames of the appearance family's train classes (12 clips
per class, 8 frames each, rendered by the generator at 96 px and resized to the tiny model's 64 px), AdamW with a
cosine schedule, open_clip's ClipLoss. ``--batches hard``: each batch is 64 frames of each of 2 scenes, so most
negatives share the scene and differ in shape, size, position or colour; ``random``: 128 frames of any class.
``--zoom Z`` trains (and probes) on crops around the object, so it appears Z times larger. Prints the loss every
50 steps, writes the weights to ``--out`` and runs the shape probe on them.

    .venv/bin/python benchmarks/hard_negatives.py [--batches hard|random] [--steps 1000] [--lr 2e-3]
        [--zoom 1] [--arch tiny] [--weights synth|none|FILE] [--out bench_out/hard_negatives.safetensors]
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def frame_pool(rng, clips: int = 12, zoom: float = 1.0) -> dict:
    """scene -> [(pixels (3, 64, 64) float32, FrameState)] over the appearance family's train classes."""
    from prior_probe import preprocessed

    from clipfsar.train.synth import class_factors, render_class_clip, split_classes
    pool: dict = {}
    for name in split_classes(0, "appearance")["train"]:
        scene = class_factors(name)[1]
        for _ in range(clips):
            frames, facts = render_class_clip(name, rng, 96, 8)
            for f, state in zip(frames, facts["frames"]):
                pool.setdefault(scene, []).append((preprocessed(f, state, zoom, 64), state))
    return pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="synth", help="open_clip tag or file; 'none' = a seeded random init")
    ap.add_argument("--arch", default="tiny", help="a 64 px model (the tiny model's input size)")
    ap.add_argument("--batches", choices=["hard", "random"], default="hard")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--zoom", type=float, default=1.0, help="train on crops where the object is ZOOM times larger")
    ap.add_argument("--out", type=Path, default=Path("bench_out/hard_negatives.safetensors"))
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    if args.zoom < 1:
        ap.error(f"--zoom must be >= 1 (the object drawn larger, never smaller), got {args.zoom}")
    import open_clip
    import torch

    from clipfsar.train.backbone import create_clip, resolve_arch
    from clipfsar.train.captions import frame_caption
    from clipfsar.train.pretrain import contrastive_loss, save_weights
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    clip = create_clip(args.arch, None if args.weights == "none" else args.weights).train()
    tokenizer = open_clip.get_tokenizer(resolve_arch(args.arch))
    pool = frame_pool(rng, zoom=args.zoom)
    scenes = sorted(pool)
    flat = [item for s in scenes for item in pool[s]]
    optim = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.1)
    loss_fn = open_clip.loss.ClipLoss()
    t0 = time.perf_counter()
    for step in range(args.steps):
        for g in optim.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        if args.batches == "hard":
            items = [pool[s][i] for s in rng.choice(scenes, 2, replace=False)
                     for i in rng.choice(len(pool[s]), 64, replace=False)]
        else:
            items = [flat[i] for i in rng.choice(len(flat), 128, replace=False)]
        images = torch.tensor(np.stack([p for p, _ in items]))
        loss = contrastive_loss(clip, loss_fn, None, tokenizer([frame_caption(s, rng) for _, s in items]), images)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {float(loss.detach()):.3f}", flush=True)
    print(f"{args.steps} steps in {time.perf_counter() - t0:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(clip, args.out, resolve_arch(args.arch))
    subprocess.run([sys.executable, str(Path(__file__).with_name("prior_probe.py")), "--weights", str(args.out),
                    "--arch", args.arch, "--zoom", str(args.zoom)],
                   check=True)


if __name__ == "__main__":
    main()
