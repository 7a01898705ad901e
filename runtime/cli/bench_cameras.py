"""``clipfsar bench --cameras``: how many live cameras at the bundle's cadence this box holds.

A camera at the bundle's cadence needs one encoded frame per sampling interval: ``T / window_seconds`` frames per
second (8 frames over a 2 s window: 4 per second), each decision one encoder call for every camera's due frame
(streaming.py batches them) plus the head. Two numbers:

- **encoder-bound limit**: the most cameras whose frames the image encoder alone keeps up with, from its measured
  images/s at the batch that many cameras make (``N * cadence <= images/s(batch min(N, 8))``);
- **held**: the most cameras that really keep the cadence (every camera's decisions/s at least 90 % of it) when
  that many copies of a video file play in real time as live sources (decoded in their own threads, newest frame
  first: video/prefetch.py) through one classifier for ``seconds``, and no camera's windows span more than 10 %
  beyond ``window_seconds`` (a lagging live source drops frames and stretches its windows): decoding,
  preprocessing, the head and smoothing share the cores with the encoder. The encoder-bound count is tried
  first, then a bisection below it.

Example:
    >>> r = cameras_held(clf, Path("clip.mp4"), seconds=10)
    >>> r["held"], r["encoder_bound"], r["cadence_hz"]
    (5, 6, 4.0)
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from clipfsar.runtime.video.sources import FileSource, Frame


class LiveReplay:
    """A video file played in real time, again and again, as a live camera (``live``: newest frame first)."""
    live = True

    def __init__(self, path: Path, seconds: float, name: str = ""):
        self.path, self.seconds = Path(path), seconds
        first = FileSource(path)
        self.fps, self.error, self.duration = first.fps, None, float("inf")
        self.name = name or str(path)
        first.cap.release()

    def frames(self) -> Iterator[Frame]:
        start, n = time.monotonic(), 0
        while True:
            for f in FileSource(self.path).frames():
                t = n / self.fps
                if t > self.seconds:
                    return
                wait = start + t - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                yield Frame(n, t, f.image)
                n += 1


def encoder_images_per_s(clf, frame: np.ndarray, batches=(1, 2, 4, 8), repeats: int = 5) -> Dict[int, float]:
    """Images/s of the classifier's image encoder (median of ``repeats`` calls) at each batch size."""
    from clipfsar.runtime.video.preprocess import preprocess_frames
    out = {}
    for b in batches:
        x = preprocess_frames([frame] * b, clf.prep)
        clf.image_encoder.run(images=x)  # warm-up: the first call of a batch size compiles/allocates
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            clf.image_encoder.run(images=x)
            times.append(time.perf_counter() - t0)
        out[b] = b / statistics.median(times)
    return out


def encoder_bound(images_per_s: Dict[int, float], cadence_hz: float, max_cameras: int = 64) -> int:
    """The most cameras the encoder alone keeps up with (their frames batched, at most the largest batch measured)."""
    top = max(images_per_s)
    n = 0
    for cams in range(1, max_cameras + 1):
        batch = max([b for b in images_per_s if b <= cams] or [min(images_per_s)])
        if cams * cadence_hz <= images_per_s[min(batch, top)]:
            n = cams
    return n


def _trial(clf, source: Path, cameras: int, seconds: float) -> Tuple[List[float], List[float]]:
    """Per camera, decisions/s and the median seconds of video a window spans, of ``cameras`` live replays of
    ``source`` streamed together for ``seconds``."""
    counts = [0] * cameras
    spans: List[List[float]] = [[] for _ in range(cameras)]
    srcs = [LiveReplay(source, seconds + 1.0, name=f"camera {i}") for i in range(cameras)]
    t0 = time.monotonic()
    warm = clf.facts.window_seconds  # the first decision waits for a full window
    for i, d in clf.stream_many(srcs):
        if time.monotonic() - t0 >= warm:
            counts[i] += 1
            spans[i].append(d.t_end - d.t_start)
    wall = max(time.monotonic() - t0 - warm, 1e-9)
    return [c / wall for c in counts], [statistics.median(s) if s else float("inf") for s in spans]


def cameras_held(clf, source: Path, seconds: float = 10.0, max_cameras: int = 64) -> Dict:
    """Encoder-bound camera count and the count that holds the cadence in real time (see the module docstring)."""
    facts = clf.facts
    cadence = facts.frames / facts.window_seconds
    span_needed = facts.window_seconds * (facts.frames - 1) / facts.frames  # first to last sampled frame
    first = next(iter(FileSource(source).frames()))
    ips = encoder_images_per_s(clf, first.image)
    bound = encoder_bound(ips, cadence, max_cameras)
    tried: List[Dict] = []

    def holds(n: int) -> bool:
        rates, spans = _trial(clf, source, n, seconds)
        ok = min(rates) >= 0.9 * cadence and max(spans) <= 1.1 * span_needed
        tried.append({"cameras": n, "min_decisions_per_s": min(rates), "mean_decisions_per_s": float(np.mean(rates)),
                      "max_window_span_s": max(spans), "held": ok})
        return ok

    # the encoder-bound count first, then a bisection below it (a few trials even when the bound is 64)
    lo, hi = 0, max(bound, 1)  # lo holds (0 trivially), hi is the next to try
    if holds(hi):
        lo = hi
    else:
        hi -= 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if holds(mid):
                lo = mid
            else:
                hi = mid - 1
    held = lo
    return {"cadence_hz": cadence, "window_s": facts.window_seconds, "frames": facts.frames,
            "encoder_images_per_s": {str(b): v for b, v in ips.items()}, "encoder_bound": bound, "held": held,
            "trials": tried, "seconds": seconds, "source_fps": LiveReplay(source, 0).fps}
