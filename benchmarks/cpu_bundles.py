"""Make the random-init full-size bundles the CPU benchmarks run on (ViT-B-16, RN50; and tiny), the way a user
makes one: a checkpoint of the random-init model, `clipfsar export`, then `clipfsar calibrate` with its defaults
(backend auto, precision auto, int8 auto, minmax) on synthetic clips, so `--backend auto --precision auto`
afterwards is the runtime's own choice.

    .venv/bin/python benchmarks/cpu_bundles.py [--archs ViT-B-16 RN50 tiny] [--out bench_out/cpu]
        [--frames 512] [--episodes 1000]

Random init: the weights' values do not change the speed; accuracy on random weights means nothing (the demo
model's accuracy is measured by benchmarks/cpu_backends.py --demo). Writes OUT/<arch>_bundle and OUT/data.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "clipfsar"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["ViT-B-16", "RN50", "tiny"])
    ap.add_argument("--out", type=Path, default=Path("bench_out/cpu"))
    ap.add_argument("--frames", type=int, default=512, help="calibrate --frames (its default: 512)")
    ap.add_argument("--episodes", type=int, default=1000, help="calibrate --episodes (its default: 1000)")
    a = ap.parse_args()
    import torch

    from clipfsar.train import create_model_and_transforms, save_checkpoint
    from clipfsar.train.synth import make_dataset

    a.out.mkdir(parents=True, exist_ok=True)
    data = a.out / "data"
    if not (data / "splits" / "test.txt").is_file():
        make_dataset(data, seed=0, clips_per_class=8, size=96, length=24)
    for arch in a.archs:
        bundle = a.out / f"{arch}_bundle"
        if (bundle / "manifest.json").is_file():
            print(f"{arch}: {bundle} exists", flush=True)
            continue
        torch.manual_seed(0)
        model, prep = create_model_and_transforms(arch, frames=8)
        ck = save_checkpoint(a.out / f"{arch}_ckpt", model, prep)
        del model
        t0 = time.perf_counter()
        subprocess.run(CLI + ["export", "--checkpoint", str(ck), "--support", str(data), "--out", str(bundle),
                              "--classes", str(data / "splits" / "test.txt"), "--force"], check=True)
        t1 = time.perf_counter()
        subprocess.run(CLI + ["calibrate", str(bundle), "--data", str(data), "--split", "test",
                              "--frames", str(a.frames), "--episodes", str(a.episodes)], check=True)
        print(f"{arch}: export {t1 - t0:.0f} s, calibrate {time.perf_counter() - t1:.0f} s", flush=True)


if __name__ == "__main__":
    main()
