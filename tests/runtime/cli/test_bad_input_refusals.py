"""Bad values and names: each bad input gives a clear error naming it (exit 2 from the CLI) and loses
nothing stored."""
import functools
import http.server
import threading

import pytest

from clipfsar.runtime.video.sources import FileSource, LiveSource, SourceError, open_source


def test_file_url_is_a_file(stream_file):
    src = open_source(stream_file.resolve().as_uri())
    assert isinstance(src, FileSource) and len(list(src.frames())) == 36
    with pytest.raises(SourceError, match="names host 'server'"):
        open_source("file://server/x.mp4")


def test_file_served_over_http_ends_at_its_end(stream_file):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(stream_file.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = open_source(f"http://127.0.0.1:{server.server_address[1]}/{stream_file.name}", open_timeout=5,
                          read_timeout=5, max_retries=2)
        assert isinstance(src, LiveSource) and src.ends_at_end
        frames = list(src.frames())  # paced at its frame rate: 36 frames at 12 fps, then it ends
        assert frames and src.reconnects == 0 and src.error is None
    finally:
        server.shutdown()


class _Result:
    def __init__(self, exit_code, output):
        self.exit_code, self.output = exit_code, output


def _cli(*args) -> _Result:
    """``clipfsar ARGS`` in this process, through ``main`` (which turns our errors into ``error: ...``, exit 2)."""
    import contextlib
    import io
    import sys

    from clipfsar.cli import main
    out, argv, code = io.StringIO(), sys.argv, 0
    sys.argv = ["clipfsar", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main()
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return _Result(code, out.getvalue())


@pytest.mark.parametrize("flag,value", [("--episodes", 0), ("--episodes", -3), ("--shot", -2), ("--far", 1.5)])
def test_calibrate_threshold_refuses_out_of_range_counts(tmp_path, flag, value):
    r = _cli("calibrate-threshold", tmp_path, "--data", tmp_path, flag, value)
    assert r.exit_code == 2 and flag in r.output and "Traceback" not in r.output


def test_fit_threshold_api_refuses_bad_counts(tmp_path):
    from clipfsar.runtime.base.errors import DatasetError
    from clipfsar.runtime.teaching.openset import fit_threshold
    with pytest.raises(DatasetError, match="--episodes must be a positive whole number, got 0"):
        fit_threshold(None, tmp_path, episodes=0)
    with pytest.raises(DatasetError, match="--shot must be a positive whole number, got -2"):
        fit_threshold(None, tmp_path, shot=-2)


@pytest.mark.parametrize("bad", ["wave\nhand", "wave\thand", "wave\x01", "wave\u2028hand"])
def test_class_names_with_control_characters_are_refused_everywhere(tiny_bundle, tmp_path, bad):
    import numpy as np

    from clipfsar.runtime.base.errors import BundleError, DatasetError
    from clipfsar.runtime.bundle.reader import PROTOTYPES_FILE, PrototypeStore
    from clipfsar.runtime.teaching.classes import list_classes
    from clipfsar.train.class_names import load_class_map

    before = (tiny_bundle / PROTOTYPES_FILE).read_bytes()
    old = list_classes(tiny_bundle)[0].name
    for args in (["enroll", tiny_bundle, "--name", bad], ["classes", tiny_bundle, "rename", old, bad]):
        r = _cli(*args)
        assert r.exit_code == 2 and "holds control characters" in r.output, r.output
    assert (tiny_bundle / PROTOTYPES_FILE).read_bytes() == before  # nothing stored changed
    z = np.zeros((1, 2, 4), np.float32)
    with pytest.raises(BundleError, match="holds control characters"):
        PrototypeStore((bad,), z, z[:, 0], np.ones(1, np.int32))
    cmap = tmp_path / "names.json"
    cmap.write_text('{"0": "wave\\u0001"}')  # whitespace controls (\n, \t) in a map become spaces; \x01 cannot
    with pytest.raises(DatasetError, match="'0'.*holds control characters"):
        load_class_map(cmap)


def test_export_refuses_a_support_folder_named_with_control_characters(tmp_path, stream_file):
    import shutil

    from clipfsar.export.support import read_support
    from clipfsar.runtime.base.errors import DatasetError
    (tmp_path / "wave\x01").mkdir()
    shutil.copy(stream_file, tmp_path / "wave\x01" / "a.mp4")
    with pytest.raises(DatasetError, match="holds control characters"):
        read_support(tmp_path, 1)


def test_credentials_are_masked_in_query_keys_and_mangled_urls():
    from clipfsar.runtime.base.redact import redact
    assert redact("http://cam/s?api_key=k1&auth_token=t2&X-Amz-Signature=s3&w=1") == \
        "http://cam/s?api_key=***&auth_token=***&X-Amz-Signature=***&w=1"
    assert redact("rtsp:/admin:secretpw@127.0.0.1:1/s") == "rtsp:/admin:***@127.0.0.1:1/s"  # what Path makes of it
    assert redact("source http://h/s?token=abc: connection refused") == \
        "source http://h/s?token=***: connection refused"  # the ': ' separator stays


URL = "rtsp://admin:secretpw@127.0.0.1:1/s?api_key=k1"


@pytest.mark.parametrize("args", [["enroll", "{b}", "--name", "x", URL],
                                  ["bench", "{b}", "--source", URL],
                                  ["calibrate-threshold", "{b}", "--data", URL]])
def test_commands_taking_local_paths_refuse_urls_masked(tiny_bundle, args):
    r = _cli(*(a.format(b=tiny_bundle) for a in args))
    assert r.exit_code == 2 and "not the URL rtsp://admin:***@127.0.0.1:1/s?api_key=***" in r.output, r.output
    assert "secretpw" not in r.output and "k1" not in r.output


def test_enroll_refuses_a_file_that_is_not_a_clip(tiny_bundle, synth_data, tmp_path):
    from clipfsar.runtime.bundle.reader import PROTOTYPES_FILE
    before = (tiny_bundle / PROTOTYPES_FILE).read_bytes()
    (tmp_path / "empty").mkdir()
    for clip in (synth_data / "splits" / "train.txt", tmp_path / "empty"):
        r = _cli("enroll", tiny_bundle, "--name", "newc", clip)
        assert r.exit_code == 2 and f"clip {clip} is not a video file" in r.output, r.output
    assert (tiny_bundle / PROTOTYPES_FILE).read_bytes() == before


@pytest.mark.parametrize("args", [["run", "B", "--source", "x.mp4", "--threshold", v] for v in ("1.5", "-1", "nan")]
                         + [["run", "B", "--source", "x.mp4", "--hop", v] for v in ("0", "-1")]
                         + [["run", "B", "--source", "x.mp4", "--window", v] for v in ("-1", "0", "inf")]
                         + [["enroll", "B", "--name", "x", "--timeout", "-1"]])
def test_out_of_range_values_are_refused_by_the_cli(tmp_path, args):
    r = _cli(*args)
    assert r.exit_code == 2 and f"Invalid value for '{args[-2]}'" in r.output, r.output


def test_out_of_range_values_are_refused_by_the_api(tiny_bundle, stream_file):
    from clipfsar.runtime.base.errors import ClipFsarError
    from clipfsar.runtime.classify.classifier import Classifier
    clf = Classifier.load(tiny_bundle, backend="cpu")
    for kwargs, message in (({"threshold": 1.5}, "--threshold must be a score in"),
                            ({"threshold": float("nan")}, "--threshold"),
                            ({"hop": 0}, "--hop must be a positive number"),
                            ({"window": -1}, "--window must be a positive number"),
                            ({"window": 1e-9}, "shorter than one frame of")):
        with pytest.raises(ClipFsarError, match=message):
            list(clf.stream(str(stream_file), **kwargs))


def test_classes_remove_and_rename_remind_the_threshold_and_honour_timeout(tiny_bundle, tmp_path):
    import shutil

    from clipfsar.runtime.bundle.edit import bundle_lock, update_manifest
    from clipfsar.runtime.bundle.reader import Bundle
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    cal = dict(Bundle.open(b).manifest.calibration)
    update_manifest(b, "calibration", {**cal, "threshold": {"score": "max_prob", "value": 0.3}})
    first, second = Bundle.open(b).store.class_names[:2]
    with bundle_lock(b):  # another writer holds the bundle: --timeout bounds the wait, nothing changes
        r = _cli("classes", b, "remove", first, "--timeout", "0.2")
        assert r.exit_code == 2 and "being changed by another process" in r.output and "0.2 s" in r.output
    assert first in Bundle.open(b).store.class_names
    for args in (["remove", first], ["rename", second, "waving a hand"]):
        r = _cli("classes", b, *args)
        assert r.exit_code == 0 and "run `clipfsar calibrate-threshold` again" in r.output, r.output
    r = _cli("classes", b, "rename", "x", "y", "--timeout", "-1")
    assert r.exit_code == 2 and "Invalid value for '--timeout'" in r.output
    names = Bundle.open(b).store.class_names
    for name in names[:-1]:  # down to one class: "1 class left", not "1 classes left"
        r = _cli("classes", b, "remove", name)
    assert r.exit_code == 0 and "; 1 class left" in r.output, r.output
    r = _cli("classes", b / "manifest.json", "list")  # a file, not a folder: said so
    assert r.exit_code == 2 and "manifest.json is not a folder" in r.output, r.output


def test_a_server_sending_junk_is_reported_as_such(stream_file):
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def serve():  # an HTTP 200 answer, then bytes that are no video
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                try:
                    c.recv(1024)
                    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp4\r\n\r\n" + b"junk" * 4096)
                    c.recv(1)  # hold the connection open until the client gives up
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(SourceError, match="answered HTTP 200 but sent no stream OpenCV can decode"):
            open_source(f"http://127.0.0.1:{srv.getsockname()[1]}/s", open_timeout=1, max_retries=0)
    finally:
        srv.close()
