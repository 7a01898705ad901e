"""`clipfsar studio` measured as a user runs it (a subprocess on 127.0.0.1, a synthetic clip read as live):

1. frames/s the page receives (the MJPEG stream its <img> shows) against the source's frames/s;
2. the latency the live view adds: from the moment the stream thread got a frame from the source to the moment a
   client receives it annotated (each MJPEG part carries ``X-Frame-Read``, the reading time on this machine's
   monotonic clock, which every process here shares);
3. the time from "enrol" (the POST of a take of K recorded clips) to the first decision of the new class on the
   decision feed (SSE), and to the first decision that scores it;
4. the studio's resident memory (``VmRSS``) over a soak with the page open (Debian's headless Chromium when
   Selenium and /usr/bin/chromedriver are there, else an HTTP client reading the same MJPEG + SSE streams).

    python benchmarks/studio_bench.py [--bundle B] [--size 480] [--fps 30] [--soak 1800] [--repeats 3] [--json OUT]

Without ``--bundle`` it builds the tests' tiny random-init bundle (the ``train`` extra). The source is clips of a
class the bundle has not enrolled ('a circle growing'), ``--size`` pixels square at ``--fps``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

NAME = "a circle growing"


def make_source(path: Path, size: int, fps: float, clips: int = 8) -> Path:
    import numpy as np

    from clipfsar.train.synth import render_clip, write_video
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(clips):
        frames += render_clip("circle", "growing", rng, size, int(round(fps * 1.5)))
    write_video(path, frames, fps=fps)
    return path


def make_bundle(root: Path) -> Path:
    import torch

    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.train import create_model_and_transforms, save_checkpoint
    from clipfsar.train.synth import make_dataset
    data = root / "data"
    make_dataset(data, seed=0, clips_per_class=6, size=64, length=16)
    torch.manual_seed(0)
    model, prep = create_model_and_transforms("tiny", frames=8)
    ckpt = save_checkpoint(root / "ckpt", model, prep)
    out = root / "bundle"
    export_bundle(ckpt, data, out, shots=2, classes_file=data / "splits" / "test.txt", parity_episodes=20)
    return out


def start(bundle: Path, source: Path, clips: Path, err: Path, threads: int):
    cmd = [sys.executable, "-m", "clipfsar", "studio", str(bundle), "--source", str(source), "--loop", "--port", "0",
           "--clips", str(clips), "--threads", str(threads)]
    f = open(err, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"studio: (http://\S+?/)\s", err.read_text())
        if m:
            return proc, m.group(1), f
        if proc.poll() is not None:
            raise SystemExit(f"the studio exited:\n{err.read_text()}")
        time.sleep(0.2)
    raise SystemExit("the studio did not start")


def post(url: str, body) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def read_mjpeg(url: str, seconds: float):
    """(parts received, parts showing a new frame, latencies in ms) over ``seconds`` of the live MJPEG stream
    (frame indices restart when a looped file starts again: a new frame is one whose index differs from the last)."""
    lat, new, last = [], 0, None
    parts = 0
    t_end = time.monotonic() + seconds
    with urllib.request.urlopen(url + "api/live.mjpg", timeout=30) as r:
        while time.monotonic() < t_end:
            line = r.readline()
            if not line.startswith(b"--frame"):
                continue
            headers = {}
            while True:
                h = r.readline().strip()
                if not h:
                    break
                k, v = h.decode().split(":", 1)
                headers[k.lower()] = v.strip()
            r.read(int(headers["content-length"]))
            now = time.monotonic()
            parts += 1
            index = int(headers["x-frame-index"])
            new += index != last
            last = index
            lat.append(1000 * (now - float(headers["x-frame-read"])))
    return parts, new, lat


def decisions(url: str, stop: threading.Event, out: list) -> None:
    """Append (monotonic time, decision) from the SSE feed until ``stop``."""
    with urllib.request.urlopen(url + "api/events", timeout=60) as r:
        event = None
        while not stop.is_set():
            line = r.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "decision":
                out.append((time.monotonic(), json.loads(line[6:])))


def record(url: str, shots: int) -> str:
    take = post(url + "api/record", {"shots": shots, "countdown": 0, "pause": 0.2})["take"]["id"]
    while True:
        t = [t for t in get(url + "api/state")["takes"] if t["id"] == take][0]
        if t["state"] in ("done", "failed"):
            return take
        time.sleep(0.2)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_page(url: str):
    """A headless Chromium showing the page (None when Selenium or the system driver is missing)."""
    chromium = shutil.which("chromium")
    if not chromium or not os.access("/usr/bin/chromedriver", os.X_OK):
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    d.get(url)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--size", type=int, default=480)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--measure", type=float, default=30.0, help="seconds of MJPEG read for frames/s and latency")
    ap.add_argument("--repeats", type=int, default=3, help="enrolments timed")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--soak", type=float, default=1800.0, help="seconds of the memory soak (the issue asks 30 min)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="studio_bench_"))
    bundle = a.bundle
    if bundle is None:
        bundle = make_bundle(work)
    else:
        shutil.copytree(bundle, work / "bundle")  # teaching changes the bundle: work on a copy
        bundle = work / "bundle"
    source = make_source(work / "source.mp4", a.size, a.fps)
    proc, url, errf = start(bundle, source, work / "clips", work / "studio.err", a.threads)
    report = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "size": a.size, "source_fps": a.fps,
              "threads": a.threads, "cores": os.cpu_count(), "bundle": str(a.bundle or "tiny (built)")}
    try:
        time.sleep(5)  # the first window fills, the encoder warms up
        parts, new, lat = read_mjpeg(url, a.measure)
        st = get(url + "api/state")["source_state"]
        report["live"] = {"seconds": a.measure, "page_fps": parts / a.measure, "new_frames_per_s":
                          new / a.measure, "studio_source_fps": st["source_fps"],
                          "latency_ms_median": statistics.median(lat),
                          "latency_ms_p95": sorted(lat)[int(0.95 * (len(lat) - 1))]}
        print(json.dumps(report["live"]), flush=True)
        enrol = []
        for _ in range(a.repeats):
            take = record(url, a.shots)
            stop, got = threading.Event(), []
            th = threading.Thread(target=decisions, args=(url, stop, got), daemon=True)
            th.start()
            time.sleep(1.0)
            t0 = time.monotonic()
            post(url + "api/classes", {"name": NAME, "take": take})
            t_post = time.monotonic()
            deadline = t_post + 30
            while time.monotonic() < deadline and not any(d["label"] == NAME for t, d in got if t > t0):
                time.sleep(0.01)
            stop.set()
            first_scored = next((t for t, d in got if t > t0 and NAME in d["scores"]), None)
            first_label = next((t for t, d in got if t > t0 and d["label"] == NAME), None)
            enrol.append({"post_s": t_post - t0, "first_scored_s": None if first_scored is None else first_scored - t0,
                          "first_label_s": None if first_label is None else first_label - t0})
            print(json.dumps(enrol[-1]), flush=True)
            post(url + "api/classes/remove", {"name": NAME})
        report["enrol"] = enrol
        page = open_page(url)
        report["soak"] = {"page": "chromium" if page else "http client", "seconds": a.soak, "rss_mb": []}
        stop = threading.Event()
        if page is None:
            threading.Thread(target=read_mjpeg, args=(url, a.soak), daemon=True).start()
            threading.Thread(target=decisions, args=(url, stop, []), daemon=True).start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < a.soak:
            report["soak"]["rss_mb"].append((round(time.monotonic() - t0, 1), round(rss_mb(proc.pid), 1)))
            time.sleep(min(30.0, max(1.0, a.soak / 60)))
        report["soak"]["rss_mb"].append((round(time.monotonic() - t0, 1), round(rss_mb(proc.pid), 1)))
        st = get(url + "api/state")["source_state"]
        report["soak"].update(frames_read=st["frames_read"], frames_shown=st["frames_shown"])
        stop.set()
        if page is not None:
            page.quit()
        r = report["soak"]["rss_mb"]
        print(json.dumps({"soak_s": a.soak, "rss_start_mb": r[0][1], "rss_end_mb": r[-1][1],
                          "rss_max_mb": max(x for _, x in r)}), flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        errf.close()
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
