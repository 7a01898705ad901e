"""Benchmark: training episodes/s, fine-tuning the image tower vs the frozen tower on cached features.

Both runs are the same ``TrainConfig`` (the demo's recipe: the ``--arch`` model, default small, from the shipped
``synth`` prior, 5-way 1-shot, 3 queries per class, 4 episodes per optimizer step, lr 1e-3 cosine, alpha 0.5) except
``freeze_backbone``. Both trainers are built in this one process (the frozen one builds its feature cache first,
timed apart), then measured in alternating rounds — ``--steps`` optimizer steps of fine-tuning, then of the frozen
tower — so both see the same machine load. Per round: episodes/s = steps x episodes per step / wall seconds;
reported: the median over rounds of each, the ratio of the medians and the median of the per-round ratios.

    .venv/bin/python benchmarks/train_synth.py [--data DIR] [--arch small] [--weights synth] [--rounds 5] [--steps 8]
        [--out bench_out/train_speed]

Writes OUT/train_speed.json and prints a markdown table. The accuracy side (the paper's ablation) is
``clipfsar ablation`` (docs/ablation.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def build(data: Path, out: Path, weights: str, frozen: bool, threads: int, amp: str = "off", arch: str = "small"):
    import torch

    from clipfsar.train.config import TrainConfig
    from clipfsar.train.loop import Trainer
    torch.set_num_threads(threads)
    cfg = TrainConfig(data=str(data), out=str(out), arch=arch, weights=None if weights == "none" else weights,
                      steps=10 ** 6, seed=0, lr=1e-3,
                      warmup_steps=10, warmup_lr=1e-5, schedule="cosine", alpha=0.5, query=3, episodes_per_step=4,
                      val_every=10 ** 6, freeze_backbone=frozen, cache_samplings=4, amp=amp,
                      feature_cache=str(out.parent / "cache") if frozen else "")
    trainer = Trainer(cfg)
    trainer._prepare_run_folder()
    t = time.perf_counter()
    trainer._build()
    trainer.model.train()
    return trainer, time.perf_counter() - t


def steps_per_s(trainer, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        trainer._train_step()
        trainer.step += 1
    return steps * trainer.cfg.episodes_per_step / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/train_speed"))
    ap.add_argument("--data", type=Path, help="Dataset (default: OUT/data from `clipfsar synth --clips 20`).")
    ap.add_argument("--arch", default="small", help="small (the default prior's), tiny, or an open_clip name.")
    ap.add_argument("--weights", default="synth", help="Prior of ARCH: a tag, a weights file or 'none' "
                    "(random init; the speed is the same).")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="Optimizer steps per round and mode.")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both (1: see docs/ablation.md).")
    ap.add_argument("--bf16", action="store_true", help="Also the frozen tower with bf16 autocast (amp bf16).")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    data = a.data or a.out / "data"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "clipfsar", "synth", str(data), "--seed", "0", "--clips", "20"],
                       check=True, stdout=subprocess.DEVNULL)
    for name in ("finetune", "frozen", "frozen_bf16", "cache"):
        shutil.rmtree(a.out / name, ignore_errors=True)
    trainers, builds = {}, {}
    trainers["finetune"], builds["finetune"] = build(data, a.out / "finetune", a.weights, False, a.threads,
                                                         arch=a.arch)
    trainers["frozen"], builds["frozen"] = build(data, a.out / "frozen", a.weights, True, a.threads,
                                                     arch=a.arch)
    if a.bf16:  # reuses the frozen run's feature cache (same tower, same seed)
        trainers["frozen_bf16"], builds["frozen_bf16"] = build(data, a.out / "frozen_bf16", a.weights, True,
                                                               a.threads, "bf16", a.arch)
    for name, trainer in trainers.items():  # warm-up (first calls allocate)
        steps_per_s(trainer, 2 if name == "finetune" else 4)
    rounds = []
    for r in range(a.rounds):
        rounds.append({name: steps_per_s(t, a.steps if name == "finetune" else a.steps * 4)
                       for name, t in trainers.items()})
        print(json.dumps({"round": r, **{k: round(v, 1) for k, v in rounds[-1].items()}}), flush=True)
    for trainer in trainers.values():
        trainer.loader.close()
    med = {k: statistics.median(x[k] for x in rounds) for k in trainers}
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()} cpus={os.cpu_count()} load1={os.getloadavg()[0]:.1f}",
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": a.threads,
           "data": str(data), "arch": a.arch, "weights": a.weights, "rounds": rounds,
           "median_episodes_per_s": med, "speedup": {k: med[k] / med["finetune"] for k in med if k != "finetune"},
           "median_round_speedup": {k: statistics.median(x[k] / x["finetune"] for x in rounds)
                                    for k in med if k != "finetune"},
           "setup_seconds": {k: round(v, 1) for k, v in builds.items()}}
    (a.out / "train_speed.json").write_text(json.dumps(res, indent=2))
    label = {"finetune": "fine-tune image tower (fp32)", "frozen": "frozen tower, cached features (fp32)",
             "frozen_bf16": "frozen tower, cached features (bf16 autocast)"}
    print(f"\n| mode | episodes/s (median of {a.rounds} rounds) | vs fine-tune (ratio of medians; median of "
          f"per-round ratios) | setup s |\n|---|---|---|---|")
    for k in trainers:
        ratio = "1" if k == "finetune" else (f"{res['speedup'][k]:.1f}x; {res['median_round_speedup'][k]:.1f}x")
        print(f"| {label[k]} | {med[k]:.1f} | {ratio} | {builds[k]:.1f} |")


if __name__ == "__main__":
    main()
