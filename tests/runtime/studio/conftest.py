"""The studio as a user starts it: ``clipfsar studio`` in a subprocess on 127.0.0.1, against a synthetic clip file
read as live (looped), and plain HTTP helpers (stdlib only) to talk to it."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the studio extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the studio extra (starlette, uvicorn) is not installed")

# a class of the synthetic data's val split: not in the tiny bundle (exported from the test split)
HELD_OUT = ("circle", "growing")
HELD_OUT_NAME = "a circle growing"


@pytest.fixture(scope="session")
def held_out_source(tmp_path_factory) -> Path:
    """A 10 s video of the held-out action (10 fresh renderings of 'a circle growing', 64 px, 12 fps)."""
    import numpy as np

    from clipfsar.train.synth import render_clip, write_video
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(8):
        frames += render_clip(*HELD_OUT, rng, 64, 16)
    path = tmp_path_factory.mktemp("studio_source") / "held_out.mp4"
    write_video(path, frames, fps=12)
    return path


class Studio:
    """A running ``clipfsar studio``; ``url``, ``token`` and the stderr it wrote so far (``log()``)."""

    def __init__(self, bundle: Path, source: Path, tmp: Path, *extra: str, host: str = "127.0.0.1"):
        self.clips = tmp / "clips"
        self.err_path = tmp / f"studio-{time.monotonic_ns()}.err"
        cmd = [sys.executable, "-m", "clipfsar", "studio", str(bundle), "--source", str(source), "--loop",
               "--host", host, "--port", "0", "--threads", "1", "--clips", str(self.clips), *extra]
        self._err = open(self.err_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._err, env=env)
        self.url, self.token = None, None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = self.log()
            m = re.search(r"studio: (http://\S+?/)(\?token=(\S+))?\s", text)
            if m:
                self.url, self.token = m.group(1), m.group(3)
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"the studio exited ({self.proc.returncode}):\n{text}")
            time.sleep(0.2)
        else:
            self.close()
            raise AssertionError(f"the studio did not start in 90 s:\n{self.log()}")

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def close(self) -> float:
        """Ctrl-C, as a user stops it; returns the seconds it took to exit."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()
        return time.monotonic() - t0


def request(url: str, method: str = "GET", body=None, headers=None, raw: bytes = None, timeout: float = 30):
    """(status, headers, parsed JSON or bytes) of one HTTP request; never raises for an HTTP error status."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    h = dict(headers or {})
    if body is not None and "Content-Type" not in h:
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, payload = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, payload = e.code, dict(e.headers), e.read()
    if hdrs.get("content-type", hdrs.get("Content-Type", "")).startswith("application/json"):
        payload = json.loads(payload)
    return status, hdrs, payload


def sse_events(url: str, want, timeout: float = 30.0, headers=None):
    """Read the SSE feed at ``url`` until ``want(event, data)`` is true; returns the (event, data) pairs read."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    got = []
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(req, timeout=timeout) as r:
        event, data = None, []
        while time.monotonic() < deadline:
            line = r.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and event:
                item = (event, json.loads("\n".join(data)))
                got.append(item)
                if want(*item):
                    return got
                event, data = None, []
    raise AssertionError(f"no wanted event in {timeout} s; got {[e for e, _ in got]}")


def wait_for(fn, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def studio_bundle(tmp_path, tiny_bundle) -> Path:
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    return out


@pytest.fixture
def studio(studio_bundle, held_out_source, tmp_path):
    s = Studio(studio_bundle, held_out_source, tmp_path)
    yield s
    s.close()
