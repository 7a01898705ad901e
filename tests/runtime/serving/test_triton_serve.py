"""`clipfsar serve` (a real Triton server from PyTriton) and the Triton client backend, on 127.0.0.1.

Skipped with the reason where PyTriton cannot run here (not installed, or numpy 2 without a stub environment:
see runtime/serving/server.py). One server is started per module (about 10-15 s on 2 busy cores).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clipfsar.runtime import Classifier
from clipfsar.runtime.base.errors import ClipFsarError

CLI = [sys.executable, "-m", "clipfsar"]


def _why_no_server():
    try:
        import pytriton  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as e:
        return f"nvidia-pytriton / tritonclient not installed ({e}): pip install 'clip-fsar[serve]'"
    from clipfsar.runtime.serving.env import ServeError, stub_python_env
    try:
        stub_python_env(None)
    except ServeError as e:
        return str(e)
    return None


WHY = _why_no_server()
needs_server = pytest.mark.skipif(WHY is not None, reason=f"PyTriton cannot run here: {WHY}")


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class ServerProcess:
    """`clipfsar serve` in a subprocess; ``start()`` returns once it prints its ready line."""

    def __init__(self, bundle, ports, tmp, *extra):
        """``bundle``: the folder served; ``ports``: http, grpc, metrics."""
        self.bundle, self.ports, self.tmp, self.extra = bundle, ports, Path(tmp), extra
        self.proc = None

    @property
    def grpc(self):
        return f"grpc://127.0.0.1:{self.ports[1]}"

    @property
    def http(self):
        return f"http://127.0.0.1:{self.ports[0]}"

    def start(self, timeout=120):
        self.log = self.tmp / f"serve-{time.time():.0f}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                CLI + ["serve", str(self.bundle), "--host", "127.0.0.1", "--http-port", str(self.ports[0]),
                       "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2]), *self.extra],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < timeout:
            text = self.log.read_text(errors="replace")
            if "ready:" in text:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"clipfsar serve exited {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"clipfsar serve not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    if WHY is not None:
        pytest.skip(f"PyTriton cannot run here: {WHY}")
    served = tmp_path_factory.mktemp("served") / "bundle"  # a copy: the enrolment test changes its store
    shutil.copytree(tiny_bundle, served)
    srv = ServerProcess(served, free_ports(3), tmp_path_factory.mktemp("serve"), "--queue-delay-us", "20000",
                        "--threads", "1")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local_decisions(tiny_bundle, stream_file):
    return list(Classifier.load(tiny_bundle, backend="cpu").stream(str(stream_file)))


def _same(a, b):
    assert len(a) == len(b) > 0
    diff = max(float(np.abs(np.subtract(x.scores, y.scores)).max()) for x, y in zip(a, b))
    assert diff <= 1e-5, diff
    assert [x.label for x in a] == [y.label for y in b]
    assert [(x.frame, x.t_start) for x in a] == [(y.frame, y.t_start) for y in b]


@needs_server
@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_decisions_equal_local(server, tiny_bundle, stream_file, local_decisions, scheme):
    clf = Classifier.load(tiny_bundle, backend=server.grpc if scheme == "grpc" else server.http)
    assert clf.providers["image_encoder"].startswith(f"triton {scheme}://")
    _same(local_decisions, list(clf.stream(str(stream_file))))


@needs_server
def test_eight_streams_all_served_and_batched(server, tiny_bundle, stream_file, local_decisions):
    from clipfsar.runtime.engines.triton_client import TritonConnection
    conn = TritonConnection(server.grpc)

    def batches():
        stats = conn.statistics("image_encoder")["model_stats"][0].get("batch_stats", [])
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats}

    before = batches()
    results, errors = [None] * 8, []
    barrier = threading.Barrier(8)

    def one(i):
        try:
            clf = Classifier.load(tiny_bundle, backend=server.grpc)
            barrier.wait(60)
            results[i] = list(clf.stream(str(stream_file)))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for r in results:
        _same(local_decisions, r)
    after = batches()
    grown = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
    assert any(b > 1 for b in grown), f"the encoder never ran a batch > 1: {grown}"
    conn.close()


@needs_server
def test_bundle_with_other_classes_is_refused(server, tiny_bundle, tmp_path):
    from clipfsar.runtime.engines.triton_client import ServerMismatchError
    from clipfsar.runtime.teaching.classes import remove_class
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    remove_class(other, Classifier.load(other, backend="cpu").class_names[0])
    clf = Classifier.load(other, backend=server.grpc)
    frames = [np.full((64, 64, 3), i * 20, np.uint8) for i in range(8)]
    with pytest.raises(ServerMismatchError, match="other classes"):
        clf.classify_clip(frames)


@needs_server
def test_other_graph_is_refused(server, tiny_bundle, tmp_path):
    import json

    from clipfsar.runtime.bundle.reader import sha256_of
    from clipfsar.runtime.engines.triton_client import ServerMismatchError
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    graph = other / "image_encoder.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")  # a different file (still a valid bundle once re-hashed)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["graphs"]["image_encoder"]["sha256"] = sha256_of(graph)
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ServerMismatchError, match="different 'image_encoder'"):
        Classifier.load(other, backend=server.grpc)


@needs_server
def test_wrong_shape_and_dtype_pass_tritons_error(server):
    from clipfsar.runtime.engines.triton_client import ServerRequestError, TritonConnection
    conn = TritonConnection(server.grpc)
    with pytest.raises(ServerRequestError, match=r"image_encoder\(images \(2, 3, 32, 32\) float32\)"):
        conn.infer("image_encoder", {"images": np.zeros((2, 3, 32, 32), np.float32)}, ["features"])
    with pytest.raises(ServerRequestError, match="query_head"):
        conn.infer("query_head", {"query": np.zeros((1, 8, 64), np.int32)}, ["probs"])
    with pytest.raises(ServerRequestError, match="dtype float64"):
        conn.infer("query_head", {"query": np.zeros((1, 8, 64))}, ["probs"])
    conn.close()


@needs_server
def test_run_cli_with_server_prints_local_decisions(server, tiny_bundle, stream_file):
    import json
    args = [str(tiny_bundle), "--source", str(stream_file), "--json"]
    local = subprocess.run(CLI + ["run", *args, "--backend", "cpu"], capture_output=True, text=True, timeout=120)
    remote = subprocess.run(CLI + ["run", *args, "--server", server.grpc], capture_output=True, text=True,
                            timeout=120)
    assert remote.returncode == 0, remote.stderr[-2000:]
    assert "triton grpc://" in remote.stderr
    a = [json.loads(line) for line in local.stdout.splitlines()]
    b = [json.loads(line) for line in remote.stdout.splitlines()]
    assert [d["label"] for d in a] == [d["label"] for d in b] and len(a) > 0
    assert max(abs(x["scores"][k] - y["scores"][k]) for x, y in zip(a, b) for k in x["scores"]) <= 1e-5


@needs_server
@pytest.mark.slow
def test_server_stopped_then_back(tiny_bundle, stream_file, local_decisions, tmp_path):
    from clipfsar.runtime.engines.triton_client import ServerUnavailableError
    srv = ServerProcess(tiny_bundle, free_ports(3), tmp_path).start()
    try:
        clf = Classifier.load(tiny_bundle, backend=srv.grpc + "?retries=1&timeout=5")
        _same(local_decisions, list(clf.stream(str(stream_file))))
        srv.stop()
        t0 = time.time()
        with pytest.raises(ServerUnavailableError, match="unreachable after 2 attempt"):
            list(clf.stream(str(stream_file)))
        assert time.time() - t0 < 30
        srv.start()
        _same(local_decisions, list(clf.stream(str(stream_file))))  # the same client reconnects
        assert clf.image_encoder.connection.reconnects >= 1
    finally:
        srv.stop()


@needs_server
@pytest.mark.slow
def test_server_killed_mid_stream_no_decision_invented(tiny_bundle, stream_file, tmp_path):
    from clipfsar.runtime.engines.triton_client import ServerUnavailableError
    srv = ServerProcess(tiny_bundle, free_ports(3), tmp_path).start()
    clf = Classifier.load(tiny_bundle, backend=srv.grpc + "?retries=2&timeout=5")
    got = []
    with pytest.raises(ServerUnavailableError):
        for d in clf.stream(str(stream_file), max_fps=12):
            got.append(d)
            if len(got) == 2:
                os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)
    assert len(got) == 2  # nothing after the kill
    srv.proc = None


@needs_server
def test_enroll_through_the_server(server, tiny_bundle, synth_data, tmp_path):
    """Last of the server tests: it changes the served store."""
    from clipfsar.runtime.engines.triton_client import ServerMismatchError, ServerRequestError, TritonConnection
    from clipfsar.runtime.engines.triton_protocol import store_digest
    from clipfsar.runtime.video.clips import count_frames, read_frames
    cls = (synth_data / "splits" / "train.txt").read_text().split()[0]
    clips = [read_frames(c, list(range(count_frames(c)))) for c in sorted((synth_data / cls).glob("*.mp4"))[:2]]
    local = tmp_path / "local"
    shutil.copytree(server.bundle, local)
    Classifier.load(local, backend="cpu").enroll("a new action", clips)  # the same enrolment, on this side
    conn = TritonConnection(server.grpc)
    info = conn.enroll("a new action", clips)
    assert "a new action" in info["classes"]
    local_clf = Classifier.load(local, backend="cpu")
    assert info["store_digest"] == store_digest(local_clf.bundle.store.prototypes,
                                                local_clf.bundle.store.text_features)
    remote = Classifier.load(local, backend=server.grpc)  # a client with the enrolled store: served
    a, b = local_clf.classify_clip(clips[0]), remote.classify_clip(clips[0])
    assert a.label == b.label and np.abs(np.subtract(a.scores, b.scores)).max() <= 1e-5
    with pytest.raises(ServerMismatchError, match="other classes"):  # the old store: refused
        Classifier.load(tiny_bundle, backend=server.grpc).classify_clip(clips[0])
    with pytest.raises(ServerRequestError, match="a new action"):
        conn.enroll("a new action", clips)  # taken
    with pytest.raises(ServerRequestError, match="different sizes"):
        conn.enroll("odd", [[np.zeros((8, 8, 3), np.uint8), np.zeros((9, 9, 3), np.uint8)]])
    conn.close()


# ----- bad input that needs no running server -------------------------------------------------------------------
def test_serve_refuses_a_broken_bundle(tmp_path):
    (tmp_path / "b").mkdir()
    r = subprocess.run(CLI + ["serve", str(tmp_path / "b"), "--http-port", "1"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "error: bundle" in r.stderr and "Traceback" not in r.stderr


def test_port_free_ignores_time_wait_but_not_a_listener():
    """A server stopped a moment ago leaves its accepted connections in TIME_WAIT: a restart on the same port must
    not be refused for them (tritonserver binds with SO_REUSEADDR; Linux lets such a bind pass TIME_WAIT sockets of
    a listener that had it too), while a live listener still counts as in use."""
    from clipfsar.runtime.serving.env import port_free
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver's listeners (gRPC, HTTP)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    assert not port_free("127.0.0.1", port)  # listening
    conn.close()  # the server side closes first: its end of the connection enters TIME_WAIT
    client.close()
    listener.close()
    assert port_free("127.0.0.1", port)


def test_serve_refuses_a_port_in_use(tiny_bundle):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r = subprocess.run(CLI + ["serve", str(tiny_bundle), "--host", "127.0.0.1", "--grpc-port", str(port)],
                           capture_output=True, text=True, timeout=60)
    finally:
        s.close()
    assert r.returncode == 2 and f"grpc port {port} on 127.0.0.1 is in use" in r.stderr


def test_client_without_server_fails_clearly(tiny_bundle):
    pytest.importorskip("tritonclient.grpc")
    from clipfsar.runtime.engines.triton_client import ServerUnavailableError
    port = free_ports(1)[0]
    t0 = time.time()
    with pytest.raises(ServerUnavailableError, match=f"127.0.0.1:{port} unreachable after 2 attempt"):
        Classifier.load(tiny_bundle, backend=f"grpc://127.0.0.1:{port}?retries=1")
    assert time.time() - t0 < 20


@pytest.mark.parametrize("url, match", [("grpc://nohostport", "is not grpc://HOST:PORT"),
                                        ("grpc://127.0.0.1:8001?retry=3", "unknown option"),
                                        ("grpc://127.0.0.1:8001?timeout=soon", "timeout")])
def test_bad_server_urls(tiny_bundle, url, match):
    pytest.importorskip("tritonclient.grpc")
    with pytest.raises(ClipFsarError, match=match):
        Classifier.load(tiny_bundle, backend=url)
