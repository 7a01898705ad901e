"""Shared fixtures: a small synthetic dataset and a tiny checkpoint, built once per session."""
import os
import sys
from pathlib import Path

import pytest

# tests never reach for the network: any hub download fails at once
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLI = [sys.executable, "-m", "clipfsar"]


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    from clipfsar.train.synth import make_dataset
    root = tmp_path_factory.mktemp("synth") / "data"
    make_dataset(root, seed=0, clips_per_class=6, size=64, length=16)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    import torch

    from clipfsar.train import create_model_and_transforms, save_checkpoint
    torch.manual_seed(0)
    model, prep = create_model_and_transforms("tiny", frames=8)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model, prep)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_checkpoint, synth_data) -> Path:
    from clipfsar.export.bundle_export import export_bundle
    out = tmp_path_factory.mktemp("bundle") / "b"
    export_bundle(tiny_checkpoint, synth_data, out, shots=2, classes_file=synth_data / "splits" / "test.txt",
                  parity_episodes=20)
    return out


@pytest.fixture(scope="session")
def stream_file(tmp_path_factory) -> Path:
    """A 3 s video at 12 fps (36 frames): a circle moving left, then a star rotating, then a square growing."""
    import numpy as np

    from clipfsar.train.synth import render_clip, write_video
    rng = np.random.default_rng(7)
    frames = []
    for shape, motion in (("circle", "moving left"), ("star", "rotating clockwise"), ("square", "growing")):
        frames += render_clip(shape, motion, rng, 64, 12)
    path = tmp_path_factory.mktemp("stream") / "stream.mp4"
    write_video(path, frames, fps=12)
    return path


@pytest.fixture
def bundle(tmp_path, tiny_bundle) -> Path:
    """A fresh copy of ``tiny_bundle`` a test may change (enrol, calibrate, tamper)."""
    import shutil
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle, out)
    return out
