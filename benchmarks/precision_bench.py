"""Benchmark: what each precision costs and buys on this CPU, side by side in one run.

Part 1 -- ViT-B-16 and RN50 image encoders (random init: the weights' values do not change the speed), batch 1
and 8: PyTorch eager fp32, onnxruntime fp32, fp16, int8 dynamic, int8 static Q/DQ in TensorRT's form (symmetric)
and in onnxruntime's CPU form (uint8 activations), MinMax, calibrated on frames of synthetic clips sampled and
preprocessed by the runtime -- median latency of interleaved runs, ratio to PyTorch,
cosine to onnxruntime fp32 on held-out frames (other clips).
Part 2 -- accuracy of each variant on the trained demo model (``clipfsar demo``; run here if DEMO/done is
missing): 5-way 1-shot, 2,000 seeded episodes on the test split, through ``clipfsar calibrate`` (int8 dynamic and,
on more copies, int8 static Q/DQ in both forms).

    .venv/bin/python benchmarks/precision_bench.py [--archs ViT-B-16 RN50] [--runs 7] [--demo demo_out]
        [--out bench_out/precision] [--demo-weights synth|none|FILE] [--skip-encoders] [--skip-accuracy]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _cos(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _frames(root: Path, prep, n_clips: int, seed: int):
    """Frames of synthetic clips through the runtime's sampling and preprocessing: (n_clips * 8, 3, S, S)."""
    from clipfsar.calib.data import collect_frames
    from clipfsar.runtime.bundle.reader import ModelFacts
    facts = ModelFacts("bench", 0, 8, prep.image_size, prep.resize_short, tuple(prep.mean), tuple(prep.std), "{}",
                       0.1, 0.9, 1.0, 2.0, 77)
    sets = collect_frames(root, facts, frames=8 * n_clips, holdout=16, seed=seed)
    return sets.calibration.pixels, sets.held_out.pixels


def encoder_rows(arch: str, out: Path, clips: Path, runs: int):
    from clipfsar.calib.fp16 import to_fp16
    from clipfsar.calib.int8 import quantize_dynamic_graph, quantize_static_graph
    from clipfsar.export.graphs import ImageEncoder
    from clipfsar.export.onnx_export import export_graph
    from clipfsar.runtime.engines.backends import OnnxGraph
    from clipfsar.train import create_model_and_transforms

    torch.manual_seed(0)
    model, prep = create_model_and_transforms(arch)
    model = model.float().eval()
    calib, held = _frames(clips, prep, 4, 0)  # 32 calibration frames, 16 held-out frames of other clips
    fp32 = out / f"{arch}.fp32.onnx"
    t0 = time.perf_counter()
    export_graph(ImageEncoder(model), "image_encoder", (torch.from_numpy(held[:2]),), fp32)
    paths = {"fp32": fp32}
    made = {"fp16": lambda p: to_fp16(fp32, p, "image_encoder"),
            "int8 dynamic": lambda p: quantize_dynamic_graph(fp32, p),
            "int8 static Q/DQ": lambda p: quantize_static_graph(
                fp32, p, [{"images": calib[i:i + 8]} for i in range(0, len(calib), 8)], "minmax"),
            "int8 static Q/DQ u8": lambda p: quantize_static_graph(
                fp32, p, [{"images": calib[i:i + 8]} for i in range(0, len(calib), 8)], "minmax", u8=True)}
    for name, make in made.items():
        paths[name] = out / f"{arch}.{name.replace(' ', '_').replace('/', '')}.onnx"
        make(paths[name])
    print(f"{arch}: graphs made in {time.perf_counter() - t0:.0f} s", flush=True)
    precision = {"fp32": "fp32", "fp16": "fp16"}
    graphs = {k: OnnxGraph(p, "cpu", precision=precision.get(k, "int8")) for k, p in paths.items()}
    ref = np.concatenate([graphs["fp32"].run(images=held[i:i + 8])["features"] for i in range(0, len(held), 8)])
    cos = {k: _cos(ref, np.concatenate([g.run(images=held[i:i + 8])["features"] for i in range(0, len(held), 8)]))
           for k, g in graphs.items()}
    rows = []
    for batch in (1, 8):
        x = held[:batch]
        xt = torch.from_numpy(x)
        times = {k: [] for k in ["PyTorch eager"] + list(graphs)}
        with torch.no_grad():
            model.clip.encode_image(xt)
        for g in graphs.values():
            g.run(images=x)
        for _ in range(runs):  # interleaved: every variant sees the same machine state
            t = time.perf_counter()
            with torch.no_grad():
                model.clip.encode_image(xt)
            times["PyTorch eager"].append(time.perf_counter() - t)
            for k, g in graphs.items():
                t = time.perf_counter()
                g.run(images=x)
                times[k].append(time.perf_counter() - t)
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        for k, ms in med.items():
            rows.append({"arch": arch, "batch": batch, "variant": k, "ms": ms,
                         "ratio_to_torch": ms / med["PyTorch eager"],
                         "cos_mean": float(cos[k].mean()) if k in cos else None,
                         "cos_min": float(cos[k].min()) if k in cos else None})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def demo_accuracy(demo: Path, out: Path, episodes: int, weights: str, run: Path = None):
    if run is not None:  # a trained run folder on the demo's data (DEMO/data): export its bundle here
        from clipfsar.export.bundle_export import export_bundle
        if not (demo / "bundle").exists():
            export_bundle(run, demo / "data", demo / "bundle", shots=1,
                          classes_file=demo / "data" / "splits" / "test.txt", parity_episodes=20)
    elif not (demo / "done").exists():
        print(f"training the demo model into {demo} (clipfsar demo --weights {weights})", flush=True)
        subprocess.run([sys.executable, "-m", "clipfsar", "demo", "--out", str(demo), "--weights", weights],
                       check=True)
    from clipfsar.calib.calibrate import calibrate_bundle
    results = {}
    for mode in ("dynamic", "static", "static-u8"):
        b = out / f"demo_bundle_{mode}"
        shutil.rmtree(b, ignore_errors=True)
        shutil.copytree(demo / "bundle", b)
        bundle = calibrate_bundle(b, demo / "data", ("fp16", "int8") if mode == "dynamic" else ("int8",),
                                  frames=512, split="test", int8_mode=mode, episodes=episodes)
        for p, v in bundle.manifest.precision_report["variants"].items():
            key = {"int8": f"int8 {mode}"}.get(p, p)
            results.setdefault(key, v)
    print(json.dumps(results), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["ViT-B-16", "RN50"])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--demo", type=Path, default=Path("demo_out"))
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("bench_out/precision"))
    ap.add_argument("--demo-weights", default="synth", help="`clipfsar demo --weights` (synth, a file, or none).")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-encoders", action="store_true")
    ap.add_argument("--demo-run", type=Path, help="A trained run folder on DEMO/data to use instead of running "
                                                  "`clipfsar demo` (its bundle is exported into DEMO/bundle).")
    a = ap.parse_args()
    from clipfsar.train.synth import make_dataset

    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    clips = a.out / "clips"
    make_dataset(clips, seed=0, clips_per_class=1, size=256, length=16)
    rows = []
    for arch in [] if a.skip_encoders else a.archs:
        rows += encoder_rows(arch, a.out, clips, a.runs)
    acc = None if a.skip_accuracy else demo_accuracy(a.demo, a.out, a.episodes, a.demo_weights, a.demo_run)
    meta = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, "
            f"{len(__import__('os').sched_getaffinity(0))} cores", "torch_threads": torch.get_num_threads(),
            "command": " ".join(sys.argv)}
    (a.out / "precision_bench.json").write_text(json.dumps({"meta": meta, "encoders": rows, "accuracy": acc}, indent=2))
    print(f"\n{meta}\n\n| arch | batch | variant | median ms | ratio to PyTorch | cos mean / min to fp32 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cos = "" if r["cos_mean"] is None else f"{r['cos_mean']:.5f} / {r['cos_min']:.5f}"
        print(f"| {r['arch']} | {r['batch']} | {r['variant']} | {r['ms']:.1f} | {r['ratio_to_torch']:.2f}x | {cos} |")
    if acc:
        print("\n| variant (demo model) | 5-way 1-shot accuracy | drop (points) | top-1 agreement | flagged |")
        print("|---|---|---|---|---|")
        for k, v in acc.items():
            print(f"| {k} | {v['accuracy']:.2f} +- {v['ci95']:.2f} | {v.get('drop_points', 0.0):+.2f} | "
                  f"{100 * v.get('agreement', 1.0):.1f}% | {v['flagged']} |")


if __name__ == "__main__":
    main()
