"""The bad-input table: every case runs the real CLI (or the library API) on a damaged or wrong input and records
the exit status, the error line, whether a traceback showed, whether the message names the input, and whether
anything already stored (bundle, checkpoint, run folder) changed. Cases of helper #11's file/data inputs are in
tests/train/test_data_inputs.py and tests/runtime/test_file_inputs.py (listed in the README next to this table).

    python benchmarks/bad_inputs.py WORKDIR > table.md     # builds a tiny bundle, checkpoint and data in WORKDIR
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


def main() -> None:
    w = Work(Path(sys.argv[1]))
    rows = [run_case(c, w) for c in cases(w)] + [run_api_case(c) for c in api_cases(w)]
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


if __name__ == "__main__":
    main()
