"""Benchmark: S client streams of one video through one `clipfsar serve` Triton server, vs the same S streams as
separate local processes (what `clipfsar run` does), vs one `stream_many` process. Prints a markdown table:
decisions/s in total, p50/p95 decision latency (from reading a window's last sampled frame to its decision),
and the server's mean encoder batch size (Triton's statistics).

    .venv/bin/python benchmarks/serve_bench.py BUNDLE [--streams 1 4 16] [--seconds 2] [--modes server local many]

Server clients are threads of this process (one Classifier and one gRPC connection each), or separate processes
with --client-processes; local processes use
`clipfsar run`'s default threads (cores - 1). Files are read unpaced (as fast as the pipeline goes), so the
latency is processing time, not real-time waiting.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def make_video(path: Path, seconds: float, size: int, fps: int = 12) -> Path:
    from clipfsar.train.synth import render_clip, write_video
    rng = np.random.default_rng(7)
    frames = []
    motions = [("circle", "moving left"), ("star", "rotating clockwise"), ("square", "growing")]
    while len(frames) < seconds * fps:
        shape, motion = motions[len(frames) // fps % 3]
        frames += render_clip(shape, motion, rng, size, fps)
    write_video(path, frames[:int(seconds * fps)], fps=fps)
    return path


def stream_timed(clf, video: str):
    """Stream ``video``; returns (decisions, latencies in s, t_first_read, t_last_decision)."""
    read_at = {}
    lat, n = [], 0
    t0 = time.time()
    for d in clf.stream(video, on_frame=lambda f, _d: read_at.__setitem__(f.index, time.perf_counter())):
        lat.append(time.perf_counter() - read_at[d.frame])
        n += 1
    return n, lat, t0, time.time()


def worker_local(bundle: str, video: str, go: str, backend: str = "cpu") -> None:
    """One separate process (`clipfsar run` equivalent, local or ``--server``): loads, says so, waits for ``go`` to
    exist, streams, prints its JSON result."""
    from clipfsar.runtime import Classifier
    from clipfsar.runtime.base.threads import streaming_threads
    clf = Classifier.load(bundle, backend=backend, threads=streaming_threads(None), spinning=False)
    print("loaded", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    n, lat, t0, t1 = stream_timed(clf, video)
    print(json.dumps({"decisions": n, "lat": lat, "t0": t0, "t1": t1, "rss_mb": _rss_mb()}))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def summarize(mode, s, decisions, lat, t0, t1, batch=None, note=""):
    lat_ms = sorted(1000 * x for x in lat)
    p = (lambda q: lat_ms[min(len(lat_ms) - 1, int(q * len(lat_ms)))]) if lat_ms else (lambda q: float("nan"))
    return {"mode": mode, "streams": s, "decisions": decisions, "seconds": t1 - t0,
            "decisions_per_s": decisions / (t1 - t0), "p50_ms": statistics.median(lat_ms) if lat_ms else None,
            "p95_ms": p(0.95), "mean_batch": batch, "note": note}


def run_local(bundle, video, s, backend="cpu", mode="separate local processes"):
    go = Path(tempfile.mkdtemp()) / "go"  # every process loaded before any streams
    procs = [subprocess.Popen([sys.executable, str(HERE), "--worker-local", bundle, video, str(go), backend],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(s)]
    for p in procs:
        assert p.stdout.readline().strip() == "loaded", "a local process failed to load the bundle"
    go.touch()
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return summarize(mode, s, sum(o["decisions"] for o in outs),
                     sum((o["lat"] for o in outs), []), min(o["t0"] for o in outs), max(o["t1"] for o in outs),
                     note=f"RSS {statistics.mean(o['rss_mb'] for o in outs):.0f} MB/process")


def run_many(bundle, video, s):
    from clipfsar.runtime import Classifier
    from clipfsar.runtime.base.threads import streaming_threads
    clf = Classifier.load(bundle, backend="cpu", threads=streaming_threads(None), spinning=False)
    read_at, lat, n = {}, [], 0
    t0 = time.time()
    for i, d in clf.stream_many([video] * s, on_frame=lambda i, f, _d: read_at.__setitem__((i, f.index),
                                                                                          time.perf_counter())):
        lat.append(time.perf_counter() - read_at[(i, d.frame)])
        n += 1
    return summarize("one stream_many process", s, n, lat, t0, time.time(),
                     batch=clf.stats.encoder_images / max(1, clf.stats.encoder_calls))


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for sk in socks:
        sk.bind(("127.0.0.1", 0))
    ports = [sk.getsockname()[1] for sk in socks]
    for sk in socks:
        sk.close()
    return ports


class Server:
    def __init__(self, bundle, extra=()):
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "clipfsar", "serve", bundle, "--host", "127.0.0.1",
                                      "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                                      "--metrics-port", str(self.metrics), *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while "ready:" not in Path(self.log.name).read_text(errors="replace"):
            if self.proc.poll() is not None or time.time() - t0 > 300:
                raise SystemExit(f"server did not start:\n{Path(self.log.name).read_text()[-3000:]}")
            time.sleep(0.5)
        self.url = f"grpc://127.0.0.1:{self.grpc}"

    def batches(self):
        from clipfsar.runtime.engines.triton_client import TritonConnection
        c = TritonConnection(self.url)
        stats = c.statistics("image_encoder")["model_stats"][0].get("batch_stats", [])
        c.close()
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats}

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def run_server(server, bundle, video, s, client_processes=False):
    from clipfsar.runtime import Classifier
    before = server.batches()
    if client_processes:
        row = run_local(bundle, video, s, server.url, "one Triton server, client processes")
        after = server.batches()
        grown = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
        row["mean_batch"] = sum(b * n for b, n in grown.items()) / max(1, sum(grown.values()))
        return row
    clfs = [Classifier.load(bundle, backend=server.url) for _ in range(s)]
    before = server.batches()
    results = [None] * s
    barrier = threading.Barrier(s)

    def one(i):
        barrier.wait()
        results[i] = stream_timed(clfs[i], video)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(s)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = server.batches()
    grown = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
    mean_batch = sum(b * n for b, n in grown.items()) / max(1, sum(grown.values()))
    return summarize("one Triton server", s, sum(r[0] for r in results), sum((r[1] for r in results), []),
                     min(r[2] for r in results), max(r[3] for r in results), batch=mean_batch)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker-local":
        worker_local(*sys.argv[2:6])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the video each stream reads")
    ap.add_argument("--modes", nargs="+", default=["server", "local", "many"])
    ap.add_argument("--server-args", default="", help="extra `clipfsar serve` options")
    ap.add_argument("--local-max", type=int, default=16,
                    help="skip separate local processes above this many streams (each holds its own model)")
    ap.add_argument("--client-processes", action="store_true",
                    help="server clients as separate processes (like cameras on other boxes) instead of threads")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from clipfsar.runtime.bundle.reader import Bundle
    facts = Bundle.open(Path(a.bundle)).manifest.model
    video = str(make_video(Path(tempfile.mkdtemp()) / "demo.mp4", a.seconds, max(64, facts.resize_short)))
    rows = []
    server = Server(a.bundle, a.server_args.split()) if "server" in a.modes else None
    try:
        for s in a.streams:
            if server is not None:
                rows.append(run_server(server, a.bundle, video, s, a.client_processes))
                print(json.dumps(rows[-1]), flush=True)
            if "local" in a.modes and s > a.local_max:
                print(f"separate local processes: {s} streams skipped (--local-max {a.local_max}: memory)")
            elif "local" in a.modes:
                rows.append(run_local(a.bundle, video, s))
                print(json.dumps(rows[-1]), flush=True)
            if "many" in a.modes:
                rows.append(run_many(a.bundle, video, s))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"\n{facts.arch} bundle, {a.seconds:g} s video per stream, {os.cpu_count()} cores\n")
    print("| streams | mode | decisions | decisions/s | p50 ms | p95 ms | mean encoder batch | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mb = f"{r['mean_batch']:.1f}" if r["mean_batch"] is not None else "1 (per process)"
        print(f"| {r['streams']} | {r['mode']} | {r['decisions']} | {r['decisions_per_s']:.2f} | {r['p50_ms']:.0f} | "
              f"{r['p95_ms']:.0f} | {mb} | {r['note']} |")
    for s in a.streams:
        by = {r["mode"]: r["decisions_per_s"] for r in rows if r["streams"] == s}
        for srv in ("one Triton server", "one Triton server, client processes"):
            if srv in by and "separate local processes" in by:
                print(f"\n{s} streams: {srv} / separate processes = "
                      f"{by[srv] / by['separate local processes']:.2f}x", end="")
    print()
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
