import cv2
import numpy as np
import pytest

from clipfsar.runtime.video.sources import (
    FileSource,
    Frame,
    Gap,
    ImageFolderSource,
    LiveSource,
    SourceError,
    open_source,
)


def test_file_source_loses_no_frame(stream_file):
    frames = list(FileSource(stream_file).frames())
    assert [f.index for f in frames] == list(range(36))
    assert frames[12].time == pytest.approx(1.0)


def test_image_folder_source(tmp_path, stream_file):
    for f in list(FileSource(stream_file).frames())[:5]:
        cv2.imwrite(str(tmp_path / f"{f.index:03d}.png"), f.image)
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageFolderSource) and len(list(src.frames())) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="has no images"):
        open_source(str(tmp_path / "empty"))


def test_absent_camera_is_a_clear_error():
    with pytest.raises(SourceError, match="cannot open live source 7"):
        open_source("7")


def test_live_source_reconnects_after_dropout_and_reports_gap(stream_file, tmp_path):
    from clipfsar.train.synth import write_video
    later = tmp_path / "later.mp4"  # what the camera shows after it comes back (new content, not a replay)
    write_video(later, [f.image[:, ::-1] for f in FileSource(stream_file).frames()], fps=12)
    opened = []

    def opener():
        opened.append(1)
        return cv2.VideoCapture(str(stream_file if len(opened) == 1 else later))

    src = LiveSource(str(stream_file), opener=opener, retry_initial=0.05)
    events = []
    for item in src.frames():  # the file ending is a drop-out; reopening (the later content) is the reconnection
        events.append(item)
        if any(isinstance(e, Gap) for e in events) and isinstance(item, Frame):
            break
    src.close()
    gap_at = next(i for i, e in enumerate(events) if isinstance(e, Gap))
    gap = events[gap_at]
    assert gap.end >= gap.start + 0.05
    frames = [e for e in events if isinstance(e, Frame)]
    assert all(f.image.mean() > 5 for f in frames)  # never a black placeholder
    assert [f.index for f in frames] == list(range(len(frames)))


def test_live_source_gives_up_after_retries(stream_file, tmp_path):
    opened = []

    def opener():
        opened.append(1)
        return cv2.VideoCapture(str(stream_file) if len(opened) == 1 else str(tmp_path / "gone.mp4"))

    src = LiveSource("cam", opener=opener, retry_initial=0.01, retry_max=0.02, max_retries=3)
    items = list(src.frames())
    assert items and all(isinstance(i, Frame) for i in items)
    assert "did not come back after 3 attempts" in src.error
    assert len(opened) == 4


def test_black_frames_from_a_live_source_are_dropped(tmp_path):
    from clipfsar.train.synth import write_video
    frames = [np.zeros((32, 32, 3), np.uint8)] * 5 + [np.full((32, 32, 3), 120, np.uint8)] * 5
    path = tmp_path / "blackish.avi"
    write_video(path, frames, fps=10)
    src = LiveSource(str(path), opener=lambda: cv2.VideoCapture(str(path)), max_retries=0)
    got = [f for f in src.frames() if isinstance(f, Frame)]
    assert got and all(f.image.mean() > 50 for f in got)
    assert src.black_frames == 5
