"""Issue 23 on the training side: the loader's preprocessing takes uint16/gray/BGRA frames as the runtime does;
MMAction2 lines whose class folder has a space; extension twins warned about and one picked; export --classes takes
a clip-line split file (SSv2's test0/88644)."""
import logging
import shutil

import cv2
import numpy as np
import pytest

from clipfsar.runtime.base.errors import VideoError
from clipfsar.runtime.video.preprocess import PreprocessConfig, preprocess_frames, resize_and_crop


def test_training_preprocessing_takes_the_runtime_arrays():
    prep = PreprocessConfig.for_size(32)
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    ref = preprocess_frames([bgr], prep)
    assert np.array_equal(preprocess_frames([bgr.astype(np.uint16) * 257], prep), ref)
    assert np.array_equal(preprocess_frames([np.dstack([bgr, bgr[..., :1]])], prep), ref)
    gray = bgr[..., 0]
    assert np.array_equal(resize_and_crop(gray, prep), resize_and_crop(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), prep))
    with pytest.raises(VideoError, match="frame 1 has dtype float64 and shape"):
        preprocess_frames([bgr, bgr / 255.0], prep)


def _dataset(tmp_path, synth_data, folders):
    root = tmp_path / "data"
    clips = sorted(synth_data.rglob("*.mp4"))
    for k, name in enumerate(folders):
        (root / name).mkdir(parents=True)
        for j in range(2):
            shutil.copyfile(clips[2 * k + j], root / name / f"clip{j}.mp4")
    (root / "splits").mkdir()
    return root


def test_mmaction2_line_with_a_space_in_the_class_folder(tmp_path, synth_data):
    from clipfsar.train.data import load_split
    root = _dataset(tmp_path, synth_data, ["blasting sand", "abseiling"])
    (root / "splits" / "train.txt").write_text("blasting sand/clip0.mp4 0\nblasting sand/clip1.mp4 0\n"
                                               "abseiling/clip0.mp4 1\nabseiling/clip1 48 1\n")
    cs = load_split(root, "train", scan=False)  # before: "names no class folder of the dataset"
    assert cs.counts() == [2, 2] and sorted(cs.classes) == ["abseiling", "blasting sand"]


def test_extension_twins_are_one_clip(tmp_path, synth_data, caplog):
    from clipfsar.train.data import load_split
    root = _dataset(tmp_path, synth_data, ["test0", "test1"])
    shutil.copyfile(root / "test0" / "clip0.mp4", root / "test0" / "clip0.webm")  # the original beside its copy
    (root / "splits" / "test.txt").write_text("test0\ntest1\n")
    with caplog.at_level(logging.WARNING):
        cs = load_split(root, "test", scan=False)
    names = sorted(p.name for p, _ in cs.clips["test0"])
    assert names == ["clip0.mp4", "clip1.mp4"]  # one video is never two clips (support and query of one episode)
    assert "clip0.webm" in caplog.text and "another extension" in caplog.text
    (root / "splits" / "test.txt").write_text("test0/clip0\ntest0/clip1\ntest1/clip0\ntest1/clip1\n")
    cs = load_split(root, "test", scan=False)
    assert [p.name for p, _ in cs.clips["test0"]] == ["clip0.mp4", "clip1.mp4"]


def test_export_classes_from_a_clip_line_split(tmp_path, synth_data):
    from clipfsar.export.support import read_support
    root = _dataset(tmp_path, synth_data, ["test0", "test1", "test2"])
    lst = tmp_path / "test.txt"
    lst.write_text("test0/clip0\ntest0/clip1\ntest2/clip1\ntest2/clip0\n")  # SSv2 test list: clips, not classes
    support = read_support(root, 1, classes_file=lst)  # before: "class 'test0/clip0' has no folder"
    assert list(support) == ["test0", "test2"]
    lst.write_text("test0\ntest0\n")
    from clipfsar.runtime.base.errors import DatasetError
    with pytest.raises(DatasetError, match="names class 'test0' twice"):
        read_support(root, 1, classes_file=lst)
