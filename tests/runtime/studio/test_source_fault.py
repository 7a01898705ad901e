"""A camera that stalls: the page's state says so while it is silent, and the studio reconnects as `run` does
(runtime/video/live.py) and streams again, with the gap reported."""
import sys
from pathlib import Path

from conftest import Studio, sse_events

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))
from fakes_live import MjpegServer  # noqa: E402


def test_stalled_camera_is_shown_and_recovered(studio_bundle, tmp_path):
    cam = MjpegServer(fps=20, stall_after=20)  # the first connection stops sending after 1 s, socket kept open
    s = Studio(studio_bundle, cam.url(), tmp_path, "--read-timeout", "2.5", "--open-timeout", "2")
    try:
        def state(e, d):
            return e == "state" and d["source_state"]

        got = sse_events(s.url + "api/events", lambda e, d: state(e, d) and d["source_state"]["state"] == "stalled",
                         20)
        msg = got[-1][1]["source_state"]["message"]
        assert "no frame for" in msg and "reconnecting" in msg
        got = sse_events(s.url + "api/events", lambda e, d: state(e, d) and "came back" in
                         d["source_state"]["message"], 20)
        assert got[-1][1]["source_state"]["state"] == "live" and cam.connections >= 2
        sse_events(s.url + "api/events", lambda e, d: e == "decision", 20)  # decisions again after the gap
    finally:
        s.close()
        cam.close()
