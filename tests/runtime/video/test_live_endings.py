"""Issue 23, the end of a live source: black frames that are not a stall, a dead live playlist that must give up,
HTTP 401 that stops at once (credentials masked), a FIFO or /dev/null named as what it is."""
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from fakes_live import test_pattern as pattern

from clipfsar.runtime.video.live import LiveSource, give_up_seconds
from clipfsar.runtime.video.sources import Frame, Gap, SourceError, open_source


def test_black_stretch_in_a_file_read_as_live_is_not_a_stall(tmp_path):
    from clipfsar.train.synth import write_video
    black = np.zeros((64, 64, 3), np.uint8)
    path = tmp_path / "dark_middle.avi"
    write_video(path, [pattern(i) for i in range(6)] + [black] * 12 + [pattern(i) for i in range(6)], fps=12)
    src = open_source(str(path), live=True, read_timeout=0.4, max_retries=3)  # 1 s of black > read_timeout
    frames = [f for f in src.frames() if isinstance(f, Frame)]
    assert src.reconnects == 0 and src.stalls == 0 and src.error is None  # before: reopened at its start, forever
    assert sum(1 for f in frames if not f.image.any()) >= 1  # a file's black frames are frames


class BlackCamera:
    """A camera showing black (lens covered, a dark room): frames keep arriving, every one all-black."""

    def __init__(self):
        self.released = False

    def isOpened(self):
        return not self.released

    def get(self, prop):
        return 50.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        time.sleep(0.02)
        return True, np.zeros((48, 48, 3), np.uint8)

    def release(self):
        self.released = True


def test_camera_showing_black_is_not_reconnected(caplog):
    with caplog.at_level(logging.INFO):
        src = LiveSource("blackcam", opener=BlackCamera, read_timeout=0.5, black_warmup=10)
        got, t0 = [], time.monotonic()
        for item in src.frames():
            got.append(item)
            if time.monotonic() - t0 > 1.5:
                break
        src.close()
    assert src.stalls == 0 and src.reconnects == 0  # before: "read stalled" and a reconnect every 0.5 s
    assert src.black_frames == 10  # only the first few after opening are dropped
    assert any(isinstance(i, Frame) for i in got)
    assert "all-black frames right after opening are skipped" in caplog.text


class StalePlaylist:
    """A dead live HLS playlist: every connection replays the same last segments (same stream times, same pixels),
    then nothing more comes."""
    N = 12

    def __init__(self, opens):
        opens.append(1)
        self.i, self.released = -1, False

    def isOpened(self):
        return not self.released

    def get(self, prop):
        if prop == cv2.CAP_PROP_FPS:
            return 12.0
        if prop == cv2.CAP_PROP_POS_MSEC:
            return 60_000 + self.i * 1000 / 12
        return 0.0

    def read(self):
        self.i += 1
        if self.i >= self.N:
            time.sleep(0.05)
            return False, None
        return True, pattern(self.i)

    def release(self):
        self.released = True


def test_dead_live_playlist_gives_up_within_the_bound():
    opens = []
    kw = dict(open_timeout=1, read_timeout=0.3, max_retries=3, retry_initial=0.02, retry_max=0.05)
    t0 = time.monotonic()
    src = LiveSource("http://cdn/live.m3u8", opener=lambda: StalePlaylist(opens), max_failed_reads=3, **kw)
    items = list(src.frames())
    took = time.monotonic() - t0
    assert src.error and "did not come back after 3 attempts" in src.error  # before: reconnected forever
    assert len(opens) == 4 and src.replayed_frames == 3 * 12
    frames = [i for i in items if isinstance(i, Frame)]
    assert len(frames) <= 12  # the replayed segments are not classified again
    assert took < give_up_seconds(1, 0.3, 3, 0.02, 0.05) + 2.5
    assert any(isinstance(i, Gap) for i in items)


class FreshAfterReconnect(StalePlaylist):
    """A stream that comes back with new content (later stream times): the source is back for good."""
    N = 4

    def get(self, prop):
        if prop == cv2.CAP_PROP_POS_MSEC:
            return len(self.opens) * 10_000 + self.i * 1000 / 12
        return super().get(prop)

    def __init__(self, opens):
        super().__init__(opens)
        self.opens = list(opens)

    def read(self):
        ok, img = super().read()
        return ok, (None if img is None else pattern(self.i + 100 * len(self.opens)))


def test_reconnection_with_new_content_resets_the_count():
    opens = []
    src = LiveSource("rtsp://cam/s", opener=lambda: FreshAfterReconnect(opens), max_failed_reads=2, open_timeout=1,
                     read_timeout=0.3, max_retries=2, retry_initial=0.02, retry_max=0.05)
    seen = 0
    for item in src.frames():
        seen += isinstance(item, Frame)
        if len(opens) >= 4:  # more reconnections than max_retries: each one brought new content
            break
    src.close()
    assert len(opens) >= 4 and src.replayed_frames == 0 and seen > 4


class _AuthServer:
    def __init__(self):
        self.requests = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.headers.get("Authorization"))
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_http_401_stops_at_once_and_masks_credentials():
    srv = _AuthServer()
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError) as e:
            open_source(f"http://admin:hunter2@127.0.0.1:{srv.port}/video.mjpg", open_timeout=2, read_timeout=2,
                        max_retries=5)
        took = time.monotonic() - t0
    finally:
        srv.close()
    msg = str(e.value)
    assert "unauthorised" in msg and "HTTP 401" in msg and "(1 attempt)" in msg  # not retried six times
    assert "hunter2" not in msg and "admin:***@127.0.0.1" in msg
    assert took < 3.0


def test_dev_null_and_fifo_are_named_as_what_they_are(tmp_path):
    with pytest.raises(SourceError, match="/dev/null is a character device, not a video file"):
        open_source("/dev/null")
    fifo = tmp_path / "pipe.ts"
    os.mkfifo(fifo)
    try:
        with pytest.raises(SourceError, match="is a FIFO \\(named pipe\\) and no process wrote a stream"):
            open_source(str(fifo), open_timeout=0.3, max_retries=0)
    finally:  # release the abandoned open (it waits for a writer)
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK) if _has_reader(fifo) else None
        if fd is not None:
            os.close(fd)


def _has_reader(fifo) -> bool:
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        return True
    except OSError:
        return False


def test_clip_that_is_a_device_is_named_in_training_and_enrolment():
    from clipfsar.runtime.base.errors import VideoError
    from clipfsar.runtime.video.clips import scan_clip
    with pytest.raises(VideoError, match="/dev/null is a character device, not a video file"):
        scan_clip("/dev/null")


@pytest.fixture(scope="module")
def hls_server(tmp_path_factory):
    """A live HLS playlist that stopped growing (no #EXT-X-ENDLIST, no playlist type), served on 127.0.0.1: FFmpeg
    fetches its last segments in one burst, then waits for segments that never come."""
    import functools
    import subprocess
    from http.server import SimpleHTTPRequestHandler

    import imageio_ffmpeg

    from clipfsar.train.synth import write_video
    d = tmp_path_factory.mktemp("hls")
    write_video(d / "src.mp4", [pattern(i) for i in range(72)], fps=12)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(d / "src.mp4"), "-c:v",
                    "libx264", "-g", "12", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
                    str(d / "live.m3u8")], check=True)
    (d / "live.m3u8").write_text((d / "live.m3u8").read_text().replace("#EXT-X-ENDLIST\n", ""))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(d))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/live.m3u8"
    srv.shutdown()
    srv.server_close()


def test_real_hls_burst_is_paced_by_stream_time_and_the_dead_playlist_gives_up(hls_server):
    t0 = time.monotonic()
    src = LiveSource(hls_server, open_timeout=3, read_timeout=0.8, max_retries=1, retry_initial=0.1)
    arrivals = [(time.monotonic() - t0, f.time) for f in src.frames() if isinstance(f, Frame)]
    took = time.monotonic() - t0
    assert src.time_source.startswith("stream time")
    times = np.array([t for _, t in arrivals])
    assert len(times) >= 12 and np.median(np.diff(times)) == pytest.approx(1 / 12, abs=0.02)
    assert arrivals[-1][0] - arrivals[0][0] > 0.8 * (times[-1] - times[0])  # the burst is delivered at its times
    assert src.replayed_frames > 0 and "did not come back after 1 attempt" in src.error  # not reconnected forever
    assert took < give_up_seconds(3, 0.8, 1, 0.1) + 3
    deadline = time.monotonic() + 3  # let the abandoned FFmpeg read return (its read timeout) before moving on
    while any(t.name.startswith("read-http") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_cli_on_the_dead_playlist_exits_2_not_aborted(hls_server, tiny_bundle):
    """The run ends with its error and exit 2: the reader still inside FFmpeg's read when the source gives up is
    waited for (before: the interpreter's exit cut it off inside OpenCV, 'FATAL: exception not rethrown', SIGABRT)."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "clipfsar", "run", str(tiny_bundle), "--source", hls_server,
                        "--backend", "cpu", "--window", "1", "--read-timeout", "0.6", "--retries", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr[-500:]
    assert "did not come back after 1 attempt" in r.stderr and "FATAL" not in r.stderr
    assert r.stdout.count("frame") >= 1  # the playlist's last segments were classified once
