"""Fixes from a fresh-user review: each bad input gives a clear error naming it (exit 2 from the CLI) and loses
nothing stored."""
import functools
import http.server
import threading

import pytest

from clipfsar.runtime.sources import FileSource, LiveSource, SourceError, open_source


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


def _cli(*args):
    from click.testing import CliRunner
    from clipfsar.cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("flag,value", [("--episodes", 0), ("--episodes", -3), ("--shot", -2), ("--far", 1.5)])
def test_calibrate_threshold_refuses_out_of_range_counts(tmp_path, flag, value):
    r = _cli("calibrate-threshold", tmp_path, "--data", tmp_path, flag, value)
    assert r.exit_code == 2 and flag in r.output and "Traceback" not in r.output


def test_fit_threshold_api_refuses_bad_counts(tmp_path):
    from clipfsar.runtime.errors import DatasetError
    from clipfsar.runtime.openset import fit_threshold
    with pytest.raises(DatasetError, match="--episodes must be a positive whole number, got 0"):
        fit_threshold(None, tmp_path, episodes=0)
    with pytest.raises(DatasetError, match="--shot must be a positive whole number, got -2"):
        fit_threshold(None, tmp_path, shot=-2)
