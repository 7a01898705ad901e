"""kill -9 during checkpoint writes (50 times: the previous checkpoint always loads whole) and a training run killed
with SIGKILL then resumed: bitwise the same weights as an uninterrupted run with the same seed."""
import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clipfsar.train import create_model_and_transforms, save_checkpoint
from clipfsar.train.checkpoint import load_checkpoint, read_checkpoint_config
from clipfsar.train.loop import Trainer, resumed_config

CLI = [sys.executable, "-m", "clipfsar"]


def _fill(model, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def _save_forever(path: str, model, prep, start: int) -> None:
    torch.set_num_threads(1)
    version = start
    while True:
        version += 1
        _fill(model, float(version))  # every weight of version v equals v: a mixed file would show
        save_checkpoint(path, model, prep, train_config={"version": version})


def _read(path):
    """What a reader gets: the checked config and the weights file (load_checkpoint reads exactly these)."""
    meta = read_checkpoint_config(path)
    weights = load_file(str(path / "model.safetensors"))
    return meta["train"]["version"], {float(t.flatten()[0]) for t in weights.values() if t.is_floating_point()}


def test_kill_9_during_50_checkpoint_writes_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last"
    model, prep = create_model_and_transforms("tiny", frames=4)
    _fill(model, 0.0)
    save_checkpoint(path, model, prep, train_config={"version": 0})
    t0 = time.perf_counter()
    save_checkpoint(path, model, prep, train_config={"version": 0})
    write_s = time.perf_counter() - t0
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(0)
    last, changed = 0, 0
    for k in range(50):
        proc = ctx.Process(target=_save_forever, args=(str(path), model, prep, last))
        proc.start()
        time.sleep(float(rng.uniform(0.02, 0.15 + 4 * write_s)))  # start-up, then anywhere in the first writes
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        version, values = _read(path)  # never missing, never half-written
        assert values == {float(version)}, f"kill {k}: weights of versions {values} in checkpoint {version}"
        assert version >= last
        changed += version != last
        last = version
    assert changed >= 10  # kills landed at many points of many writes
    load_checkpoint(path)  # the real reader too
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last"]
    assert len(leftovers) <= 2  # at most a temporary (and a moved-aside old folder) from the last kill


@pytest.mark.slow  # ~40 s here: a CLI run killed mid-way, its resume, and a whole run to compare with
def test_sigkill_and_resume_is_bitwise_identical_to_an_uninterrupted_run(synth_data, tmp_path):
    run = tmp_path / "killed"
    p = subprocess.Popen(CLI + ["train", "--data", str(synth_data), "--out", str(run), "--steps", "10", "--way", "3",
                                "--query", "1", "--episodes-per-step", "1", "--frames", "4", "--val-every", "100",
                                "--val-episodes", "5", "--save-every", "1", "--workers", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "last" / "trainer_state.json"
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and step < 3:
        try:
            step = json.loads(state.read_text())["step"]
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    step = json.loads(state.read_text())["step"]
    assert 3 <= step < 10, "the kill must land mid-run"
    cfg = resumed_config(run)
    Trainer(cfg, resume=True).run()
    Trainer(dataclasses.replace(cfg, out=str(tmp_path / "full"))).run()
    a = load_file(str(run / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(state.read_text())["step"] == 10


def test_a_kill_between_the_two_renames_of_a_folder_write_is_recovered(tmp_path, tiny_checkpoint):
    """The one moment a folder write has no folder at its name: the old one is moved aside, the new one not yet in
    place. Readers and the next writer put the old one back."""
    import shutil
    path = tmp_path / "last"
    shutil.copytree(tiny_checkpoint, path)
    os.replace(path, tmp_path / ".last.old")  # what a kill at that moment leaves
    (tmp_path / ".last.half").mkdir()
    model, _, _ = load_checkpoint(path)
    assert path.is_dir() and not (tmp_path / ".last.old").exists()
