"""Runtime file and folder sources on real-world files: container metadata that lies, corrupt frames, clips
shorter than T, frame folders named by ffmpeg, --fps. Inputs are built here (tests/train/data_media.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "train"))
from data_media import brightness, write_frame_folder, write_piped_webm, write_video, zero_mjpg_frames  # noqa: E402

from clipfsar.runtime.video.sources import FileSource, ImageFolderSource, SourceError, open_source  # noqa: E402

CLI = [sys.executable, "-m", "clipfsar"]


def test_piped_webm_metadata_is_only_a_hint(tmp_path):
    src = FileSource(write_piped_webm(tmp_path / "piped.webm", 24))
    assert src.expected_frames is None and src.duration == float("inf")  # not -9.2e15 s
    assert src.fps == 12.0 and not src.fps_guessed
    frames = list(src.frames())
    assert len(frames) == 24 and src.error is None
    assert frames[-1].time == pytest.approx(23 / 12)


def test_corrupt_frames_are_skipped_and_counted(tmp_path, caplog):
    path = zero_mjpg_frames(write_video(tmp_path / "bad.avi", 48), [20, 21, 22])
    src = FileSource(path)
    frames = list(src.frames())
    assert len(frames) == 45 and src.skipped == 3 and src.error is None
    after = frames[20]  # the first intact frame after the damage: source frame 23, at its own time
    assert brightness(after.image) == 23 and after.time == pytest.approx(23 / 12)
    assert "3 unreadable frames skipped" in caplog.text


def test_image_folder_natural_order_and_fps(tmp_path):
    folder = write_frame_folder(tmp_path / "frames", 24)  # ffmpeg's %d.jpg
    src = open_source(folder, fps=8)
    frames = list(src.frames())
    assert [brightness(f.image) for f in frames] == list(range(24))
    assert src.fps == 8 and frames[9].time == pytest.approx(9 / 8) and src.duration == 3.0
    assert open_source(folder).fps == 30.0
    with pytest.raises(SourceError, match="--fps .* must be a positive frame rate below 1000, got 0"):
        ImageFolderSource(folder, fps=0)


def test_image_folder_skips_an_unreadable_image(tmp_path):
    folder = write_frame_folder(tmp_path / "frames", 10)
    (folder / "4.jpg").write_bytes(b"garbage")
    src = ImageFolderSource(folder, fps=10)
    frames = list(src.frames())
    assert len(frames) == 9 and src.skipped == 1 and src.error is None
    assert frames[3].time == pytest.approx(0.4)  # the slot of the skipped image is kept


def test_zero_byte_video_is_refused(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(SourceError, match="zero.mp4 is empty \\(0 bytes\\)"):
        open_source(tmp_path / "zero.mp4")


def test_short_clip_classified_with_repeated_frames(tiny_bundle, tmp_path):
    from clipfsar.runtime import Classifier
    clf = Classifier.load(tiny_bundle, backend="cpu")
    path = write_video(tmp_path / "short.avi", 5, fps=12)  # 5 frames < T = 8
    decisions = list(clf.stream(str(path), window=0.3))
    assert len(decisions) == 1 and decisions[0].repeated_frames
    frames = [f.image for f in FileSource(path).frames()]
    assert decisions[0].scores == pytest.approx(clf.classify_clip(frames).scores, abs=1e-5)  # as the clip API


@pytest.mark.parametrize("make,args,code,out", [
    ("piped", ["--window", "0.5"], 0, "frame"),  # decisions, not "longer than piped.webm (-9223372036854776 s)"
    ("short", ["--window", "0.3"], 0, "short clip: frames repeated"),
    ("folder", ["--fps", "8", "--window", "1"], 0, "frame"),
    ("folder", ["--fps", "-3"], 2, "error: --fps for"),
])
def test_run_cli_on_real_world_files(tiny_bundle, tmp_path, make, args, code, out):
    path = {"piped": lambda: write_piped_webm(tmp_path / "piped.webm", 24),
            "short": lambda: write_video(tmp_path / "short.avi", 5),
            "folder": lambda: write_frame_folder(tmp_path / "frames", 24)}[make]()
    r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(path), "--backend", "cpu", *args],
                       capture_output=True, text=True)
    assert r.returncode == code, r.stderr
    assert out in r.stdout + r.stderr
