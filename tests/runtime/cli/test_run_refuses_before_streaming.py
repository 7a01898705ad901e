"""`clipfsar run` inputs refused before streaming: --save never overwrites the source, --show on a headless
machine and an impossible camera index are clear errors (exit 2, no traceback) before any streaming."""
import os
import shutil
import subprocess
import sys

import pytest

from clipfsar.runtime.base.errors import ClipFsarError

CLI = [sys.executable, "-m", "clipfsar"]


def _run(args, env=None):
    return subprocess.run(CLI + ["run"] + args, capture_output=True, text=True, timeout=120, env=env)


def test_save_onto_the_source_is_refused(tiny_bundle, stream_file, tmp_path):
    src = tmp_path / "in.mp4"
    shutil.copyfile(stream_file, src)
    before = src.read_bytes()
    link = tmp_path / "link.mp4"
    link.symlink_to(src)
    for source, save in ((src, src), (src, link), (src.as_uri(), src)):
        r = _run([str(tiny_bundle), "--source", str(source), "--save", str(save)])
        assert r.returncode == 2 and "is the --source being read" in r.stderr and "Traceback" not in r.stderr
    assert src.read_bytes() == before


def test_show_without_a_display_is_a_clear_error(tiny_bundle, stream_file):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = _run([str(tiny_bundle), "--source", str(stream_file), "--show"], env=env)
    assert r.returncode == 2 and "--show needs a display" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_check_can_show_trusts_a_display(monkeypatch):
    from clipfsar.runtime.classify.annotate import check_can_show
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(ClipFsarError, match="DISPLAY is not set"):
            check_can_show()
    monkeypatch.setenv("DISPLAY", ":0")
    check_can_show()  # a display named: no error (opening it is OpenCV's job)


def test_impossible_camera_index_is_a_clear_error(tiny_bundle):
    from clipfsar.runtime.video.sources import SourceError, open_source
    for spec in ("99999999999", 2 ** 31, -1):
        with pytest.raises(SourceError, match=f"camera index {spec} is out of range"):
            open_source(spec)
    r = _run([str(tiny_bundle), "--source", "99999999999"])
    assert r.returncode == 2 and "camera index 99999999999 is out of range" in r.stderr, r.stderr
    assert "overload" not in r.stderr.lower() and "Traceback" not in r.stderr


def test_save_into_a_missing_folder_or_with_a_bad_extension_is_refused(tiny_bundle, stream_file, tmp_path):
    for save, words in ((tmp_path / "nope" / "out.mp4", "does not exist"), (tmp_path / "out.txt", ".txt")):
        r = _run([str(tiny_bundle), "--source", str(stream_file), "--save", str(save)])
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "wrote" not in r.stdout + r.stderr and not save.exists()
    assert not (tmp_path / "nope").exists()
