"""Issue 23, time: live frames stamped by stream time with bursts paced (arrival time only without timestamps, and
said so), the once-only warning when windows grow past --window, variable-frame-rate files timed by presentation
times, and an explicit --fps that wins."""
import logging
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from fakes_live import FakeCamera
from fakes_live import test_pattern as pattern

from clipfsar.runtime.video.live import LiveSource
from clipfsar.runtime.video.sources import FileSource, Frame


class BurstyCamera:
    """A live HLS segment look-alike: 12 fps content delivered in bursts of ``burst`` frames (as fast as they can be
    read), then nothing until the next segment is due. ``CAP_PROP_POS_MSEC`` is the frame's stream time, unless
    ``timestamps`` is False (then it is 0, as many cameras report)."""

    def __init__(self, fps: float = 12.0, burst: int = 12, timestamps: bool = True, frames: int = 10 ** 6):
        self.fps, self.burst, self.timestamps, self.total = fps, burst, timestamps, frames
        self.i = -1
        self.t0 = time.monotonic()
        self.released = False

    def isOpened(self):
        return not self.released

    def get(self, prop):
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self.i * 1000.0 / self.fps if self.timestamps else 0.0
        return 0.0

    def read(self):
        self.i += 1
        if self.i >= self.total:
            return False, None
        if self.i % self.burst == 0:  # the next segment arrives when its last frame has been recorded
            due = self.t0 + (self.i + self.burst) / self.fps
            time.sleep(max(0.0, due - time.monotonic()))
        return True, pattern(self.i)

    def release(self):
        self.released = True


def _frames_for(src, seconds):
    out, t0 = [], time.monotonic()
    for item in src.frames():
        if isinstance(item, Frame):
            out.append(item)
        if time.monotonic() - t0 > seconds:
            break
    src.close()
    return out


def test_bursts_are_paced_and_timed_by_stream_time():
    src = LiveSource("hls", opener=lambda: BurstyCamera(burst=12), read_timeout=3)
    frames = _frames_for(src, 2.6)
    assert src.time_source.startswith("stream time")
    # the consumer reads at its own pace; paced bursts reach it spread out, not as one moment per burst
    assert len(frames) >= 20
    steps = np.diff([f.time for f in frames])
    assert np.all(steps > 0) and np.median(steps) == pytest.approx(1 / 12, abs=0.02)


def test_no_timestamps_falls_back_to_arrival_time_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        src = LiveSource("cam", opener=lambda: BurstyCamera(burst=6, timestamps=False), read_timeout=3)
        _frames_for(src, 1.2)
    assert src.time_source.startswith("arrival time")
    assert "timed by their arrival" in caplog.text


def test_bursty_stream_windows_span_the_window(tiny_bundle):
    from clipfsar.runtime.classify.classifier import Classifier
    clf = Classifier.load(tiny_bundle, backend="cpu")
    src = LiveSource("hls", opener=lambda: BurstyCamera(burst=12), read_timeout=3)
    decisions, t0 = [], time.monotonic()
    for d in clf.stream(src, window=1.0):
        decisions.append(d)
        if time.monotonic() - t0 > 2.5:
            break
    src.close()
    assert len(decisions) >= 4  # one per sampling interval (before: one sample per burst, no decision in 2.5 s)
    spans = [d.t_end - d.t_start for d in decisions]
    assert max(spans) <= 1.2 * 1.0  # before: one sample per burst, a "1 s" window spanning 8 s


def test_windows_wider_than_window_warn_once(tiny_bundle, caplog):
    from clipfsar.runtime.classify.classifier import Classifier
    clf = Classifier.load(tiny_bundle, backend="cpu")
    src = LiveSource("slowcam", opener=lambda: FakeCamera(fps=60), read_timeout=3)
    n, t0 = 0, time.monotonic()
    with caplog.at_level(logging.WARNING):
        # a consumer slower than window / T (here the drawing callback: 0.1 s a frame, 10 frames/s against the 20
        # a 0.4 s window of 8 needs) widens every window
        for _ in clf.stream(src, window=0.4, on_frame=lambda f, d: time.sleep(0.1)):
            n += 1
            if time.monotonic() - t0 > 2.5:
                break
    src.close()
    warnings = [r.getMessage() for r in caplog.records if "windows span" in r.getMessage()]
    assert n >= 3 and len(warnings) == 1
    assert "not the 0.4 s of --window" in warnings[0] and "frames/s" in warnings[0]
    # here the drawing callback, not the encoder, holds the loop back, and the advice says so
    assert "the encoder keeps up" in warnings[0] and "--window of at least" in warnings[0]


@pytest.fixture(scope="module")
def vfr_file(tmp_path_factory):
    """24 frames at 1/12 s, then 24 at 1/3 s (presentation times from ffmpeg's concat durations): 10 s."""
    import imageio_ffmpeg
    d = tmp_path_factory.mktemp("vfr")
    lines = []
    for i in range(48):
        cv2.imwrite(str(d / f"{i:03d}.png"), pattern(i))
        lines.append(f"file '{d / f'{i:03d}.png'}'\nduration {1 / 12 if i < 24 else 1 / 3}\n")
    (d / "list.txt").write_text("".join(lines) + f"file '{d / '047.png'}'\n")
    out = d / "vfr.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i",
                    str(d / "list.txt"), "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)],
                   check=True)
    return out


def test_vfr_file_timed_by_presentation_times(vfr_file):
    frames = list(FileSource(vfr_file).frames())
    assert frames[24].time == pytest.approx(2.0, abs=0.02)  # was 4.66 s (index / the container's 5.15 fps)
    assert frames[-1].time == pytest.approx(10.0, abs=0.05)


def test_vfr_file_sampled_by_time_in_files_training_and_export(vfr_file):
    from clipfsar.runtime.video.clips import frame_times, read_clip, read_frames, sample_frame_indices
    times = frame_times(vfr_file)
    assert times is not None and len(times) == 49
    idx = sample_frame_indices(times, 49, 4)
    # equal steps of time over the 10.33 s (moments 1.29, 3.88, 6.46, 9.04 s), not of frame index (which crowds
    # the first 2 s: frames 6, 18, 30, 42)
    assert [round(float(times[i]), 2) for i in idx] == pytest.approx([1.25, 3.67, 6.33, 9.0], abs=0.1)
    assert [np.array_equal(a, b) for a, b in zip(read_clip(vfr_file, 4), read_frames(vfr_file, idx))] == [True] * 4


def test_explicit_fps_wins_over_a_believable_wrong_rate(tmp_path, caplog):
    from clipfsar.train.synth import write_video
    path = tmp_path / "wrong_rate.avi"
    write_video(path, [pattern(i) for i in range(36)], fps=25)  # content is 12 fps, container says 25
    with caplog.at_level(logging.INFO):
        frames = list(FileSource(path, fps=12).frames())
    assert frames[12].time == pytest.approx(1.0) and frames[-1].time == pytest.approx(35 / 12)
    assert "--fps 12 wins over the container's 25 fps" in caplog.text
    live = LiveSource(str(path), fps=12, read_timeout=2)
    got = _frames_for(live, 10)
    assert live.fps == 12 and got[-1].time == pytest.approx((got[-1].index if len(got) == 36 else 35) / 12, abs=0.2)


def test_explicit_fps_in_the_cli_output(tiny_bundle, tmp_path):
    from clipfsar.train.synth import write_video
    path = tmp_path / "wrong_rate.avi"
    write_video(path, [pattern(i) for i in range(36)], fps=25)
    r = subprocess.run([sys.executable, "-m", "clipfsar", "run", str(tiny_bundle), "--source", str(path), "--backend",
                        "cpu", "--fps", "12", "--window", "1", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import json
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["t_end"] == pytest.approx(35 / 12, abs=1e-3)  # at 25 fps it would be 1.4 s
    assert "wins over" in r.stderr


def test_threads_left_behind_are_daemons():
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith(("read-", "capture-", "open-")))
