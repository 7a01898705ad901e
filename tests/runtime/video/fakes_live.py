"""Fake cameras (for ``LiveSource``'s opener hook) and an HTTP MJPEG server on 127.0.0.1, for the live-fault tests."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


def test_pattern(i: int, size: int = 64) -> np.ndarray:
    """A moving bright square on grey: never all-black."""
    img = np.full((size, size, 3), 90, np.uint8)
    x = (i * 3) % (size - 16)
    img[20:36, x:x + 16] = 230
    return img


class FakeCamera:
    """A ``cv2.VideoCapture`` look-alike: ``fps`` frames/s; every ``fail_every``-th read fails; after
    ``stall_after`` frames a read blocks until ``unblock`` is set."""

    def __init__(self, fps: float = 100.0, fail_every: int = 0, stall_after: int = -1, unblock=None):
        self.fps, self.fail_every, self.stall_after = fps, fail_every, stall_after
        self.unblock = unblock or threading.Event()
        self.reads = self.frames = 0
        self.released = False

    def isOpened(self) -> bool:
        return not self.released

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        time.sleep(1.0 / self.fps)
        self.reads += 1
        if self.fail_every and self.reads % self.fail_every == 0:
            return False, None
        if self.frames == self.stall_after:
            self.unblock.wait()  # a driver stall
            return False, None
        self.frames += 1
        return True, test_pattern(self.frames)

    def release(self) -> None:
        self.released = True


class MjpegServer:
    """``multipart/x-mixed-replace`` JPEG stream on 127.0.0.1 at ``/stream.mjpg`` (404 elsewhere).

    ``stall_after``: on the first connection, stop sending after that many frames (socket kept open) until
    ``resume`` is set; ``down``: while set, new connections are closed at once.
    """

    def __init__(self, fps: float = 25.0, stall_after: int = -1, port: int = 0):
        self.fps, self.stall_after = fps, stall_after
        self.resume, self.connections = threading.Event(), 0
        self.auth_headers = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.auth_headers.append(self.headers.get("Authorization"))
                if self.path.split("?")[0] != "/stream.mjpg":
                    self.send_error(404)
                    return
                outer.connections += 1
                first = outer.connections == 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not outer.closed:
                        if first and i == outer.stall_after:
                            outer.resume.wait()
                            return
                        ok, jpg = cv2.imencode(".jpg", test_pattern(i))
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg.tobytes() + b"\r\n")
                        i += 1
                        time.sleep(1.0 / outer.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.closed = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/stream.mjpg", userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.closed = True
        self.resume.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.stop = True
        for c in self.held:
            c.close()
        self.sock.close()


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
