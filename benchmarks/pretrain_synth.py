"""Benchmark: remake the shipped frame-level prior (``synth`` = ``synth-v3`` of the ``small`` model) and measure it.

1. Writes the pretraining set (``synth.make_prior_dataset``: both families, seed 0, 20 clips per class; only the
   *train* classes' clip and per-frame captions, so the prior never sees a val or test class) and runs the exact
   two commands below (300 steps of random batches, then 1,400 steps of mostly hard-negative batches);
   ``--ship`` stamps the result ``clipfsar_prior = synth-v3`` and writes it over the shipped file
   (``train/pretrained/clipfsar-small-synth-v3.safetensors``, ``pretrain.ship_prior``).
2. Zero-shot accuracy (the video-text branch alone, no training, 5-way, seeded test episodes) of the new weights
   and of a random init, on both families' unseen test classes.

Writes OUT/pretrain_synth.json and prints a markdown table.

    .venv/bin/python benchmarks/pretrain_synth.py [--out bench_pre] [--ship] [--weights FILE: skip pretraining]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "clipfsar"]
# The two commands that make the shipped prior (PRIOR = make_prior_dataset(PRIOR, seed=0, clips_per_class=20)):
# stage 1 from random init on random batches, stage 2 from stage 1 with 90 % hard-negative frame pairs.
COMMON = ["--arch", "small", "--batch", "128", "--clip-fraction", "0.1", "--lr", "2e-3", "--warmup-steps", "30",
          "--workers", "1"]
STAGES = [COMMON + ["--steps", "300", "--seed", "0"],
          COMMON + ["--steps", "1400", "--seed", "1", "--hard-fraction", "0.9", "--mine-clusters", "20",
                    "--weights", "STAGE1/weights.safetensors"]]


def run_all(out: Path, episodes: int = 2000, ship: bool = False, weights: Path = None) -> dict:
    from clipfsar.train.backbone import PRIOR_FILE, PRIOR_VERSION
    from clipfsar.train.pretrain import ship_prior
    from clipfsar.train.synth import FAMILIES, make_prior_dataset
    from clipfsar.train.zeroshot import zero_shot_accuracy
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    prior = make_prior_dataset(out / "prior_data", seed=0, clips_per_class=20)
    res = {"machine": f"{platform.machine()} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}",
           "date": time.strftime("%Y-%m-%d %H:%M"), "episodes": episodes,
           "pretrain_command": "; ".join(" ".join(["clipfsar", "pretrain", "--data", "PRIOR", "--out", f"STAGE{i + 1}",
                                                    *args]) for i, args in enumerate(STAGES))}
    if weights is None:
        t = time.perf_counter()
        for i, args in enumerate(STAGES):
            args = [a.replace("STAGE1", str(out / "stage1")) for a in args]
            subprocess.run(CLI + ["pretrain", "--data", str(prior), "--out", str(out / f"stage{i + 1}"), *args],
                           check=True, stdout=subprocess.DEVNULL)
        res["pretrain_seconds"] = round(time.perf_counter() - t, 1)
        weights = out / f"stage{len(STAGES)}" / "weights.safetensors"
        if ship:
            ship_prior(weights, PRIOR_FILE, PRIOR_VERSION, "benchmarks/pretrain_synth.py --ship: " +
                       res["pretrain_command"])
            res["shipped"] = str(PRIOR_FILE)
    res["zero_shot"] = {}
    for family in FAMILIES:  # the test classes of the families' seed-0 splits: never in the pretraining set
        res["zero_shot"][family] = {
            "prior": zero_shot_accuracy(prior / family, "small", str(weights), "test", 5, episodes),
            "random init": zero_shot_accuracy(prior / family, "small", None, "test", 5, episodes)}
        print(family, json.dumps(res["zero_shot"][family]), flush=True)
    return res


def table(res: dict) -> str:
    cell = lambda a: f"{a['accuracy']:.1f} +- {a['ci95']:.1f}"
    lines = ["| family | zero-shot, prior | zero-shot, random init |", "|---|---|---|"]
    lines += [f"| {f} | {cell(r['prior'])} | {cell(r['random init'])} |" for f, r in res["zero_shot"].items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench_pre"))
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--weights", type=Path, help="Skip pretraining and measure these weights.")
    ap.add_argument("--ship", action="store_true", help="Stamp the new weights and write them over the shipped file.")
    a = ap.parse_args()
    res = run_all(a.out, a.episodes, a.ship, a.weights)
    (a.out / "pretrain_synth.json").write_text(json.dumps(res, indent=2))
    print("\n" + table(res))


if __name__ == "__main__":
    main()
