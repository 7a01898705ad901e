"""Real-world data inputs, table-driven: container metadata that lies, corrupt frames, frame folders named by
ffmpeg, split lists in the wild, numbered class folders, and the bad inputs of a dataset scan. Every input is built
here, small and synthetic (tests/train/media.py)."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional

import pytest
from data_media import brightness, write_frame_folder, write_piped_webm, write_video, zero_mjpg_frames

from clipfsar.runtime.base.errors import DatasetError
from clipfsar.runtime.video.clips import read_clip, read_frames, sample_indices, sane_fps, sane_frame_count
from clipfsar.train.class_names import load_class_map, looks_like_id
from clipfsar.train.data import load_split


def _dataset(root: Path, classes: Dict[str, int], split: str, ext: str = ".avi") -> Path:
    """``classes``: folder -> number of 8-frame clips (c0, c1, ...); ``split``: the text of splits/test.txt."""
    for folder, n in classes.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_video(root / folder / f"c{i}{ext}", 8)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "test.txt").write_bytes(split.encode("utf-8"))
    return root


# ----- the data scan (train, eval and export share it) -------------------------------------------------------
class Case(NamedTuple):
    build: Callable[[Path], None]  # adds to a root holding kick_ball/ (3 clips) and run_fast/ (3 clips)
    split: str  # splits/test.txt
    min_clips: int = 1
    error: Optional[str] = None  # regex of the DatasetError, or None: it loads
    check: Optional[Callable[[object, str], None]] = None  # (ClipSet, log text) -> asserts
    class_map: Optional[Dict[str, str]] = None


def _nothing(root: Path) -> None:
    pass


def _corrupt(root: Path) -> None:
    zero_mjpg_frames(write_video(root / "kick_ball" / "broken.avi", 48), [20, 21, 22])


def _check_corrupt(s, text):
    clip = dict(s.clips["kick ball"])[s.root / "kick_ball" / "broken.avi"]
    assert clip == 45  # the 45 intact frames, not the 20 before the damage
    assert s.damaged == [(s.root / "kick_ball" / "broken.avi", "decoded 45 of 48 frames (3 unreadable frames skipped)")]
    assert "broken.avi" in text and "45 of 48" in text


def _piped(root: Path) -> None:
    write_piped_webm(root / "kick_ball" / "piped.webm", 24)


def _check_piped(s, text):
    assert dict(s.clips["kick ball"])[s.root / "kick_ball" / "piped.webm"] == 24 and not s.damaged


def _ffmpeg_frames(root: Path) -> None:
    write_frame_folder(root / "kick_ball" / "frames", 24)  # 1.jpg ... 24.jpg


def _check_order(s, text):
    path = s.root / "kick_ball" / "frames"
    got = [brightness(f) for f in read_frames(path, list(range(24)))]
    assert got == list(range(24))  # 1, 2, ..., 10, not 1, 10, 11, ...


def _bad_image(root: Path) -> None:
    write_frame_folder(root / "kick_ball" / "frames", 24)
    (root / "kick_ball" / "frames" / "7.jpg").write_bytes(b"not a jpeg")


def _check_bad_image(s, text):
    path = s.root / "kick_ball" / "frames"
    assert dict(s.clips["kick ball"])[path] == 23
    assert s.damaged == [(path, "decoded 23 of 24 images (1 unreadable images skipped)")]
    assert [brightness(f) for f in read_frames(path, [5, 6])] == [5, 7]  # 7.jpg (frame 6) is passed over


def _empty_class(root: Path) -> None:
    (root / "empty_class").mkdir()


def _non_video(root: Path) -> None:
    (root / "kick_ball" / "notes.txt").write_text("labels by hand")
    (root / "kick_ball" / "fake.mp4").write_bytes(os.urandom(2048))


def _check_non_video(s, text):
    assert s.ignored == [s.root / "kick_ball" / "notes.txt"] and "notes.txt" in text
    assert [p.name for p, _ in s.unreadable] == ["fake.mp4"] and "fake.mp4" in text
    assert len(s.clips["kick ball"]) == 3


def _zero_byte(root: Path) -> None:
    (root / "kick_ball" / "zero.mp4").write_bytes(b"")


def _check_zero_byte(s, text):
    assert [(p.name, why) for p, why in s.unreadable] == [("zero.mp4", f"video {s.root}/kick_ball/zero.mp4 is empty "
                                                                      f"(0 bytes)")]


def _unreadable(root: Path) -> None:
    (root / "kick_ball" / "gone.mp4").symlink_to(root / "nowhere.mp4")  # a dangling link
    locked = write_video(root / "kick_ball" / "locked.avi", 8)
    locked.chmod(0)


def _check_unreadable(s, text):
    names = sorted(p.name for p, _ in s.unreadable)
    # root reads any file: the chmod'ed one is then readable, the dangling link never is
    assert names == (["gone.mp4"] if os.geteuid() == 0 else ["gone.mp4", "locked.avi"])
    assert "gone.mp4" in text


def _symlink_loop(root: Path) -> None:
    (root / "kick_ball" / "loop.mp4").symlink_to(root / "kick_ball" / "loop.mp4")
    (root / "kick_ball" / "up").symlink_to(root / "kick_ball", target_is_directory=True)


def _check_loop(s, text):
    assert len(s.clips["kick ball"]) == 3
    assert s.unreadable == [(s.root / "kick_ball" / "loop.mp4", f"video {s.root}/kick_ball/loop.mp4 is a symbolic "
                                                                f"link that leads nowhere (dangling, or a loop)")]
    assert [p.name for p in s.ignored] == ["up"] and "loop.mp4" in text and "kick_ball/up" in text


def _mixed(root: Path) -> None:
    write_video(root / "mixed" / "a.mp4", 8)
    write_video(root / "mixed" / "b.avi", 10)
    write_piped_webm(root / "mixed" / "c.webm", 12)
    write_frame_folder(root / "mixed" / "d", 6)


def _check_mixed(s, text):
    assert sorted((p.name, n) for p, n in s.clips["mixed"]) == [("a.mp4", 8), ("b.avi", 10), ("c.webm", 12),
                                                                 ("d", 6)]


def _numbered(root: Path) -> None:
    for folder in ("test18", "87"):
        for i in range(2):
            write_video(root / folder / f"{195025 + i}.webm", 8)


def _check_names(expected):
    def check(s, text):
        assert s.classes == expected
    return check


def _check_id_warning(s, text):
    assert s.classes == ["87", "test18"]
    assert "look like ids" in text and "--class-names" in text


CASES: Dict[str, Case] = {
    "corrupt frames mid-file: kept, intact frames after the damage used, counted": Case(
        _corrupt, "kick_ball\n", check=_check_corrupt),
    "webm from a streaming muxer (no duration): length from decoding": Case(_piped, "kick_ball\n", check=_check_piped),
    "frames named by ffmpeg %d.jpg: natural order": Case(_ffmpeg_frames, "kick_ball\n", check=_check_order),
    "frame folder with one unreadable image: skipped, counted": Case(_bad_image, "kick_ball\n",
                                                                     check=_check_bad_image),
    "split with a UTF-8 BOM": Case(_nothing, "\ufeffkick_ball\r\nrun_fast\r\n", check=_check_names(
        ["kick ball", "run fast"])),
    "official CLIP-FSAR list (train3//videos/class/clip.avi)": Case(
        _nothing, "train3//videos/kick_ball/c0.avi\ntrain3//videos/run_fast/c1.avi\n",
        check=_check_names(["kick ball", "run fast"])),
    "MMAction2 'path label' and 'path frames label' lines": Case(
        _nothing, "kick_ball/c0.avi 0\nrun_fast/c1 8 1\n", check=_check_names(["kick ball", "run fast"])),
    "Windows backslashes": Case(_nothing, "C:\\data\\hmdb\\kick_ball\\c0.avi\nrun_fast\\c2\n",
                                check=_check_names(["kick ball", "run fast"])),
    "absolute paths": Case(_nothing, "/data/hmdb51/kick_ball/c0.avi\n/mnt/x/run_fast/c2.avi\n",
                           check=_check_names(["kick ball", "run fast"])),
    "a line that fits no format: its number and the formats": Case(
        _nothing, "kick_ball\nno such thing here\n", error=r"test.txt, line 2: 'no such thing here' names no class "
                                                          r"folder.*Accepted lines: a class"),
    "a clip line whose clip is missing: its number": Case(
        _nothing, "# comment\nkick_ball/c9.avi\n", error=r"line 2: names clip 'kick_ball/c9.avi', which is not"),
    "a class listed twice": Case(_nothing, "kick_ball\nkick_ball\n", error="line 2: class 'kick_ball' is listed "
                                                                           "twice \\(first on line 1\\)"),
    "numbered class folders without a map: id warning": Case(_numbered, "test18/195025\n87/195026\n87/195025\n",
                                                             check=_check_id_warning),
    "numbered class folders with a JSON map": Case(
        _numbered, "test18/195025\n87/195026\n", class_map={"test18": "pretending to open something",
                                                            "87": "pushing something left"},
        check=_check_names(["pretending to open something", "pushing something left"])),
    "numbered folders, map lacking one": Case(_numbered, "test18/195025\n87/195026\n", class_map={"87": "x y"},
                                              error="no entry for 1 class folders: test18"),
    "empty class folder": Case(_empty_class, "empty_class\nkick_ball\n",
                               error="fewer than 1 readable clips.*'empty class' has 0"),
    "a class with fewer clips than an episode needs": Case(
        _nothing, "kick_ball\nrun_fast/c0\n", min_clips=2, error="'run fast' has 1"),
    "a non-video file and a fake video among clips": Case(_non_video, "kick_ball\n", check=_check_non_video),
    "a zero-byte video": Case(_zero_byte, "kick_ball\n", check=_check_zero_byte),
    "an unreadable file and a dangling link": Case(_unreadable, "kick_ball\n", check=_check_unreadable),
    "symlink loops in the dataset": Case(_symlink_loop, "kick_ball\n", check=_check_loop),
    "mixed video formats and a frame folder in one class": Case(_mixed, "mixed\n", check=_check_mixed),
}


@pytest.mark.parametrize("name", list(CASES))
def test_data_scan(name, tmp_path, caplog):
    case = CASES[name]
    root = _dataset(tmp_path / "data", {"kick_ball": 3, "run_fast": 3}, case.split)
    case.build(root)
    caplog.set_level(logging.WARNING)
    if case.error:
        with pytest.raises(DatasetError, match=case.error):
            load_split(root, "test", min_clips=case.min_clips, class_map=case.class_map)
        return
    s = load_split(root, "test", min_clips=case.min_clips, class_map=case.class_map)
    case.check(s, caplog.text)


# ----- container hints ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [(12.0, 12.0), (29.97, 29.97), (0, None), (-1, None), (1000, None),
                                            (90000.0, None), (float("nan"), None), (float("inf"), None),
                                            (None, None), ("x", None)])
def test_container_fps_is_a_hint(value, expected):
    assert sane_fps(value) == expected


@pytest.mark.parametrize("value,expected", [(48.0, 48), (-1.1068046444225731e17, None), (0, None), (-1, None),
                                            (1e12, None), (float("nan"), None)])
def test_container_frame_count_is_a_hint(value, expected):
    assert sane_frame_count(value) == expected


def test_short_clips_repeat_frames_in_training_sampling(tmp_path):
    path = write_video(tmp_path / "short.avi", 3)
    frames = read_clip(path, 8)
    assert [brightness(f) for f in frames] == [0, 0, 0, 1, 1, 2, 2, 2] == sample_indices(3, 8)


# ----- class-name maps ---------------------------------------------------------------------------------------
MAPS = {
    "map.json": ('{"test18": "pretending to open something", "87": "pushing something left"}',
                 {"test18": "pretending to open something", "87": "pushing something left"}),
    "labels.json": ('\ufeff{"Pushing something from left to right": "87", "Holding something": "0"}',
                    {"87": "Pushing something from left to right", "0": "Holding something"}),
    "list.json": ('["holding something", "pushing something"]', {"0": "holding something", "1": "pushing something"}),
    "map.csv": ("id,name\ntest18,pretending to open something\n87,\"pushing something, left\"\n",
                {"test18": "pretending to open something", "87": "pushing something, left"}),
    "map.tsv": ("test18\tpretending\n87\tpushing\n", {"test18": "pretending", "87": "pushing"}),
    "label_map.txt": ("holding something\npushing something\n", {"0": "holding something", "1": "pushing something"}),
}


@pytest.mark.parametrize("name", list(MAPS))
def test_class_map_formats(name, tmp_path):
    text, expected = MAPS[name]
    (tmp_path / name).write_text(text, encoding="utf-8")
    assert load_class_map(tmp_path / name) == expected


@pytest.mark.parametrize("text,error", [
    ('{"a": "x", "b": "x"}', "'a' and 'b' are both named 'x'"),
    ('{"a": ""}', "'a' has an empty name"),
    ('{"a": ', "not valid JSON"),
    ("a,b,c\n", "line 1: expected 'folder,name'"),
    ("a,x\na,y\n", "line 2: 'a' is mapped twice"),
])
def test_bad_class_maps(text, error, tmp_path):
    path = tmp_path / ("m.json" if text.startswith("{") else "m.csv")
    path.write_text(text)
    with pytest.raises(DatasetError, match=error):
        load_class_map(path)


def test_ssv2_labels_map_numbered_folders(tmp_path):
    root = _dataset(tmp_path / "data", {}, "87/195025\n0/195026\n")
    for folder, clip in (("87", "195025"), ("000", "x"), ("0", "195026")):
        write_video(root / folder / f"{clip}.webm", 8)
    shutil.rmtree(root / "000")
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something from left to right": "87",
                                                      "Holding something": "0"}))
    s = load_split(root, "test", class_map=load_class_map(tmp_path / "labels.json"))
    assert s.classes == ["Holding something", "Pushing something from left to right"]
    assert s.folders == {"Pushing something from left to right": "87", "Holding something": "0"}


@pytest.mark.parametrize("name,id_like", [("87", True), ("train12", True), ("test18", True), ("class_3", True),
                                          ("kick ball", False), ("brush hair", False), ("3d printing", False)])
def test_id_like_names(name, id_like):
    assert looks_like_id(name) is id_like


@pytest.mark.parametrize("split,code,needle", [
    ("kick_ball\nno such thing here\n", 2, "error: split list {root}/splits/test.txt, line 2: 'no such thing here'"),
])
def test_eval_cli_exits_2_naming_the_input(tiny_checkpoint, tmp_path, split, code, needle):
    import subprocess
    import sys
    root = _dataset(tmp_path / "data", {"kick_ball": 2, "run_fast": 2}, split)
    r = subprocess.run([sys.executable, "-m", "clipfsar", "eval", "--checkpoint", str(tiny_checkpoint), "--data",
                        str(root), "--episodes", "2"], capture_output=True, text=True)
    assert r.returncode == code and needle.format(root=root) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
