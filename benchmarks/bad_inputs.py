"""The bad-input table: every case runs the real CLI (or the library API) on a damaged or wrong input and records
the exit status, the error line, whether a traceback showed, whether the message names the input, and whether
anything already stored (bundle, checkpoint, run folder) changed. Cases of helper #11's file/data inputs are in
tests/train/test_data_inputs.py and tests/runtime/test_file_inputs.py (listed in the README next to this table).

    python benchmarks/bad_inputs.py WORKDIR > table.md     # builds a tiny bundle, checkpoint and data in WORKDIR
    python benchmarks/bad_inputs.py WORKDIR --issue23      # only the issue-23 table

A second table (issue 23: real-world streams and stops) runs each case's command and reports its outcome: stream
time against bursts, the window-span warning, VFR timestamps, --fps, SIGTERM/SIGHUP during --save, a full disk
(tmpfs, when root), frames changing size, black frames, a dead live playlist, frame arrays, SSv2 and MMAction2
split lines, a FIFO, /dev/null and HTTP 401 as --source.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

CLI = [sys.executable, "-m", "clipfsar"]


def digest_tree(root: Path) -> Dict[str, str]:
    """File -> sha256 of everything under ``root`` (what must survive a failed command)."""
    if not root.exists():
        return {}
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


class Work:
    """The stored things the cases run against: a tiny bundle, a checkpoint, a dataset, a video, a run folder."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.data, self.ckpt, self.bundle = root / "data", root / "ckpt", root / "bundle"
        self.video, self.run = root / "stream.mp4", root / "run"
        if not self.bundle.exists():
            subprocess.run(CLI + ["synth", str(self.data), "--clips", "6", "--size", "64", "--length", "16"],
                           check=True, capture_output=True)
            subprocess.run(CLI + ["train", "--data", str(self.data), "--out", str(self.run), "--steps", "2",
                                  "--way", "3", "--query", "1", "--frames", "4", "--val-every", "2",
                                  "--val-episodes", "5"], check=True, capture_output=True)
            shutil.copytree(self.run / "best", self.ckpt)
            subprocess.run(CLI + ["export", "--checkpoint", str(self.ckpt), "--support", str(self.data),
                                  "--classes", str(self.data / "splits" / "test.txt"),
                                  "--out", str(self.bundle), "--shots", "2"], check=True, capture_output=True)
            clip = next((self.data / "test").rglob("*.mp4"), None) or next(self.data.rglob("*.mp4"))
            shutil.copyfile(clip, self.video)

    def bundle_copy(self, name: str) -> Path:
        dst = self.root / "cases" / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.bundle, dst)
        return dst


def edit_manifest(root: Path, fn) -> None:
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def rewrite_store(root: Path, **changes) -> None:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
    m = json.loads((root / "manifest.json").read_text())
    path = root / m["prototypes"]["file"]
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    for k, fn in changes.items():
        tensors[k] = np.ascontiguousarray(fn(tensors[k]))
    save_file(tensors, str(path), metadata=meta)
    edit_manifest(root, lambda m: m["prototypes"].update(sha256=hashlib.sha256(path.read_bytes()).hexdigest()))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def silent_server() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    held: List[socket.socket] = []
    threading.Thread(target=lambda: [held.append(s.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    return s.getsockname()[1]


def http_404_server() -> int:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def cases(w: Work) -> List[dict]:
    """Each: name, a setup returning (argv, the input to be named, stored paths to check)."""
    def run_on(bundle: Path, *extra, source: Optional[str] = None):
        return CLI + ["run", str(bundle), "--source", source or str(w.video), "--backend", "cpu"] + list(extra)

    def tampered(name, fn, needle=None):
        def setup():
            b = w.bundle_copy(name)
            fn(b)
            return run_on(b), needle or str(b), [b]
        return setup

    def outside(b):
        shutil.copyfile(b / "image_encoder.onnx", b.parent / "outside.onnx")
        edit_manifest(b, lambda m: m["graphs"]["image_encoder"].update(file="../outside.onnx"))

    def symlink_out(b):
        shutil.copyfile(b / "image_encoder.onnx", b.parent / "outside.onnx")
        (b / "image_encoder.onnx").unlink()
        os.symlink(b.parent / "outside.onnx", b / "image_encoder.onnx")

    def bad_file(name, content: bytes):
        def setup():
            p = w.root / "cases" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            return run_on(w.bundle, source=str(p)), str(p), [w.bundle]
        return setup

    def empty_folder():
        p = w.root / "cases" / "empty_folder"
        p.mkdir(parents=True, exist_ok=True)
        return run_on(w.bundle, source=str(p)), str(p), [w.bundle]

    def src(source, *extra, needle=None):
        return lambda: (run_on(w.bundle, *extra, source=source), needle or source, [w.bundle])

    def corrupt_ckpt():
        c = w.root / "cases" / "ckpt_corrupt"
        shutil.rmtree(c, ignore_errors=True)
        shutil.copytree(w.ckpt, c)
        (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:1000])
        return (CLI + ["eval", "--checkpoint", str(c), "--data", str(w.data), "--episodes", "5", "--way", "3"],
                str(c), [c])

    def newer_ckpt():
        c = w.root / "cases" / "ckpt_newer"
        shutil.rmtree(c, ignore_errors=True)
        shutil.copytree(w.ckpt, c)
        cfg = json.loads((c / "config.json").read_text())
        cfg["format_version"] = 99
        (c / "config.json").write_text(json.dumps(cfg))
        out = w.root / "cases" / "never"
        return CLI + ["export", "--checkpoint", str(c), "--support", str(w.data), "--out", str(out)], str(c), [c]

    def bad_config():
        p = w.root / "cases" / "typo.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text('{"stpes": 10}')
        return (CLI + ["train", "--data", str(w.data), "--out", str(w.root / "cases" / "run_typo"),
                       "--config", str(p)], "stpes", [w.run])

    fp = free_port()
    return [
        dict(name="bundle folder missing",
             setup=lambda: (run_on(w.root / "no_such_bundle"), str(w.root / "no_such_bundle"), [])),
        dict(name="bundle without manifest", setup=tampered("no_manifest", lambda b: (b / "manifest.json").unlink())),
        dict(name="manifest not JSON", setup=tampered("not_json", lambda b: (b / "manifest.json").write_text("{"))),
        dict(name="manifest is a JSON list", setup=tampered("list", lambda b: (b / "manifest.json").write_text("[]"))),
        dict(name="manifest value of the wrong type", setup=tampered(
            "wrong_type", lambda b: edit_manifest(b, lambda m: m["model"].update(frames="8")))),
        dict(name="newer bundle schema", setup=tampered(
            "newer", lambda b: edit_manifest(b, lambda m: m.update(schema_version=99)))),
        dict(name="graph bytes changed (hash)", setup=tampered(
            "hash", lambda b: (b / "query_head.onnx").write_bytes((b / "query_head.onnx").read_bytes() + b"\0"))),
        dict(name="graph file missing", setup=tampered("missing", lambda b: (b / "support_head.onnx").unlink())),
        dict(name="manifest path ../x", setup=tampered("outside", outside)),
        dict(name="manifest absolute path", setup=tampered(
            "absolute", lambda b: edit_manifest(b, lambda m: m["graphs"]["image_encoder"].update(file="/etc/passwd")))),
        dict(name="symlink pointing out of the bundle", setup=tampered("symlink", symlink_out)),
        dict(name="prototype store with NaN", setup=tampered(
            "nan", lambda b: rewrite_store(b, prototypes=lambda a: a * float("nan")))),
        dict(name="prototype store float64", setup=tampered(
            "f64", lambda b: rewrite_store(b, prototypes=lambda a: a.astype("float64")))),
        dict(name="prototype store shape mismatch", setup=tampered(
            "shape", lambda b: rewrite_store(b, text_features=lambda a: a[:, :-1]))),
        dict(name="source file missing", setup=src(str(w.root / "no_such.mp4"))),
        dict(name="zero-byte video", setup=bad_file("zero.mp4", b"")),
        dict(name="text file named .mp4", setup=bad_file("text.mp4", b"not a video\n" * 100)),
        dict(name="empty image folder", setup=empty_folder),
        dict(name="absent camera index", setup=src("7", needle="7")),
        dict(name="stream URL refused", setup=src(f"http://127.0.0.1:{fp}/s", "--retries", "1", "--open-timeout", "1")),
        dict(name="stream URL 404",
             setup=lambda: src(f"http://127.0.0.1:{http_404_server()}/nope", "--retries", "1")()),
        dict(name="server accepts, never answers", setup=lambda: src(
            f"http://127.0.0.1:{silent_server()}/s", "--retries", "1", "--open-timeout", "1")()),
        dict(name="stream host not found", setup=src("rtsp://no-such-camera.invalid/s", "--retries", "1",
                                                     "--open-timeout", "2")),
        dict(name="credentials in a refused URL (masked)", setup=src(
            f"rtsp://admin:hunter2@127.0.0.1:{fp}/s", "--retries", "0", "--open-timeout", "1",
            needle="rtsp://admin:***@127.0.0.1")),
        dict(name="--window longer than the file", setup=src(str(w.video), "--window", "60", needle="--window")),
        dict(name="--smooth 0", setup=src(str(w.video), "--smooth", "0", needle="smooth")),
        dict(name="--threads -1", setup=src(str(w.video), "--threads", "-1", needle="--threads")),
        dict(name="--backend tensorrt without a GPU", setup=lambda: (
            CLI + ["run", str(w.bundle), "--source", str(w.video), "--backend", "tensorrt"], "tensorrt", [w.bundle])),
        dict(name="--save into a missing folder", setup=src(str(w.video), "--save", str(w.root / "nodir" / "o.mp4"),
                                                            needle=str(w.root / "nodir"))),
        dict(name="bench on a missing video", setup=lambda: (
            CLI + ["bench", str(w.bundle), "--source", str(w.root / "gone.mp4"), "--frames", "10"],
            str(w.root / "gone.mp4"), [w.bundle])),
        dict(name="train: dataset folder missing", setup=lambda: (
            CLI + ["train", "--data", str(w.root / "no_data"), "--out", str(w.root / "cases" / "r1")],
            str(w.root / "no_data"), [])),
        dict(name="train: run folder exists (no --resume)", setup=lambda: (
            CLI + ["train", "--data", str(w.data), "--out", str(w.run)], str(w.run), [w.run])),
        dict(name="train: config key typo", setup=bad_config),
        dict(name="eval: checkpoint missing", setup=lambda: (
            CLI + ["eval", "--checkpoint", str(w.root / "no_ckpt"), "--data", str(w.data)],
            str(w.root / "no_ckpt"), [])),
        dict(name="eval: truncated weights", setup=corrupt_ckpt),
        dict(name="export: newer checkpoint format", setup=newer_ckpt),
        dict(name="export: output exists (no --force)", setup=lambda: (
            CLI + ["export", "--checkpoint", str(w.ckpt), "--support", str(w.data), "--out", str(w.bundle)],
            str(w.bundle), [w.bundle, w.ckpt])),
    ]


def api_cases(w: Work) -> List[dict]:
    """Library calls with bad input: a ClipFsarError (the CLI's 'error:') or a refusal, never a raw exception."""
    from clipfsar.runtime.bundle.reader import Bundle, PrototypeStore
    from clipfsar.runtime.classify.classifier import Classifier
    from clipfsar.runtime.video.live import LiveSource
    from clipfsar.runtime.video.sources import open_source

    class Dead:
        def isOpened(self):
            return False

        def release(self):
            pass

    junk = w.root / "cases" / "junk.safetensors"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(os.urandom(200))
    return [
        dict(name="API: Bundle.open on a video file", call=lambda: Bundle.open(w.video), needle=str(w.video)),
        dict(name="API: PrototypeStore.load of random bytes", call=lambda: PrototypeStore.load(junk), needle=str(junk)),
        dict(name="API: LiveSource whose opener fails", call=lambda: LiveSource(
            "cam", opener=Dead, max_retries=1, retry_initial=0.01), needle="cam"),
        dict(name="API: open_source of an empty string", call=lambda: open_source(""), needle="source"),
        dict(name="API: stream with smooth=0", call=lambda: list(Classifier.load(w.bundle, backend="cpu").stream(
            str(w.video), smooth=0)), needle="smooth"),
    ]


def run_case(case, w: Work) -> dict:
    argv, needle, stored = case["setup"]()
    before = {str(p): digest_tree(p) for p in stored}
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    after = {str(p): digest_tree(p) for p in stored}
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return dict(name=case["name"], code=r.returncode, error=last[:160], traceback="Traceback" in r.stderr,
                names_input=needle in r.stderr, kept=before == after, seconds=time.perf_counter() - t0)


def run_api_case(case) -> dict:
    from clipfsar.runtime.base.errors import ClipFsarError
    t0 = time.perf_counter()
    try:
        case["call"]()
        error, ours = "(no error)", False
    except ClipFsarError as e:
        error, ours = f"{type(e).__name__}: {e}", True
    except Exception as e:  # noqa: BLE001 - what the table is about
        error, ours = f"RAW {type(e).__name__}: {e}", False
    return dict(name=case["name"], code="raise" if ours else "-", error=error[:160], traceback=not ours,
                names_input=case["needle"] in error, kept=True, seconds=time.perf_counter() - t0)


# ----- issue 23: real-world streams and stops ----------------------------------------------------------------------
def _pattern(i: int, size: int = 64):
    import numpy as np
    img = np.full((size, size, 3), 90, np.uint8)
    x = (i * 3) % (size - 16)
    img[20:36, x:x + 16] = 230
    return img


def _count_frames(path: Path) -> int:
    import cv2
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


class _Bursty:
    """12 fps content in bursts of 12 frames a second (a live HLS segment look-alike), stream time in POS_MSEC."""

    def __init__(self, timestamps=True):
        self.i, self.t0, self.timestamps, self.released = -1, time.monotonic(), timestamps, False

    def isOpened(self):
        return not self.released

    def get(self, prop):
        import cv2
        if prop == cv2.CAP_PROP_FPS:
            return 12.0
        return (self.i * 1000 / 12 if self.timestamps else 0.0) if prop == cv2.CAP_PROP_POS_MSEC else 0.0

    def read(self):
        self.i += 1
        if self.i % 12 == 0:
            time.sleep(max(0.0, self.t0 + (self.i + 12) / 12 - time.monotonic()))
        return True, _pattern(self.i)

    def release(self):
        self.released = True


class _Stale(_Bursty):
    """A dead live playlist: each connection replays the same 12 frames, then nothing."""

    def read(self):
        self.i += 1
        if self.i >= 12:
            time.sleep(0.05)
            return False, None
        return True, _pattern(self.i)

    def get(self, prop):
        import cv2
        return 60_000 + self.i * 1000 / 12 if prop == cv2.CAP_PROP_POS_MSEC else super().get(prop)


def _cli(argv, timeout=300):
    r = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    return r, (lines[-1] if lines else "")


def issue23_cases(w: Work) -> List[dict]:
    """Each: name, the command that reproduces it (as the docs show it), and run() -> (outcome, as expected)."""
    import cv2
    import numpy as np

    from clipfsar.train.synth import write_video
    cases_dir = w.root / "cases23"
    shutil.rmtree(cases_dir, ignore_errors=True)
    cases_dir.mkdir(parents=True)
    B = str(w.bundle)

    def bursts():
        from clipfsar.runtime.classify.classifier import Classifier
        from clipfsar.runtime.video.live import LiveSource
        clf = Classifier.load(w.bundle, backend="cpu")
        src = LiveSource("hls", opener=_Bursty, read_timeout=3)
        out, t0 = [], time.monotonic()
        for d in clf.stream(src, window=1.0):
            out.append(d)
            if time.monotonic() - t0 > 4:
                break
        src.close()
        span = max(d.t_end - d.t_start for d in out)
        return f"{len(out)} decisions in 4 s, widest window {span:.2f} s ({src.time_source})", span <= 1.2

    def arrival():
        from clipfsar.runtime.video.live import LiveSource
        src = LiveSource("cam", opener=lambda: _Bursty(timestamps=False), read_timeout=3)
        t0 = time.monotonic()
        for _ in src.frames():
            if time.monotonic() - t0 > 1.5:
                break
        src.close()
        return f"time_source: {src.time_source}", (src.time_source or "").startswith("arrival")

    def slow_model():
        import logging

        from clipfsar.runtime.classify.classifier import Classifier
        from clipfsar.runtime.video.live import LiveSource
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("clipfsar.runtime.classify.streaming").addHandler(handler)
        clf = Classifier.load(w.bundle, backend="cpu")

        class Cam(_Bursty):
            def read(self):
                time.sleep(1 / 60)
                self.i += 1
                return True, _pattern(self.i)

        src = LiveSource("slowcam", opener=lambda: Cam(timestamps=False), read_timeout=3)
        t0 = time.monotonic()
        for _ in clf.stream(src, window=0.4, on_frame=lambda f, d: time.sleep(0.25)):  # 4 frames/s < T / 0.4 s
            if time.monotonic() - t0 > 3:
                break
        src.close()
        msgs = [r.getMessage() for r in records if "windows span" in r.getMessage()]
        return (msgs[0][:150] + " ..." if msgs else "no warning"), len(msgs) == 1

    vfr = cases_dir / "vfr.mp4"

    def vfr_file():
        import imageio_ffmpeg
        d = cases_dir / "vfr_frames"
        d.mkdir(exist_ok=True)
        lines = []
        for i in range(48):
            cv2.imwrite(str(d / f"{i:03d}.png"), _pattern(i))
            lines.append(f"file '{d / f'{i:03d}.png'}'\nduration {1 / 12 if i < 24 else 1 / 3}\n")
        (d / "list.txt").write_text("".join(lines) + f"file '{d / '047.png'}'\n")
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0",
                        "-i", str(d / "list.txt"), "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        str(vfr)], check=True)
        r, _ = _cli(["run", B, "--source", str(vfr), "--backend", "cpu", "--window", "2", "--json"])
        ds = [json.loads(line) for line in r.stdout.splitlines()]
        at24 = next(d["t_end"] for d in ds if d["frame"] >= 24)
        return f"exit {r.returncode}; the decision ending at frame 24 has t_end {at24:.2f} s", abs(at24 - 2.0) < 0.05

    def fps_wins():
        path = cases_dir / "wrong_rate.avi"
        write_video(path, [_pattern(i) for i in range(36)], fps=25)
        r, _ = _cli(["run", B, "--source", str(path), "--backend", "cpu", "--fps", "12", "--window", "1", "--json"])
        last = json.loads(r.stdout.strip().splitlines()[-1])["t_end"]
        said = "wins over" in r.stderr
        return (f"exit {r.returncode}; last t_end {last:.2f} s (36 frames at 12 fps end at 2.92 s; at 25 fps "
                f"they would end at 1.40 s); says so: {said}"), 2.5 < last <= 35 / 12 + 1e-3 and said

    long_video = cases_dir / "long.mp4"
    write_video(long_video, [_pattern(i) for i in range(240)], fps=24)

    def stop_by(sig):
        def run():
            import signal
            out = cases_dir / f"stop_{sig}.avi"
            p = subprocess.Popen(CLI + ["run", B, "--source", str(long_video), "--live", "--backend", "cpu",
                                        "--window", "1", "--save", str(out)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            p.stdout.readline()
            p.send_signal(getattr(signal, sig))
            _, err = p.communicate(timeout=60)
            wrote = int(err.split("wrote ")[1].split()[0]) if "wrote " in err else -1
            held = _count_frames(out) if out.exists() else 0
            return (f"exit {p.returncode}; '{err.strip().splitlines()[-1]}'; the file decodes {held} frames to its "
                    f"last"), held == wrote > 0
        return run

    def size_change():
        folder = cases_dir / "mixed_sizes"
        folder.mkdir(exist_ok=True)
        for i in range(48):
            cv2.imwrite(str(folder / f"{i:03d}.png"), _pattern(i) if i < 24 else cv2.resize(_pattern(i), (80, 48)))
        out = cases_dir / "mixed.mp4"
        r, last = _cli(["run", B, "--source", str(folder), "--fps", "12", "--backend", "cpu", "--window", "1",
                        "--save", str(out)])
        held = _count_frames(out)
        return f"exit {r.returncode}; '{last}'; the file decodes {held}", r.returncode == 0 and held == 48

    def black_file():
        path = cases_dir / "dark_middle.avi"
        black = np.zeros((64, 64, 3), np.uint8)
        write_video(path, [_pattern(i) for i in range(12)] + [black] * 24 + [_pattern(i) for i in range(12)], fps=12)
        t0 = time.monotonic()
        r, _ = _cli(["run", B, "--source", str(path), "--live", "--backend", "cpu", "--window", "1",
                     "--read-timeout", "0.5"], timeout=60)
        reopened = "reconnecting" in r.stderr
        return (f"exit {r.returncode} after {time.monotonic() - t0:.1f} s; reopened: {reopened}",
                r.returncode == 0 and not reopened)

    def black_camera():
        from clipfsar.runtime.video.live import LiveSource

        class Black(_Bursty):
            def read(self):
                time.sleep(0.02)
                return True, np.zeros((48, 48, 3), np.uint8)

        src = LiveSource("blackcam", opener=Black, read_timeout=0.5)
        t0 = time.monotonic()
        for _ in src.frames():
            if time.monotonic() - t0 > 2:
                break
        src.close()
        return (f"in 2 s: {src.reconnects} reconnects, {src.stalls} stalls, {src.black_frames} warm-up black "
                f"frames dropped"), src.reconnects == 0 and src.stalls == 0

    def dead_playlist():
        from clipfsar.runtime.video.live import LiveSource, give_up_seconds
        t0 = time.monotonic()
        src = LiveSource("http://cdn/live.m3u8", opener=_Stale, max_failed_reads=3, open_timeout=1,
                         read_timeout=0.3, max_retries=3, retry_initial=0.02, retry_max=0.05)
        list(src.frames())
        took = time.monotonic() - t0
        return (f"gave up after {took:.1f} s (bound {give_up_seconds(1, 0.3, 3, 0.02, 0.05):.1f} s + the "
                f"replays): {src.error}"), bool(src.error) and took < 10

    def hls_dead():
        import functools
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        import imageio_ffmpeg
        d = cases_dir / "hls"
        d.mkdir(exist_ok=True)
        write_video(d / "src.mp4", [_pattern(i) for i in range(72)], fps=12)
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(d / "src.mp4"),
                        "-c:v", "libx264", "-g", "12", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                        str(d / "live.m3u8")], check=True)
        (d / "live.m3u8").write_text((d / "live.m3u8").read_text().replace("#EXT-X-ENDLIST\n", ""))
        srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(d)))
        srv.RequestHandlerClass.log_message = lambda *a: None
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        t0 = time.monotonic()
        r, last = _cli(["run", B, "--source", f"http://127.0.0.1:{srv.server_address[1]}/live.m3u8", "--backend",
                        "cpu", "--window", "1", "--read-timeout", "1", "--retries", "2", "--json"], timeout=120)
        srv.shutdown()
        spans = [json.loads(line)["t_end"] - json.loads(line)["t_start"] for line in r.stdout.splitlines()]
        return (f"exit {r.returncode} after {time.monotonic() - t0:.1f} s, {len(spans)} decisions (widest "
                f"{max(spans, default=0):.2f} s); '{last[:110]}'"), r.returncode == 2 and spans and max(spans) <= 1.2

    def arrays():
        from clipfsar.runtime.base.errors import VideoError
        from clipfsar.runtime.classify.classifier import Classifier
        from clipfsar.runtime.video.clips import read_clip
        clf = Classifier.load(w.bundle, backend="cpu")
        frames = read_clip(w.video, 8)
        ref = clf.classify_clip(frames)
        u16 = clf.classify_clip([f.astype(np.uint16) * 257 for f in frames])
        gray = clf.classify_clip([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames])
        bgra = clf.classify_clip([np.dstack([f, f[..., :1]]) for f in frames])
        try:
            clf.classify_clip([f.astype(np.float32) for f in frames])
            refused = "accepted"
        except VideoError as e:
            refused = str(e)[:70]
        same = u16.label == ref.label and bgra.label == ref.label
        return f"uint16 {u16.label!r} = uint8 {ref.label!r}; gray {gray.label!r}; float32: {refused}", same

    def clip_line_split():
        lst = cases_dir / "clip_lines.txt"
        data_lines = [f"{p.parent.name}/{p.stem}" for p in sorted(w.data.rglob("*.mp4"))[:12:3]]
        lst.write_text("\n".join(data_lines) + "\n")
        out = cases_dir / "bundle_from_clip_lines"
        r, last = _cli(["export", "--checkpoint", str(w.ckpt), "--support", str(w.data), "--classes", str(lst),
                        "--out", str(out), "--shots", "1", "--val-episodes", "0", "--force"])
        return f"exit {r.returncode}; '{last[:110]}'", r.returncode == 0

    def twins_and_spaces():
        import logging

        from clipfsar.train.data import load_split
        root = cases_dir / "data_twins"
        clips = sorted(w.data.rglob("*.mp4"))
        for k, name in enumerate(["blasting sand", "test0"]):
            (root / name).mkdir(parents=True, exist_ok=True)
            for j in range(2):
                shutil.copyfile(clips[2 * k + j], root / name / f"c{j}.mp4")
        shutil.copyfile(clips[2], root / "test0" / "c0.webm")
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / "train.txt").write_text("blasting sand/c0.mp4 0\nblasting sand/c1.mp4 0\ntest0/c0\n"
                                                   "test0/c1\n")
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("clipfsar.train.data").addHandler(handler)
        cs = load_split(root, "train", scan=False)
        warned = any("another extension" in r.getMessage() for r in records)
        return (f"classes {cs.classes}, clips {cs.counts()}; twin warned: {warned}",
                cs.counts() == [2, 2] and warned)

    def src_case(source, *extra, expect):
        def run():
            r, last = _cli(["run", B, "--source", source, "--backend", "cpu", *extra], timeout=60)
            return f"exit {r.returncode}; '{last[:140]}'", r.returncode == 2 and expect in last
        return run

    def fifo():
        path = cases_dir / "pipe.ts"
        os.mkfifo(path)
        return src_case(str(path), "--open-timeout", "0.5", "--retries", "0", expect="FIFO (named pipe)")()

    def unauthorised():
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        t0 = time.monotonic()
        outcome, ok = src_case(f"http://admin:hunter2@127.0.0.1:{srv.server_address[1]}/video.mjpg",
                               expect="unauthorised")()
        srv.shutdown()
        return f"{outcome} in {time.monotonic() - t0:.1f} s", ok and "hunter2" not in outcome

    def disk_full(what):
        def run():
            if os.geteuid() != 0:
                return "skipped: mounting a tmpfs needs root", True
            mnt = cases_dir / f"full_{what}"
            mnt.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], check=True)
            try:
                b = mnt / "b"
                shutil.copytree(w.bundle, b)
                out = mnt / "out.mp4"
                st = os.statvfs(mnt)
                with open(mnt / "filler", "wb") as f:
                    f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 6 * 1024))
                before = digest_tree(b)
                argv = {"run --save": ["run", B, "--source", str(w.video), "--backend", "cpu", "--window", "1",
                                       "--save", str(out)],
                        "enroll": ["enroll", str(b), str(sorted(w.data.rglob("*.mp4"))[0]), "--name", "new thing"],
                        "calibrate-threshold": ["calibrate-threshold", str(b), "--data", str(w.data), "--split",
                                                "val", "--episodes", "10"],
                        "export": ["export", "--checkpoint", str(w.ckpt), "--support", str(w.data), "--out",
                                   str(mnt / "nb"), "--val-episodes", "0"]}[what]
                r, last = _cli(argv)
                kept = digest_tree(b) == before and not (mnt / "nb").exists() and not out.exists()
                ok = r.returncode == 2 and "no space left on device while writing" in last and kept
                return f"exit {r.returncode}; '{last[:120]}'; stored kept: {kept}", ok
            finally:
                subprocess.run(["umount", "-l", str(mnt)])
        return run

    return [
        dict(name="live stream in bursts (HLS-like, 12 fps in 1 s bursts)", command="LiveSource(url) + "
             "Classifier.stream(window=1): a fake bursty capture through the opener hook", run=bursts),
        dict(name="live source without timestamps", command="LiveSource(camera without CAP_PROP_POS_MSEC)",
             run=arrival),
        dict(name="model slower than window / T", command="Classifier.stream(60 fps camera, window=0.4, a 0.25 s "
             "per-frame consumer)", run=slow_model),
        dict(name="variable frame rate file (24 at 1/12 s, 24 at 1/3 s)", command="clipfsar run B --source "
             "vfr.mp4 --window 2 --json", run=vfr_file),
        dict(name="--fps 12 on an AVI claiming 25 fps", command="clipfsar run B --source wrong_rate.avi --fps 12 "
             "--json", run=fps_wins),
        dict(name="SIGTERM during run --save", command="clipfsar run B --source long.mp4 --live --save o.avi; "
             "kill -TERM", run=stop_by("SIGTERM")),
        dict(name="SIGHUP during run --save", command="clipfsar run B --source long.mp4 --live --save o.avi; "
             "kill -HUP", run=stop_by("SIGHUP")),
        dict(name="disk full: run --save", command="clipfsar run B --source v.mp4 --save FULL/out.mp4",
             run=disk_full("run --save")),
        dict(name="disk full: enroll", command="clipfsar enroll FULL/b clip.mp4 --name 'new thing'",
             run=disk_full("enroll")),
        dict(name="disk full: calibrate-threshold", command="clipfsar calibrate-threshold FULL/b --data D "
             "--split val", run=disk_full("calibrate-threshold")),
        dict(name="disk full: export", command="clipfsar export --checkpoint C --support D --out FULL/nb",
             run=disk_full("export")),
        dict(name="frames change size under --save (64x64, then 80x48)", command="clipfsar run B --source "
             "mixed_sizes/ --fps 12 --save mixed.mp4", run=size_change),
        dict(name="2 s of black in a file read as live", command="clipfsar run B --source dark_middle.avi --live "
             "--read-timeout 0.5", run=black_file),
        dict(name="camera showing black", command="LiveSource(camera sending all-black frames, read_timeout=0.5)",
             run=black_camera),
        dict(name="dead live playlist (replays its last segments)", command="LiveSource(stale playlist, "
             "retries=3)", run=dead_playlist),
        dict(name="real live HLS playlist that stopped growing (127.0.0.1)", command="clipfsar run B --source "
             "http://127.0.0.1:PORT/live.m3u8 --window 1 --read-timeout 1 --retries 2", run=hls_dead),
        dict(name="frames as uint16 / gray / BGRA / float32 arrays", command="clf.classify_clip(frames)",
             run=arrays),
        dict(name="export --classes with an SSv2 clip-line split", command="clipfsar export ... --classes "
             "clip_lines.txt (lines 'class_folder/clip')", run=clip_line_split),
        dict(name="MMAction2 'blasting sand/c0.mp4 0' and a .webm/.mp4 twin", command="load_split(root, 'train')",
             run=twins_and_spaces),
        dict(name="--source /dev/null", command="clipfsar run B --source /dev/null",
             run=src_case("/dev/null", expect="character device")),
        dict(name="--source FIFO with no writer", command="mkfifo pipe.ts; clipfsar run B --source pipe.ts "
             "--open-timeout 0.5 --retries 0", run=fifo),
        dict(name="HTTP 401 (credentials in the URL)", command="clipfsar run B --source "
             "http://admin:hunter2@127.0.0.1:PORT/video.mjpg", run=unauthorised),
    ]


def main() -> None:
    w = Work(Path(sys.argv[1]))
    only23 = "--issue23" in sys.argv[2:]  # python benchmarks/bad_inputs.py WORK --issue23: the second table only
    rows = [] if only23 else [run_case(c, w) for c in cases(w)] + [run_api_case(c) for c in api_cases(w)]
    print("| # | bad input | exit | error (last line of stderr) | traceback | names the input | stored kept |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        err = r["error"].replace("|", "\\|")
        print(f"| {i} | {r['name']} | {r['code']} | `{err}` | {'YES' if r['traceback'] else 'no'} | "
              f"{'yes' if r['names_input'] else 'NO'} | {'yes' if r['kept'] else 'NO'} |")
    good = sum(1 for r in rows if r["code"] not in (0, "-") and not r["traceback"] and r["names_input"] and r["kept"])
    print(f"\n{good} of {len(rows)} cases: non-zero exit (or our exception), no traceback, input named, "
          f"nothing stored changed.")
    json.dump(rows, open(Path(sys.argv[1]) / "bad_inputs.json", "w"), indent=1)
    print("\n| # | case (issue 23) | command | outcome | as expected |")
    print("|---|---|---|---|---|")
    rows23 = []
    for i, c in enumerate(issue23_cases(w), 1):
        t0 = time.perf_counter()
        try:
            outcome, ok = c["run"]()
        except Exception as e:  # noqa: BLE001 - a case that breaks is a row, not the end of the table
            outcome, ok = f"RAW {type(e).__name__}: {e}"[:200], False
        rows23.append(dict(name=c["name"], command=c["command"], outcome=outcome, ok=ok,
                           seconds=time.perf_counter() - t0))
        cell = outcome.replace("|", "\\|").replace(str(w.root), "WORK")
        print(f"| {i} | {c['name']} | `{c['command']}` | {cell} | {'yes' if ok else 'NO'} |", flush=True)
    print(f"\n{sum(r['ok'] for r in rows23)} of {len(rows23)} issue-23 cases as expected.")
    json.dump(rows23, open(Path(sys.argv[1]) / "bad_inputs_issue23.json", "w"), indent=1)


if __name__ == "__main__":
    main()
