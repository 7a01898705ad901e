"""``clipfsar bench``: per-stage latency, decisions/s and resident memory of the streaming runtime."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from clipfsar.runtime.base.redact import refuse_url
from clipfsar.runtime.classify.classifier import Classifier
from clipfsar.runtime.engines.backends import usable_backends
from clipfsar.runtime.video.sources import FileSource, Frame


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ReplaySource:
    """A video file played again and again until ``total`` frames, with times that keep increasing."""
    live = False

    def __init__(self, path: Path, total: int):
        self.path, self.total = Path(path), total
        first = FileSource(path)
        self.fps, self.name, self.error = first.fps, str(path), None
        self.duration = float("inf")
        first.cap.release()

    def frames(self) -> Iterator[Frame]:
        n, offset = 0, 0.0
        while n < self.total:
            src = FileSource(self.path)
            last = 0.0
            for f in src.frames():
                yield Frame(n, offset + f.time, f.image)
                last = f.time
                n += 1
                if n >= self.total:
                    return
            offset += last + 1.0 / self.fps


def run_bench(bundle: Path, source: Path, backends: Optional[List[str]] = None, total_frames: int = 10000,
              threads: int = 0, precision: str = "auto", cache_dir: Optional[Path] = None, cameras: bool = False,
              seconds: float = 10.0) -> Dict:
    """Stream ``source`` (replayed to ``total_frames``) through each backend; returns the measurements.

    ``threads``: onnxruntime intra-op threads with spinning off (the decoder shares the cores); 0 = onnxruntime's
    own default (one thread per core, spinning). ``cache_dir``: the engine cache (runtime/engines/cache_dir.py).
    ``encoder_bound_decisions_per_s``: decisions/s if nothing but the encoder took time (decoding runs ahead in its
    own thread: video/prefetch.py); ``of_encoder_bound``: the stream's share of it. ``cameras``: also how many live
    cameras at the bundle's cadence this box holds (bench_cameras.py; ``seconds`` per trial).
    """
    refuse_url(source, "bench --source")
    backends = backends or usable_backends()
    results = []
    for backend in backends:
        clf = Classifier.load(bundle, backend=backend, threads=threads, spinning=threads == 0, precision=precision,
                              cache_dir=cache_dir)
        for _ in clf.stream(ReplaySource(source, 200)):  # warm-up (session initialisation, allocator)
            pass
        clf.stats = type(clf.stats)(precisions=dict(clf.precisions))
        rss_start = rss_mb()
        t0 = time.perf_counter()
        for _ in clf.stream(ReplaySource(source, total_frames)):
            pass
        wall = time.perf_counter() - t0
        s = clf.stats
        n = max(1, s.decisions)
        ms = {k: 1000 * v / n for k, v in s.seconds.items()}
        around = sum(v for k, v in s.seconds.items() if k != "encoder")
        results.append({
            "backend": backend, "provider": clf.providers["image_encoder"], "precisions": dict(clf.precisions),
            "frames": s.frames_read,
            "sampled": s.frames_sampled, "encoder_calls": s.encoder_calls, "decisions": s.decisions,
            "decisions_per_s": s.decisions / wall, "frames_per_s": s.frames_read / wall,
            "ms_per_decision": ms, "overhead_vs_encoder": around / max(s.seconds["encoder"], 1e-9),
            "rss_mb_start": rss_start, "rss_mb_end": rss_mb(), "wall_s": wall, "threads": threads,
            "encoder_bound_decisions_per_s": s.decisions / max(s.seconds["encoder"], 1e-9),
            "of_encoder_bound": s.seconds["encoder"] / wall})
        if cameras:
            from clipfsar.runtime.cli.bench_cameras import cameras_held
            results[-1]["cameras"] = cameras_held(clf, Path(source), seconds)
    return {"bundle": str(bundle), "source": str(source), "backends": results}
