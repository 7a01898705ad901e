"""The soak: stream N frames (default 50,000; the video is replayed) through `clipfsar bench` and report the
resident memory growth after warm-up (must stay under 5 %).

    python benchmarks/soak.py BUNDLE VIDEO [--frames 50000] [--backend cpu]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("video")
    ap.add_argument("--frames", type=int, default=50000)
    ap.add_argument("--backend", default="cpu")
    args = ap.parse_args()
    out = subprocess.run([sys.executable, "-m", "clipfsar", "bench", args.bundle, "--source", args.video,
                          "--backend", args.backend, "--frames", str(args.frames), "--json"],
                         check=True, capture_output=True, text=True).stdout
    for r in json.loads(out)["backends"]:
        growth = 100 * (r["rss_mb_end"] - r["rss_mb_start"]) / r["rss_mb_start"]
        print(f"{r['backend']}: {r['frames']} frames, {r['decisions']} decisions in {r['wall_s']:.0f} s "
              f"({r['decisions_per_s']:.0f}/s); RSS {r['rss_mb_start']:.1f} -> {r['rss_mb_end']:.1f} MB "
              f"({growth:+.2f} %) {'OK' if growth < 5 else 'GROWS'}")
        if growth >= 5:
            sys.exit(1)


if __name__ == "__main__":
    main()
