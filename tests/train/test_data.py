import shutil

import numpy as np
import pytest

from clipfsar.runtime.base.errors import ClipFsarError, DatasetError
from clipfsar.runtime.video.clips import count_frames, read_clip, sample_indices
from clipfsar.train.data import load_split
from clipfsar.train.episodes import episodes
from clipfsar.train.synth import MOTIONS, SHAPES, make_dataset, split_classes


def test_synthetic_splits_disjoint_and_compositional(synth_data):
    names = {s: (synth_data / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    sets = {s: set(v) for s, v in names.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert len(SHAPES) >= 4 and len(MOTIONS) >= 8
    train_shapes = {n.split("_")[1] for n in sets["train"]}
    train_motions = {" ".join(n.split("_")[2:]) for n in sets["train"]}
    for split in ("val", "test"):
        assert len(sets[split]) >= 5
        for n in sets[split]:
            assert n.split("_")[1] in train_shapes and " ".join(n.split("_")[2:]) in train_motions


def test_synthetic_clips_are_real_videos(synth_data):
    clip = next((synth_data / "a_circle_moving_left").glob("*.mp4"), None) or next(synth_data.glob("*/*.mp4"))
    assert count_frames(clip) == 16
    frames = read_clip(clip, 8)
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3) and frames[0].dtype == np.uint8


def test_synth_is_seeded_and_refuses_existing_folder(tmp_path):
    assert split_classes(3) == split_classes(3)
    assert split_classes(3) != split_classes(4)
    make_dataset(tmp_path / "a", seed=1, clips_per_class=1, size=32, length=4, ext=".avi")
    with pytest.raises(ClipFsarError, match="exists and is not empty"):
        make_dataset(tmp_path / "a", seed=1, clips_per_class=1)


def test_tsn_sampling():
    assert sample_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert sample_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]  # short clips repeat frames
    rng = np.random.default_rng(0)
    idx = sample_indices(80, 8, "random", rng)
    assert all(10 * i <= x < 10 * (i + 1) for i, x in enumerate(idx))


def test_load_split_reads_names_and_clip_lists(synth_data, tmp_path):
    s = load_split(synth_data, "test", min_clips=2)
    assert all(" " in c and "_" not in c for c in s.classes)
    assert all(n == 6 for n in s.counts())
    root = tmp_path / "d"
    shutil.copytree(synth_data, root)
    first = s.classes[0].replace(" ", "_")
    (root / "splits" / "custom.txt").write_text(f"{first}/0000\n{first}/0001.mp4\n")
    c = load_split(root, "custom")
    assert c.classes == [s.classes[0]] and c.counts() == [2]


def test_unreadable_clips_reported_and_class_left_short(synth_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(synth_data, root)
    cls = (root / "splits" / "test.txt").read_text().split()[0]
    clips = sorted((root / cls).glob("*.mp4"))
    clips[0].write_bytes(b"not a video")
    (root / cls / "empty.mp4").write_bytes(b"")
    s = load_split(root, "test", min_clips=2)
    assert {p.name for p, _ in s.unreadable} == {clips[0].name, "empty.mp4"}
    assert s.counts()[s.classes.index(cls.replace("_", " "))] == 5
    with pytest.raises(DatasetError, match=r"(?s)fewer than 6 readable clips.*has 5.*unreadable clips:.*0000.mp4"):
        load_split(root, "test", min_clips=6)


def test_split_naming_missing_class(synth_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(synth_data, root)
    (root / "splits" / "test.txt").write_text("a_hexagon_moving_left\n")
    with pytest.raises(DatasetError, match="line 1: 'a_hexagon_moving_left' names no class folder"):
        load_split(root, "test")
    with pytest.raises(DatasetError, match="split list not found"):
        load_split(root, "nosplit")


def test_episodes_reproducible_and_valid():
    counts = [6, 7, 8, 9, 10, 11]
    a = episodes(7, 20, counts, way=5, shot=2, query=3)
    b = episodes(7, 20, counts, way=5, shot=2, query=3)
    c = episodes(8, 20, counts, way=5, shot=2, query=3)
    assert all(np.array_equal(x.support, y.support) and np.array_equal(x.classes, y.classes) for x, y in zip(a, b))
    assert any(not np.array_equal(x.classes, y.classes) for x, y in zip(a, c))
    # fixed values: the same seed gives the same episodes on any machine (numpy's PCG64 is portable)
    assert a[0].classes.tolist() == episodes(7, 1, counts, 5, 2, 3)[0].classes.tolist()
    for ep in a:
        assert len(set(ep.classes)) == 5
        for row, cls in enumerate(ep.classes):
            picked = list(ep.support[row]) + list(ep.query[row])
            assert len(set(picked)) == 5 and max(picked) < counts[cls]
    with pytest.raises(DatasetError, match="needs 5 classes with at least 10 clips"):
        episodes(0, 1, counts, way=5, shot=5, query=5)


def test_reads_webm_avi_and_frame_folders(tmp_path):
    import cv2

    from clipfsar.train.synth import render_clip, write_video
    frames = render_clip("star", "growing", np.random.default_rng(0), 48, 10)
    for ext in (".webm", ".avi"):
        write_video(tmp_path / f"c{ext}", frames, fps=10)
        assert count_frames(tmp_path / f"c{ext}") == 10
        assert read_clip(tmp_path / f"c{ext}", 4)[0].shape == (48, 48, 3)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), f)
    assert count_frames(folder) == 10 and len(read_clip(folder, 8)) == 8
