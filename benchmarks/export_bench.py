"""Benchmark: export time and graph sizes for ViT-B-16 and RN50 (random init), and image-encoder latency on this
CPU, onnxruntime fp32 vs PyTorch eager, batch 1 and 8, medians of interleaved runs. Prints a markdown table.

    .venv/bin/python benchmarks/export_bench.py [--archs ViT-B-16 RN50] [--runs 7] [--out bench_out/export]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["ViT-B-16", "RN50"])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("bench_out/export"))
    a = ap.parse_args()
    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.runtime.engines.backends import OnnxGraph
    from clipfsar.train import create_model_and_transforms, save_checkpoint
    from clipfsar.train.synth import make_dataset

    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    support = a.out / "support"
    make_dataset(support, seed=0, clips_per_class=1, size=96, length=16)
    rows = []
    for arch in a.archs:
        torch.manual_seed(0)
        model, prep = create_model_and_transforms(arch)
        ck = save_checkpoint(a.out / f"{arch}_ckpt", model, prep)
        t0 = time.perf_counter()
        b = export_bundle(ck, support, a.out / f"{arch}_bundle", classes_file=support / "splits" / "test.txt",
                          parity_episodes=5)
        export_s = time.perf_counter() - t0
        sizes = {g: b.graph_path(g).stat().st_size / 2 ** 20 for g in b.manifest.graphs}
        enc = OnnxGraph(b.graph_path("image_encoder"), backend="cpu")
        model.eval()
        lat = {}
        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            xt = torch.from_numpy(x)
            with torch.no_grad():
                model.clip.encode_image(xt)  # warm-up both
            enc.run(images=x)
            t_torch, t_ort = [], []
            for _ in range(a.runs):  # interleaved, so both see the same machine state
                t = time.perf_counter()
                with torch.no_grad():
                    model.clip.encode_image(xt)
                t_torch.append(time.perf_counter() - t)
                t = time.perf_counter()
                enc.run(images=x)
                t_ort.append(time.perf_counter() - t)
            mt, mo = statistics.median(t_torch) * 1000, statistics.median(t_ort) * 1000
            lat[batch] = {"torch_ms": mt, "ort_ms": mo, "ratio": mo / mt}
        rows.append({"arch": arch, "export_s": export_s, "sizes_mb": sizes, "latency": lat,
                     "parity": b.manifest.parity["graphs"], "provider": enc.providers[0],
                     "torch_threads": torch.get_num_threads()})
        print(json.dumps(rows[-1]), flush=True)
    (a.out / "export_bench.json").write_text(json.dumps(rows, indent=2))
    print("\n| arch | export s | image / text / support / query graph MB | batch | PyTorch eager ms "
          "| onnxruntime ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["sizes_mb"]
        size = f"{s['image_encoder']:.0f} / {s['text_encoder']:.0f} / {s['support_head']:.1f} / {s['query_head']:.1f}"
        for batch, lat in r["latency"].items():
            print(f"| {r['arch']} | {r['export_s']:.0f} | {size} | {batch} | {lat['torch_ms']:.0f} "
                  f"| {lat['ort_ms']:.0f} "
                  f"| {lat['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
