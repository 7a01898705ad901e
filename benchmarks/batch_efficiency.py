"""Benchmark: what batching can buy on this machine, the ceiling of any serving speed-up.

A server that batches every camera's frames (Triton's dynamic batcher, ``stream_many``) beats separate per-camera
processes only by as much as the image encoder's throughput per image grows with the batch. This script measures
that growth for a bundle's image encoder on onnxruntime: images/s at batch 1, 4 and 16 with 1 and 2 intra-op
threads (median of repeated calls, random 0..1 inputs of the bundle's image size), and prints

    ceiling = best batched images/s / (cores x images/s of one single-threaded session at batch 1),

the most a batching server can gain over one single-threaded process per core on the same cores, before any
serving cost (gRPC, copies). Goal context: issue 13 asks 16 streams through Triton at >= 1.5x separate processes.

    .venv/bin/python benchmarks/batch_efficiency.py BUNDLE [--batches 1 4 16] [--threads 1 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def images_per_s(bundle: Path, batch: int, threads: int, precision: str, min_images: int = 12) -> float:
    import onnxruntime as ort

    from clipfsar.runtime.bundle.reader import Bundle
    b = Bundle.open(bundle)
    size = b.manifest.model.image_size
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(b.graph_path("image_encoder", precision)), opts,
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    sess.run(None, {name: x})  # warm-up
    times = []
    for _ in range(max(3, -(-min_images // batch))):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    print("| threads | batch | images/s |\n|---|---|---|")
    for threads in a.threads:
        for batch in a.batches:
            r = images_per_s(a.bundle, batch, threads, a.precision)
            rows.append({"threads": threads, "batch": batch, "images_per_s": r})
            print(f"| {threads} | {batch} | {r:.2f} |", flush=True)
    single = next((r["images_per_s"] for r in rows if r["threads"] == 1 and r["batch"] == 1), None)
    best = max(rows, key=lambda r: r["images_per_s"])
    out = {"bundle": str(a.bundle), "precision": a.precision, "cores": cores, "rows": rows}
    if single:
        out["ceiling"] = best["images_per_s"] / (cores * single)
        print(f"\nceiling of a batching server over {cores} single-threaded batch-1 processes: "
              f"{out['ceiling']:.2f}x (best: batch {best['batch']}, {best['threads']} threads)")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
