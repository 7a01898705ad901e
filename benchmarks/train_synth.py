"""Benchmark: few-shot accuracy of the tiny model on the synthetic set after a <= 10 minute CPU training run,
the paper's ablation (text token in prototypes or not), beta = 0 vs fusion, and fine-tuning vs frozen-backbone
speed. Writes bench_out/train_synth.json and prints a markdown table.

    .venv/bin/python benchmarks/train_synth.py [--out bench_out] [--steps 450] [--episodes 2000]
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "clipfsar"]


def sh(args):
    t = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def train(data: Path, out: Path, steps: int, extra=()):
    args = CLI + ["train", "--data", str(data), "--out", str(out), "--arch", "tiny", "--steps", str(steps),
                  "--lr", "1e-3", "--warmup-steps", "10", "--warmup-lr", "1e-5", "--schedule", "cosine",
                  "--alpha", "0.5", "--query", "3", "--episodes-per-step", "4", "--val-every", "75",
                  "--val-episodes", "300", "--seed", "0", *extra]
    return sh(args)


def median_eps(run: Path, skip: int = 3) -> float:
    rows = [ln.split(",") for ln in (run / "log.csv").read_text().splitlines()[1:]]
    return statistics.median(float(r[6]) for r in rows[skip:])


def evaluate(run: Path, data: Path, shot: int, episodes: int):
    r = subprocess.run(CLI + ["eval", "--checkpoint", str(run), "--data", str(data), "--shot", str(shot),
                              "--episodes", str(episodes), "--seed", "0", "--beta", "0.9", "--json"],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["branches"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--episodes", type=int, default=2000)
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    data = a.out / "data"
    sh(CLI + ["synth", str(data), "--seed", "0", "--clips", "20"])
    res = {"machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}",
           "date": time.strftime("%Y-%m-%d"), "steps": a.steps, "episodes": a.episodes, "runs": {}}
    for name, extra in (("text token", ()), ("no text token", ("--no-text-prototype",))):
        run = a.out / name.replace(" ", "_")
        wall = train(data, run, a.steps, extra)
        res["runs"][name] = {"train_seconds": round(wall, 1), "episodes_per_s": median_eps(run),
                             "1-shot": evaluate(run, data, 1, a.episodes),
                             "5-shot": evaluate(run, data, 5, a.episodes)}
        print(name, json.dumps(res["runs"][name]), flush=True)
    frozen = a.out / "frozen"
    wall = train(data, frozen, 60, ("--freeze-backbone", "--cache-samplings", "2"))
    res["frozen"] = {"train_seconds_incl_cache": round(wall, 1), "episodes_per_s": median_eps(frozen)}
    res["speedup_frozen_vs_finetune"] = res["frozen"]["episodes_per_s"] / res["runs"]["text token"]["episodes_per_s"]
    (a.out / "train_synth.json").write_text(json.dumps(res, indent=2))
    print("\n| prototypes | shots | few-shot (beta=0) | fusion (beta=0.9) | video-text |")
    print("|---|---|---|---|---|")
    for name, r in res["runs"].items():
        for shot in ("1-shot", "5-shot"):
            b = r[shot]
            cell = lambda k: f"{b[k]['accuracy']:.1f} +- {b[k]['ci95']:.1f}"
            print(f"| {name} | {shot} | {cell('fewshot')} | {cell('fusion')} | {cell('videotext')} |")
    print(f"\nfine-tuning {res['runs']['text token']['episodes_per_s']:.1f} episodes/s, frozen backbone "
          f"{res['frozen']['episodes_per_s']:.1f} episodes/s ({res['speedup_frozen_vs_finetune']:.1f}x); "
          f"training {res['runs']['text token']['train_seconds']:.0f} s per run")


if __name__ == "__main__":
    main()
