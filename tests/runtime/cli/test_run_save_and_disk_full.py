"""Issue 23, the saved video and the end of a run: SIGTERM and SIGHUP finalize `run --save` like Ctrl-C; a full
disk fails run --save, enroll, calibrate-threshold and export with one message, exit 2, nothing changed; frames
that change size are letterboxed and counted as written."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

CLI = [sys.executable, "-m", "clipfsar"]
FULL = "no space left on device while writing"


def _pattern(i: int, size: int = 64) -> np.ndarray:
    """A moving bright square on grey (never all-black)."""
    img = np.full((size, size, 3), 90, np.uint8)
    x = (i * 3) % (size - 16)
    img[20:36, x:x + 16] = 230
    return img


def _frames(path: Path):
    """Every frame of a video, decoded to its last (a playable file)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


def _digest(root: Path) -> dict:
    """File -> sha256 (the writer lock's pid file aside: it records who wrote last, not what)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    from clipfsar.train.synth import write_video
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_video(path, [_pattern(i) for i in range(240)], fps=24)  # 10 s, read as live
    return path


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_during_save_finalizes_the_video(tiny_bundle, long_video, tmp_path, sig, code):
    out = tmp_path / "saved.avi"
    p = subprocess.Popen(CLI + ["run", str(tiny_bundle), "--source", str(long_video), "--live", "--backend", "cpu",
                                "--window", "1", "--save", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("[")  # the first decision: the run is streaming and saving
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == code, err
    assert f"decisions ({sig.name})" in err
    wrote = int(err.split("wrote ")[1].split()[0])
    frames = _frames(out)
    assert wrote > 0 and len(frames) == wrote  # before: a 44-byte mp4 / 0-byte avi
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no staged temporary left


def test_frames_changing_size_are_letterboxed_and_all_written(tiny_bundle, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(48):
        img = _pattern(i) if i < 24 else cv2.resize(_pattern(i), (80, 48))  # the camera changes mode
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    out = tmp_path / "out.mp4"
    r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(folder), "--fps", "12", "--backend", "cpu",
                              "--window", "1", "--save", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "wrote 48 annotated frames" in r.stderr and "letterboxed" in r.stderr
    frames = _frames(out)
    assert len(frames) == 48 and {f.shape for f in frames} == {(64, 64, 3)}  # before: 24 held of "48"
    assert frames[-1][:8].max() < 40  # the bars above the 80x48 frame, letterboxed into 64x64


@pytest.fixture
def full_disk(tmp_path):
    """A 32 MB tmpfs (needs root) that a test fills with ``fill()`` until only a few KB are free."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")

    def fill(leave: int = 8 * 1024) -> None:
        st = os.statvfs(mnt)
        with open(mnt / "filler", "ab") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))

    try:
        yield mnt, fill
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def _bundle_on(mnt: Path, tiny_bundle: Path) -> Path:
    b = mnt / "b"
    shutil.copytree(tiny_bundle, b)
    return b


def test_enroll_on_a_full_disk(tiny_bundle, synth_data, full_disk):
    mnt, fill = full_disk
    b = _bundle_on(mnt, tiny_bundle)
    fill()
    before = _digest(b)
    clip = next(p for p in sorted((synth_data).rglob("*.mp4")))
    r = subprocess.run(CLI + ["enroll", str(b), str(clip), "--name", "a new thing"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert FULL in r.stderr and "nothing was changed" in r.stderr and str(b) in r.stderr
    assert _digest(b) == before


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Two tiny clips per class: calibrate-threshold's unknowns, quick to encode."""
    from clipfsar.train.synth import make_dataset
    root = tmp_path_factory.mktemp("small") / "data"
    make_dataset(root, seed=1, clips_per_class=2, size=32, length=8)
    return root


def test_calibrate_threshold_on_a_full_disk(tiny_bundle, small_data, full_disk):
    mnt, fill = full_disk
    b = _bundle_on(mnt, tiny_bundle)
    fill()
    before = _digest(b)
    r = subprocess.run(CLI + ["calibrate-threshold", str(b), "--data", str(small_data), "--split", "val",
                              "--episodes", "10"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert FULL in r.stderr and "nothing was changed" in r.stderr
    assert _digest(b) == before


def test_run_save_on_a_full_disk_fails_the_run(tiny_bundle, stream_file, full_disk):
    mnt, fill = full_disk
    out = mnt / "out.mp4"
    out.write_bytes(b"an earlier recording")
    fill(leave=4 * 1024)
    r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(stream_file), "--backend", "cpu", "--window",
                              "1", "--save", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr  # before: exit 0 and "wrote 144 annotated frames" beside an unplayable file
    assert f"{FULL} {out}; nothing was changed" in r.stderr and "wrote" not in r.stderr
    assert out.read_bytes() == b"an earlier recording"
    assert not [p for p in os.listdir(mnt) if p.startswith(".")]


@pytest.mark.slow  # an export takes about a minute here (ONNX export and parity); the staged folder's
# translation is checked quickly by test_disk_full_is_translated_in_one_place
def test_export_on_a_full_disk(tiny_checkpoint, synth_data, full_disk):
    mnt, fill = full_disk
    fill()
    out = mnt / "bundle"
    t0 = time.monotonic()
    r = subprocess.run(CLI + ["export", "--checkpoint", str(tiny_checkpoint), "--support", str(synth_data),
                              "--classes", str(synth_data / "splits" / "test.txt"), "--out", str(out), "--shots", "1",
                              "--val-episodes", "0"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{FULL} {out}; nothing was changed" in r.stderr
    assert not out.exists() and sorted(os.listdir(mnt)) == ["filler"]
    assert time.monotonic() - t0 < 120


def test_disk_full_is_translated_in_one_place(tmp_path):
    """The staged writers translate ENOSPC (and a library's error carrying it) for every command."""
    import errno

    from clipfsar.runtime.base.atomic import staged_file, staged_folder
    from clipfsar.runtime.base.errors import DiskFullError
    target = tmp_path / "store.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(DiskFullError, match=f"{FULL} {target}; nothing was changed"):
        with staged_file(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DiskFullError):
        with staged_folder(tmp_path / "bundle"):
            raise RuntimeError("SafetensorError: Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                               "message: \"No space left on device\" })")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["store.safetensors"]


def test_gray_and_16_bit_frames_are_saved(tmp_path):
    from clipfsar.runtime.classify.annotate import AnnotatedSink
    from clipfsar.runtime.video.frames import Frame
    sink = AnnotatedSink(tmp_path / "o.avi", False, 12)
    base = np.full((40, 40), 120, np.uint8)
    for i, img in enumerate([base, base.astype(np.uint16) * 257, np.dstack([base] * 3 + [base])]):
        sink(Frame(i, i / 12, img), None)
    sink.close()
    assert sink.frames == 3 and len(_frames(tmp_path / "o.avi")) == 3


def test_studio_clip_writer_on_a_full_disk_and_gray_frames(full_disk, tmp_path):
    """The studio's recorder writes takes with the same assumption: staged, checked, the one disk-full message."""
    from clipfsar.runtime.base.errors import DiskFullError
    from clipfsar.runtime.studio.recorder import write_clip
    gray = [np.full((48, 48), 60 + i, np.uint8) for i in range(16)]
    write_clip(tmp_path / "take.mp4", gray, 12)  # gray frames from a mono camera
    assert len(_frames(tmp_path / "take.mp4")) == 16
    mnt, fill = full_disk
    fill(leave=2 * 1024)
    with pytest.raises(DiskFullError, match=f"{FULL} {mnt / 'take.mp4'}; nothing was changed"):
        write_clip(mnt / "take.mp4", [_pattern(i) for i in range(48)], 12)
    assert sorted(os.listdir(mnt)) == ["filler"]
