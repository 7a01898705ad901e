"""The decoder thread ahead of the encoder: files in order and complete, live sources newest first, errors raised
in the consumer, and the reader decoding ahead while the consumer works."""
import threading
import time

import pytest

from clipfsar.runtime.video.frames import Frame, Gap
from clipfsar.runtime.video.prefetch import Prefetcher


def _frames(n, delay=0.0, fail_at=None):
    for i in range(n):
        if fail_at == i:
            raise OSError(f"decoder failed at frame {i}")
        if delay:
            time.sleep(delay)
        yield Frame(i, i / 10, None)


def test_file_frames_in_order_none_lost_and_queue_bounded():
    p = Prefetcher(_frames(50), live=False, depth=3)
    time.sleep(0.1)  # the reader fills the queue and waits
    assert len(p._queue) <= 3
    got = []
    for f in p:
        got.append(f.index)
        time.sleep(0.001)  # a slow consumer loses nothing
    assert got == list(range(50))
    assert p.dropped == 0
    with pytest.raises(StopIteration):
        next(p)


def test_live_frames_newest_first_when_the_consumer_lags():
    p = Prefetcher(_frames(40), live=True, depth=2)
    time.sleep(0.2)  # the consumer is away while 40 frames arrive
    got = [f.index for f in p]
    assert got[-1] == 39 and got == sorted(got)  # the newest kept, order kept
    assert len(got) <= 3 and p.dropped == 40 - len(got)


def test_live_gap_marker_is_never_dropped():
    def src():
        yield Frame(0, 0.0, None)
        yield Gap(0.0, 0.05)
        for i in range(1, 20):
            yield Frame(i, i / 10, None)
    p = Prefetcher(src(), live=True, depth=2)
    time.sleep(0.2)
    assert any(isinstance(x, Gap) for x in p)


def test_source_error_raised_in_the_consumer_after_earlier_frames():
    p = Prefetcher(_frames(10, fail_at=5), live=False, depth=2)
    got = []
    with pytest.raises(OSError, match="decoder failed at frame 5"):
        for f in p:
            got.append(f.index)
    assert got == [0, 1, 2, 3, 4]


def test_close_stops_the_reader_thread():
    p = Prefetcher(_frames(10 ** 6), live=False, depth=2)
    next(p)
    p.close()
    assert not p._thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("prefetch-") and t is p._thread]


def test_the_reader_decodes_ahead_while_the_consumer_works():
    p = Prefetcher(_frames(20), live=False, depth=4)
    first = next(p)  # the consumer holds frame 0 (encoding it) ...
    deadline = time.monotonic() + 5
    while len(p._queue) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.index == 0 and [f.index for f in list(p._queue)] == [1, 2, 3, 4]  # ... the next ones are decoded
    p.close()
