"""Live sources that misbehave: a flaky camera, a stalled driver, network streams that stall, refuse, 404 or never
answer (servers on 127.0.0.1 only), a file read as live, credentials in URLs."""
import json
import subprocess
import sys
import threading
import time

import pytest
from fakes_live import FakeCamera, MjpegServer, SilentServer, free_port

from clipfsar.runtime.video.live import LiveSource, give_up_seconds
from clipfsar.runtime.video.sources import Frame, Gap, SourceError

CLI = [sys.executable, "-m", "clipfsar"]


def take(src, n_frames, limit_s=20.0):
    """Items from ``src.frames()`` until ``n_frames`` frames (or ``limit_s``); closes the source."""
    items, t0 = [], time.monotonic()
    for item in src.frames():
        items.append(item)
        if sum(isinstance(i, Frame) for i in items) >= n_frames or time.monotonic() - t0 > limit_s:
            break
    src.close()
    return items


def test_camera_failing_one_read_in_ten_is_not_a_dropout(tiny_bundle):
    from clipfsar.runtime.classify.classifier import Classifier
    cams = []

    def opener():
        cams.append(FakeCamera(fps=100, fail_every=10))
        return cams[-1]

    src = LiveSource("flaky", opener=opener, read_timeout=1.0)
    clf = Classifier.load(tiny_bundle, backend="cpu", threads=1, spinning=False)
    decisions = []
    for d in clf.stream(src, window=0.4):
        decisions.append(d)
        if len(decisions) >= 10:
            break
    assert len(decisions) == 10 and clf.stats.gaps == 0
    assert len(cams) == 1 and src.reconnects == 0 and src.failed_reads >= 5  # failures happened, none was a dropout


def test_failures_in_a_row_are_a_dropout_and_reconnect():
    cams = []

    def opener():
        cams.append(FakeCamera(fps=200, fail_every=1 if not cams else 0))  # the first camera never delivers
        return cams[-1]

    src = LiveSource("dead-then-fine", opener=opener, max_failed_reads=5, retry_initial=0.01)
    items = take(src, 5)
    assert isinstance(items[0], Gap) and sum(isinstance(i, Frame) for i in items) == 5
    assert cams[0].reads == 5 and src.reconnects == 1


def test_watchdog_abandons_a_stuck_read_and_reconnects():
    unblock = threading.Event()
    cams = []

    def opener():
        cams.append(FakeCamera(fps=100, stall_after=5 if not cams else -1, unblock=unblock))
        return cams[-1]

    src = LiveSource("stalls", opener=opener, read_timeout=0.5, retry_initial=0.01)
    t0 = time.monotonic()
    items = take(src, 15)
    took = time.monotonic() - t0
    gaps = [i for i in items if isinstance(i, Gap)]
    assert len(gaps) == 1 and src.stalls == 1 and len(cams) == 2
    assert sum(isinstance(i, Frame) for i in items) == 15
    assert 0.5 <= gaps[0].end - gaps[0].start < 2.0 and took < 5
    assert not cams[0].released  # still stuck in read(): abandoned, not joined
    unblock.set()  # the driver wakes up: its thread releases the capture and exits
    for _ in range(50):
        if cams[0].released:
            break
        time.sleep(0.02)
    assert cams[0].released


def test_gives_up_within_the_documented_time():
    unblock = threading.Event()
    opened = []

    def opener():
        opened.append(1)
        if len(opened) == 1:
            return FakeCamera(fps=100, stall_after=3, unblock=unblock)
        return FakeCamera(fps=100, fail_every=1)  # opens, never delivers

    src = LiveSource("gone", opener=opener, read_timeout=0.3, open_timeout=0.3, max_retries=2,
                     retry_initial=0.05, max_failed_reads=3)
    t0 = time.monotonic()
    list(src.frames())
    took = time.monotonic() - t0
    unblock.set()
    assert "did not come back after 2 attempts" in src.error
    # each reopened camera runs until 3 failed reads, then is a dropout again: the bound still holds
    assert took < give_up_seconds(0.3, 0.3, 2, 0.05) + 1.0


def test_mjpeg_stream_that_stalls_is_reopened():
    srv = MjpegServer(fps=25, stall_after=10)
    try:
        src = LiveSource(srv.url(), open_timeout=2, read_timeout=0.8, max_retries=3, retry_initial=0.1)
        t0 = time.monotonic()
        items = take(src, 25)
        took = time.monotonic() - t0
    finally:
        srv.close()
    gaps = [i for i in items if isinstance(i, Gap)]
    assert len(gaps) == 1 and srv.connections == 2
    assert sum(isinstance(i, Frame) for i in items) == 25 and took < 6  # noticed after 0.8 s, not FFmpeg's 30 s


def test_server_down_and_back():
    srv = MjpegServer(fps=25)
    src = LiveSource(srv.url(), open_timeout=1, read_timeout=0.5, max_retries=8, retry_initial=0.2, retry_max=0.4)
    items, back = [], None
    try:
        for item in src.frames():
            items.append(item)
            n = sum(isinstance(i, Frame) for i in items)
            if n == 5 and back is None:
                srv.close()  # the server goes down ...
                time.sleep(1.0)
                back = MjpegServer(fps=25, port=srv.port)  # ... and comes back on the same port
            if n >= 10:
                break
    finally:
        src.close()
        srv.close()
        if back is not None:
            back.close()
    assert sum(isinstance(i, Gap) for i in items) == 1 and src.reconnects == 1 and back.connections == 1


@pytest.mark.parametrize("case, reason", [
    ("refused", "connection refused by 127.0.0.1:"),
    ("silent", "timed out after 1 s"),
    ("404", "not found (HTTP 404"),
])
def test_network_open_failures_say_what_happened(case, reason):
    srv = SilentServer() if case == "silent" else MjpegServer() if case == "404" else None
    port = free_port() if srv is None else srv.port
    url = f"http://127.0.0.1:{port}/" + ("nope" if case == "404" else "stream.mjpg")
    t0 = time.monotonic()
    try:
        with pytest.raises(SourceError, match="cannot open live source http") as err:
            LiveSource(url, open_timeout=1, read_timeout=1, max_retries=1, retry_initial=0.1)
    finally:
        if srv is not None:
            srv.close()
    assert reason in str(err.value)
    assert ("(1 attempt)" if case == "404" else "(2 attempts)") in str(err.value)  # 404 is final: not retried
    assert time.monotonic() - t0 < 2 * (1 + 1) + 0.1 + 1.0  # bounded: attempts x (open timeout + grace) + waits


def test_file_read_as_live_ends_at_its_end(tiny_bundle, stream_file):
    t0 = time.monotonic()
    r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(stream_file), "--live", "--backend", "cpu",
                              "--window", "1", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    decisions = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(decisions) >= 5 and "reconnecting" not in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30  # a 3 s file played at its frame rate, then the end


def test_credentials_never_shown(tiny_bundle):
    import signal
    srv = MjpegServer(fps=25)
    try:
        url = srv.url(userinfo="admin:hunter2@")
        p = subprocess.Popen(CLI + ["run", str(tiny_bundle), "--source", url, "--backend", "cpu", "--window", "0.4",
                                    "--json", "--read-timeout", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
        lines = [p.stdout.readline() for _ in range(3)]  # the stream never ends: stop after 3 decisions
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        srv.close()
    decisions = [json.loads(line) for line in lines + out.splitlines() if line.strip()]
    assert len(decisions) >= 3 and p.returncode == 130
    assert all(d["source"] == f"http://admin:***@127.0.0.1:{srv.port}/stream.mjpg" for d in decisions)
    assert "hunter2" not in "".join(lines) + out + err
    bad = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/s",
                                "--open-timeout", "1", "--retries", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error: cannot open live source rtsp://admin:***@127.0.0.1:" in bad.stderr
    assert "connection refused" in bad.stderr and "hunter2" not in bad.stdout + bad.stderr
