"""Benchmark: the paper's text-token ablation and the weight of each branch in the fusion, for the demo's recipe.

The ablation as users run it — both synthetic families, the prior's image tower frozen, mean and 95 % t-interval
over training seeds — is ``clipfsar ablation`` (train/ablation.py, docs/ablation.md). This script stays for what
that command does not do: the demo's *fine-tuned* recipe (a fresh image tower) and the ``--spread`` diagnosis.

The demo's recipe (``clipfsar/demo.py``): the shipped pretrained tiny weights with the image tower (``visual.*``)
re-initialised from the seed, the text tower frozen, 900 steps x 4 episodes, 5-way 1-shot, query 3, lr 1e-3 cosine,
warm-up 10 from 1e-5, alpha 0.5 (until 2026-11-30: 450 steps, alpha 1.5; ``--steps``/``--alpha``).
This script trains that recipe with and without the text token in the prototypes
(the same ``TrainConfig`` the demo builds, through the same ``Trainer``), for each training seed, on one synthetic
data set (``clipfsar synth DATA --seed 0 --clips 20``, what the demo makes), and evaluates each run on the test
split, 5-way 1-shot and 5-shot, 2,000 seeded episodes (seed 0), beta 0.9:
``evaluate_checkpoint(run, data, "test", 5, shot, 2000, 0, beta=0.9)``.

``--spread`` also measures, on the same test episodes, how much each branch can move the fused decision: the paper's
fusion ``softmax(beta * log p_vt + (1 - beta) * log p_fs)`` equals, up to a per-query constant,
``beta * s * cos(v, w_c) + (1 - beta) * (-D_c / T)``; for each query the spread across the N classes
(max - min) of each of the two terms is taken, and the median and quartiles over queries are reported, with how
often the fused decision follows each branch and the fusion accuracy at other betas (a diagnosis, not a change).

    .venv/bin/python benchmarks/text_token_ablation.py --out /tmp/tta [--data DIR] [--seeds 0,1]
        [--reuse-text-run 0=/tmp/demo_exp/run] [--spread] [--alpha 0.5] [--steps 900]

Writes OUT/text_token_ablation.json and prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHOTS = (1, 5)


def train(out: Path, data: Path, seed: int, steps: int, alpha: float, text_token: bool) -> dict:
    from clipfsar.demo import _fresh_image_tower, train_config
    from clipfsar.train.loop import Trainer
    run = out / f"seed{seed}_alpha{alpha:g}_steps{steps}_{'text' if text_token else 'notext'}"
    init = _fresh_image_tower("synth", out / f"init_seed{seed}.safetensors", seed)
    t = time.perf_counter()
    ablation = {} if text_token else {"text_in_prototype": False}
    Trainer(train_config(data, run, init, seed, steps, alpha, **ablation)).run()
    return {"run": str(run), "train_seconds": round(time.perf_counter() - t, 1)}


def evaluate(run: Path, data: Path, episodes: int) -> dict:
    from clipfsar.train.evaluate import evaluate_checkpoint
    res = {}
    for shot in SHOTS:
        b = evaluate_checkpoint(run, data, "test", 5, shot, episodes, 0, beta=0.9)["branches"]
        res[f"{shot}-shot"] = {"zero_shot": b["videotext"], "few_shot": b["fewshot"], "fusion": b["fusion"]}
    return res


def spread(run: Path, data: Path, episodes: int, shot: int, beta: float = 0.9) -> dict:
    """Per-query spread across classes of the two terms of the fused log-probability (see the module doc)."""
    import torch

    from clipfsar.train.checkpoint import best_checkpoint, load_checkpoint
    from clipfsar.train.data import load_split
    from clipfsar.train.episodes import episodes as make_episodes
    from clipfsar.train.features import ClipLoader, all_clips, class_offsets, encode_clips

    model, prep, _ = load_checkpoint(best_checkpoint(run))
    model.eval()
    clipset = load_split(data, "test", min_clips=shot + 1)
    loader = ClipLoader(prep, model.cfg.frames)
    try:
        feats = encode_clips(model, loader, all_clips(clipset))  # (B, T, D), centre sampling, as evaluation
    finally:
        loader.close()
    offsets, t = class_offsets(clipset), model.cfg.frames
    text = model.text_features(list(clipset.classes)).to(feats.dtype)
    vt_terms, fs_terms, labels = [], [], []
    with torch.no_grad():
        for ep in make_episodes(0, episodes, clipset.counts(), 5, shot, 1):
            cls = np.asarray(ep.classes)
            sup = feats[torch.as_tensor(offsets[cls][:, None] + ep.support)]  # (N, K, T, D)
            qry = feats[torch.as_tensor((offsets[cls][:, None] + ep.query).reshape(-1))]  # (N*Q, T, D)
            dist = model.distances(model.query_embeddings(qry), model.prototypes(sup, text[cls]))  # (N*Q, N)
            vt = model.video_text_logits(qry, text[cls])  # (N*Q, N) = s * cos
            vt_terms.append(vt.numpy())
            fs_terms.append((-dist / t).numpy())
            labels.append(np.repeat(np.arange(len(cls)), ep.query.shape[1]))
    vt_all, fs_all, y = np.concatenate(vt_terms), np.concatenate(fs_terms), np.concatenate(labels)
    quart = lambda a: [round(float(x), 4) for x in np.percentile(a, [25, 50, 75])]
    fused = lambda b: b * vt_all + (1 - b) * fs_all  # = beta log p_vt + (1 - beta) log p_fs + const per query
    pick_vt, pick_fs, pick = vt_all.argmax(1), fs_all.argmax(1), fused(beta).argmax(1)
    return {
        "shot": shot, "episodes": episodes, "queries": int(len(y)), "vt_scale": float(model.vt_scale.detach()),
        "spread_vt_term_quartiles": quart(beta * np.ptp(vt_all, axis=1)),
        "spread_fs_term_quartiles": quart((1 - beta) * np.ptp(fs_all, axis=1)),
        "spread_cos_quartiles": quart(np.ptp(vt_all, axis=1) / float(model.vt_scale)),
        "spread_D_over_T_quartiles": quart(np.ptp(fs_all, axis=1)),
        "fused_follows_videotext": round(float((pick == pick_vt).mean()) * 100, 1),
        "fused_follows_fewshot": round(float((pick == pick_fs).mean()) * 100, 1),
        "branches_disagree": round(float((pick_vt != pick_fs).mean()) * 100, 1),
        "fused_follows_fewshot_when_they_disagree": round(
            float((pick == pick_fs)[pick_vt != pick_fs].mean()) * 100, 1),
        "accuracy_by_beta": {f"{b:g}": round(float((fused(b).argmax(1) == y).mean()) * 100, 1)
                             for b in (0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0)},
        "beta_matching_weight": round(float(np.median(np.ptp(fs_all, 1)) /
                                            (np.median(np.ptp(vt_all, 1)) + np.median(np.ptp(fs_all, 1)))), 3),
    }


def table(res: dict) -> str:
    cell = lambda a: f"{a['accuracy']:.1f} +- {a['ci95']:.1f}"
    lines = ["| seed | alpha | steps | prototypes | shots | zero-shot (video-text) | few-shot (beta = 0) | "
             "fusion (beta = 0.9) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        for s in SHOTS:
            e = r[f"{s}-shot"]
            lines.append(f"| {r['seed']} | {r['alpha']:g} | {r['steps']} | {r['prototypes']} | {s}-shot | "
                         f"{cell(e['zero_shot'])} | {cell(e['few_shot'])} | {cell(e['fusion'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_tta"))
    ap.add_argument("--data", type=Path, help="Synthetic data (default: make OUT/data with the demo's seed 0).")
    ap.add_argument("--seeds", default="0", help="Comma-separated training seeds.")
    ap.add_argument("--alpha", type=float, default=0.5, help="Training alpha (the demo's: 0.5; 1.5 before).")
    ap.add_argument("--steps", type=int, default=900, help="Training steps (the demo's: 900; 450 before).")
    ap.add_argument("--variants", default="text,notext", help="Comma-separated: text, notext.")
    ap.add_argument("--reuse-text-run", action="append", default=[],
                    help="SEED=RUN: an existing run of the demo's recipe with the text token (e.g. the demo's "
                         "OUT/run for seed 0) instead of training it again.")
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--spread", action="store_true", help="Also measure each fusion term's spread per run.")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    data = a.data
    if data is None:
        data = a.out / "data"
        if not data.exists():
            subprocess.run([sys.executable, "-m", "clipfsar", "synth", str(data), "--seed", "0", "--clips", "20"],
                           check=True, stdout=subprocess.DEVNULL)
    reuse = {int(k): Path(v) for k, v in (s.split("=", 1) for s in a.reuse_text_run)}
    res = {"machine": f"{platform.machine()} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}",
           "date": time.strftime("%Y-%m-%d %H:%M"), "data": str(data), "episodes": a.episodes, "runs": []}
    out_json = a.out / "text_token_ablation.json"
    for seed in (int(s) for s in a.seeds.split(",")):
        for variant in a.variants.split(","):
            text_token = variant == "text"
            if text_token and seed in reuse:
                r = {"run": str(reuse[seed]), "train_seconds": None}
            else:
                r = train(a.out, data, seed, a.steps, a.alpha, text_token)
            r.update(seed=seed, alpha=a.alpha, steps=a.steps,
                     prototypes="text token" if text_token else "no text token (ablation)")
            r.update(evaluate(Path(r["run"]), data, a.episodes))
            if a.spread:
                r["spread"] = {f"{s}-shot": spread(Path(r["run"]), data, a.episodes, s) for s in SHOTS}
            res["runs"].append(r)
            print(json.dumps(r), flush=True)
            out_json.write_text(json.dumps(res, indent=2))
    print("\n" + table(res))


if __name__ == "__main__":
    main()
