"""Intra-op threads and spinning for a streaming process: decisions/s of `Classifier.stream` on a 640x480 video
(decoded on the same cores) for onnxruntime's default (one thread per core, spinning) against explicit thread
counts with spinning off. Configurations are interleaved and repeated; the median is reported.

    python benchmarks/threads_bench.py BUNDLE [BUNDLE ...] [--frames 600] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from clipfsar.runtime.base.threads import usable_cores
from clipfsar.runtime.classify.classifier import Classifier
from clipfsar.runtime.cli.bench import ReplaySource

CONFIGS = [("default (0), spinning", 0, True), ("default (0), no spinning", 0, False),
           ("1, no spinning", 1, False), ("2, no spinning", 2, False)]


def make_video(path: Path, frames: int = 120, fps: float = 30.0) -> Path:
    """A 640x480 clip (moving shapes on a textured background): decoding costs what a camera's frames cost."""
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (9, 9), 3)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        img = background.copy()
        cv2.circle(img, (50 + 4 * i % 540, 240), 40, (40, 200, 240), -1)
        cv2.rectangle(img, (300, 100 + 2 * i % 300), (380, 180 + 2 * i % 300), (220, 60, 60), -1)
        w.write(img)
    w.release()
    return path


def measure(bundle: Path, video: Path, threads: int, spinning: bool, frames: int) -> float:
    clf = Classifier.load(bundle, backend="cpu", threads=threads, spinning=spinning)
    for _ in clf.stream(ReplaySource(video, 60)):  # warm-up
        pass
    t0, n = time.perf_counter(), 0
    for _ in clf.stream(ReplaySource(video, frames)):
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=600, help="frames streamed per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    video = make_video(Path(tempfile.mkdtemp()) / "640x480.mp4")
    report = {"cores": usable_cores(), "frames": args.frames, "repeats": args.repeats, "bundles": {}}
    for bundle in args.bundles:
        runs = {name: [] for name, _, _ in CONFIGS}
        for _ in range(args.repeats):
            for name, threads, spinning in CONFIGS:
                runs[name].append(measure(bundle, video, threads, spinning, args.frames))
        med = {name: statistics.median(v) for name, v in runs.items()}
        base = med[CONFIGS[0][0]]
        report["bundles"][str(bundle)] = {name: {"decisions_per_s": round(v, 2), "vs_default": round(v / base, 2)}
                                          for name, v in med.items()}
        print(f"{bundle}:", file=sys.stderr)
        for name, v in med.items():
            print(f"  threads {name:<26} {v:8.2f} decisions/s  ({v / base:.2f}x the default)", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
