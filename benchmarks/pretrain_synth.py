"""Benchmark: the text prior made by contrastive pretraining (``clipfsar pretrain``) on the captioned synthetic
clips, and what it does to CLIP-FSAR on the unseen test classes.

1. Remakes the shipped weights (``train/pretrained/clipfsar-tiny-synth.safetensors``) with the exact command
   below (``--ship`` copies the result over the shipped file).
2. Zero-shot accuracy (video-text branch alone, no training) of the pretrained and the random tiny model.
3. For each initialisation (``--inits``), trains the demo's run (450 steps x 4 episodes, 5-way 1-shot, lr 1e-3
   cosine, alpha 0.5) with and without the text token in the prototypes, and evaluates 5-way 1-shot and 5-shot
   on 2,000 seeded test episodes: zero-shot (video-text), few-shot, fusion (beta 0.9), each with a 95 % CI.
4. Checks the goals: zero-shot >= 35 %, fusion >= few-shot, text token >= 5 points above the no-text ablation.

Writes OUT/pretrain_synth.json and prints a markdown table.

    .venv/bin/python benchmarks/pretrain_synth.py [--out bench_pre] [--inits pretrained,random] [--ship]
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
# The command that makes the shipped weights (DATA = `clipfsar synth DATA --seed 0 --clips 20`).
PRETRAIN_ARGS = ["--arch", "tiny", "--steps", "1000", "--batch", "64", "--lr", "2e-3", "--warmup-steps", "50",
                 "--seed", "0"]
TRAIN_ARGS = ["--arch", "tiny", "--steps", "450", "--lr", "1e-3", "--warmup-steps", "10", "--warmup-lr", "1e-5",
              "--schedule", "cosine", "--alpha", "0.5", "--query", "3", "--episodes-per-step", "4",
              "--val-every", "112", "--val-episodes", "300", "--seed", "0"]  # the demo's run
SHIPPED = Path(__file__).resolve().parents[1] / "train" / "pretrained" / "clipfsar-tiny-synth.safetensors"


def sh(args) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def evaluate(run: Path, data: Path, shot: int, episodes: int) -> dict:
    r = subprocess.run(CLI + ["eval", "--checkpoint", str(run), "--data", str(data), "--shot", str(shot),
                              "--episodes", str(episodes), "--seed", "0", "--beta", "0.9", "--json"],
                       check=True, capture_output=True, text=True)
    b = json.loads(r.stdout)["branches"]
    return {"zero_shot": b["videotext"], "few_shot": b["fewshot"], "fusion": b["fusion"]}


def goals(runs: dict) -> dict:
    """The issue's goals for one initialisation: {'text token': {...}, 'no text token': {...}}."""
    text, none = runs["text token"], runs.get("no text token")
    out = {"zero-shot >= 35": all(text[s]["zero_shot"]["accuracy"] >= 35 for s in ("1-shot", "5-shot")),
           "fusion >= few-shot": all(text[s]["fusion"]["accuracy"] >= text[s]["few_shot"]["accuracy"]
                                     for s in ("1-shot", "5-shot"))}
    if none is not None:
        out["text token >= no text + 5"] = all(
            text[s]["few_shot"]["accuracy"] >= none[s]["few_shot"]["accuracy"] + 5 for s in ("1-shot", "5-shot"))
    return out


def run_all(out: Path, inits, episodes: int, ship: bool, weights: Path = None, frozen: bool = False) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    data = out / "data"
    sh(CLI + ["synth", str(data), "--seed", "0", "--clips", "20"])
    res = {"machine": f"{platform.machine()} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}",
           "date": time.strftime("%Y-%m-%d %H:%M"), "episodes": episodes, "frozen_backbone": frozen,
           "pretrain_command": " ".join(["clipfsar", "pretrain", "--data", "DATA", "--out", "RUN", *PRETRAIN_ARGS])}
    if weights is None:
        wall = sh(CLI + ["pretrain", "--data", str(data), "--out", str(out / "pretrain"), *PRETRAIN_ARGS])
        weights = out / "pretrain" / "weights.safetensors"
        res["pretrain_seconds"] = round(wall, 1)
        if ship:
            SHIPPED.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(weights, SHIPPED)
    from clipfsar.train.zeroshot import zero_shot_accuracy
    res["zero_shot_before_training"] = {"pretrained": zero_shot_accuracy(data, "tiny", str(weights), "test", 5,
                                                                         episodes),
                                        "random": zero_shot_accuracy(data, "tiny", None, "test", 5, episodes)}
    print("zero-shot before training", json.dumps(res["zero_shot_before_training"]), flush=True)
    res["runs"] = {}
    for init in inits:
        init_args = ["--weights", str(weights)] if init == "pretrained" else []
        init_args += ["--freeze-backbone", "--cache-samplings", "2"] if frozen else []
        res["runs"][init] = {}
        for name, extra in (("text token", []), ("no text token", ["--no-text-prototype"])):
            run = out / f"{init}_{name.replace(' ', '_')}"
            wall = sh(CLI + ["train", "--data", str(data), "--out", str(run), *TRAIN_ARGS, *init_args, *extra])
            r = {"train_seconds": round(wall, 1), **{f"{s}-shot": evaluate(run, data, s, episodes) for s in (1, 5)}}
            res["runs"][init][name] = r
            print(init, name, json.dumps(r), flush=True)
        res["runs"][init]["goals"] = goals(res["runs"][init])
    return res


def table(res: dict) -> str:
    cell = lambda a: f"{a['accuracy']:.1f} +- {a['ci95']:.1f}"
    lines = ["| init | prototypes | shots | zero-shot (video-text) | few-shot (beta = 0) | fusion (beta = 0.9) |",
             "|---|---|---|---|---|---|"]
    for init, runs in res["runs"].items():
        for name, r in runs.items():
            if name == "goals":
                continue
            for s in ("1-shot", "5-shot"):
                lines.append(f"| {init} | {name} | {s} | {cell(r[s]['zero_shot'])} | {cell(r[s]['few_shot'])} | "
                             f"{cell(r[s]['fusion'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench_pre"))
    ap.add_argument("--inits", default="pretrained,random", help="Comma-separated: pretrained, random.")
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--weights", type=Path, help="Skip pretraining and measure these weights.")
    ap.add_argument("--ship", action="store_true", help="Copy the new weights over the shipped file.")
    ap.add_argument("--frozen", action="store_true", help="Train with --freeze-backbone (the image encoder fixed).")
    a = ap.parse_args()
    res = run_all(a.out, a.inits.split(","), a.episodes, a.ship, a.weights, a.frozen)
    (a.out / "pretrain_synth.json").write_text(json.dumps(res, indent=2))
    print("\n" + table(res))
    print(json.dumps({k: v["goals"] for k, v in res["runs"].items()}, indent=2))


if __name__ == "__main__":
    main()
