"""Benchmark: training episodes/s, fine-tuning the image tower vs the frozen tower on cached features.

Both runs are the same ``TrainConfig`` (the demo's recipe: tiny model from the shipped ``synth`` prior, 5-way
1-shot, 3 queries per class, 4 episodes per optimizer step, lr 1e-3 cosine, alpha 0.5) except
``freeze_backbone``. Both trainers are built in this one process (the frozen one builds its feature cache first,
timed apart), then measured in alternating rounds — ``--steps`` optimizer steps of fine-tuning, then of the frozen
tower — so both see the same machine load. Per round: episodes/s = steps x episodes per step / wall seconds;
reported: the median over rounds of each, and the ratio of the medians.

    .venv/bin/python benchmarks/train_synth.py [--data DIR] [--weights synth] [--rounds 5] [--steps 8]
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


def build(data: Path, out: Path, weights: str, frozen: bool, threads: int):
    import torch

    from clipfsar.train.config import TrainConfig
    from clipfsar.train.loop import Trainer
    torch.set_num_threads(threads)
    cfg = TrainConfig(data=str(data), out=str(out), arch="tiny", weights=None if weights == "none" else weights,
                      steps=10 ** 6, seed=0, lr=1e-3,
                      warmup_steps=10, warmup_lr=1e-5, schedule="cosine", alpha=0.5, query=3, episodes_per_step=4,
                      val_every=10 ** 6, freeze_backbone=frozen, cache_samplings=4)
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
    ap.add_argument("--weights", default="synth", help="Prior of the tiny model: a tag, a weights file or 'none' "
                    "(random init; the speed is the same).")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8, help="Optimizer steps per round and mode.")
    ap.add_argument("--threads", type=int, default=torch_threads_default())
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    data = a.data or a.out / "data"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "clipfsar", "synth", str(data), "--seed", "0", "--clips", "20"],
                       check=True, stdout=subprocess.DEVNULL)
    for name in ("finetune", "frozen"):
        shutil.rmtree(a.out / name, ignore_errors=True)
    fine, fine_build = build(data, a.out / "finetune", a.weights, False, a.threads)
    frozen, frozen_build = build(data, a.out / "frozen", a.weights, True, a.threads)
    steps_per_s(fine, 2), steps_per_s(frozen, 4)  # warm-up (first calls allocate)
    rounds = []
    for r in range(a.rounds):
        rounds.append({"finetune": steps_per_s(fine, a.steps), "frozen": steps_per_s(frozen, a.steps * 4)})
        print(json.dumps({"round": r, **{k: round(v, 1) for k, v in rounds[-1].items()}}), flush=True)
    fine.loader.close(), frozen.loader.close()
    med = {k: statistics.median(x[k] for x in rounds) for k in ("finetune", "frozen")}
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()} cpus={os.cpu_count()} load1={os.getloadavg()[0]:.1f}",
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": a.threads,
           "data": str(data), "weights": a.weights, "rounds": rounds,
           "median_episodes_per_s": med, "speedup": med["frozen"] / med["finetune"],
           "build_seconds": {"finetune": round(fine_build, 1), "frozen_incl_feature_cache": round(frozen_build, 1)}}
    (a.out / "train_speed.json").write_text(json.dumps(res, indent=2))
    print(f"\n| mode | episodes/s (median of {a.rounds} rounds) | setup s |\n|---|---|---|")
    print(f"| fine-tune image tower | {med['finetune']:.1f} | {fine_build:.1f} |")
    print(f"| frozen tower, cached features | {med['frozen']:.1f} | {frozen_build:.1f} (feature cache) |")
    print(f"\nspeed-up: {res['speedup']:.1f}x")


def torch_threads_default() -> int:
    return min(2, os.cpu_count() or 1)


if __name__ == "__main__":
    main()
