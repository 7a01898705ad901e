import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.train.config import TrainConfig
from clipfsar.train.loop import Trainer, resumed_config

CLI = [sys.executable, "-m", "clipfsar"]


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), arch="tiny", steps=4, way=3, shot=1, query=2, episodes_per_step=2,
                lr=1e-3, val_every=2, val_episodes=20, workers=2, model={"frames": 4})
    base.update(kw)
    return TrainConfig(**base)


def test_few_steps_write_run_folder(synth_data, tmp_path):
    run = Trainer(_cfg(synth_data, tmp_path / "run")).run()
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "last", "best", "log.csv", "tb"} <= names
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,lr,loss") and len(rows) == 5
    assert json.loads((run / "config.json").read_text())["steps"] == 4
    assert any((run / "tb").iterdir())
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 4


def test_resume_continues_the_folder_given_from_any_directory(synth_data, tmp_path):
    """`--resume --out X` continues X even after the run folder moved, and from another working directory; a
    legacy config whose relative data path does not resolve asks for --data instead of training elsewhere."""
    import shutil
    Trainer(_cfg(synth_data, tmp_path / "a", val_every=4), stop_after=2).run()
    shutil.move(str(tmp_path / "a"), str(tmp_path / "moved"))
    (tmp_path / "elsewhere").mkdir()
    r = subprocess.run(CLI + ["train", "--out", str(tmp_path / "moved"), "--resume"], cwd=tmp_path / "elsewhere",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "moved" / "last" / "trainer_state.json").read_text())["step"] == 4
    assert not (tmp_path / "a").exists()  # nothing written where the run used to be
    cfg = json.loads((tmp_path / "moved" / "config.json").read_text())
    assert cfg["out"] == str(tmp_path / "moved")  # rewritten with the paths it continued with
    cfg["data"] = "relative/data"  # as runs saved before paths were stored absolute, or data that moved
    (tmp_path / "moved" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ClipFsarError, match="pass --data"):
        resumed_config(tmp_path / "moved")
    assert resumed_config(tmp_path / "moved", synth_data).data == str(synth_data)


def test_resume_after_interruption_matches_uninterrupted(synth_data, tmp_path):
    Trainer(_cfg(synth_data, tmp_path / "full", val_every=4)).run()
    Trainer(_cfg(synth_data, tmp_path / "cut", val_every=4), stop_after=2).run()
    assert json.loads((tmp_path / "cut" / "last" / "trainer_state.json").read_text())["step"] == 2
    Trainer(_cfg(synth_data, tmp_path / "cut", val_every=4), resume=True).run()
    a = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


def test_existing_run_folder_refused(synth_data, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    with pytest.raises(ClipFsarError, match="already exists; pass --resume"):
        Trainer(_cfg(synth_data, tmp_path / "run")).run()
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"
    with pytest.raises(ClipFsarError, match="cannot resume"):
        Trainer(_cfg(synth_data, tmp_path / "run"), resume=True).run()


def test_frozen_backbone_trains_heads_only(synth_data, tmp_path):
    cfg = _cfg(synth_data, tmp_path / "run", freeze_backbone=True, cache_samplings=2, steps=3, val_every=3)
    Trainer(cfg).run()
    cache = load_file(str(tmp_path / "run" / "features_train.safetensors"))
    assert len(cache) == 2 * 27 * 6 and next(iter(cache.values())).shape == (4, 64)
    import torch
    torch.manual_seed(0)
    trained = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    start = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    # the visual tower is untouched between checkpoints; the heads changed
    assert all(torch.equal(trained[k], start[k]) for k in trained if k.startswith("clip."))


def test_cli_train_then_eval_reproducible_json(synth_data, tmp_path):
    run = tmp_path / "run"
    r = subprocess.run(CLI + ["train", "--data", str(synth_data), "--out", str(run), "--steps", "2", "--way", "3",
                              "--query", "1", "--episodes-per-step", "1", "--frames", "4", "--val-every", "2",
                              "--val-episodes", "10"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    args = CLI + ["eval", "--checkpoint", str(run), "--data", str(synth_data), "--way", "3", "--episodes", "50",
                  "--seed", "5", "--json"]
    outs = [subprocess.run(args, capture_output=True, text=True) for _ in range(2)]
    assert outs[0].returncode == 0, outs[0].stderr
    reports = [json.loads(o.stdout) for o in outs]
    assert reports[0] == reports[1]
    assert set(reports[0]["branches"]) == {"fewshot", "videotext", "fusion"}
    assert 0 <= reports[0]["accuracy"] <= 100 and reports[0]["ci95"] > 0
    table = subprocess.run(args[:-1], capture_output=True, text=True).stdout
    assert "fewshot" in table and "fusion" in table
    rows = table.splitlines()[1:]  # header and one row per branch: columns aligned (the fusion label is long)
    assert len(rows) == 4 and len({len(r) for r in rows}) == 1, table
    r = subprocess.run(CLI + ["train", "--data", str(synth_data), "--out", str(run), "--steps", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "already exists" in r.stderr


def test_cli_bad_inputs(synth_data, tmp_path):
    r = subprocess.run(CLI + ["train", "--data", str(synth_data), "--out", str(tmp_path / "r"), "--arch", "ViT-Q"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown architecture 'ViT-Q'" in r.stderr
    r = subprocess.run(CLI + ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r2")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "dataset folder not found" in r.stderr
    r = subprocess.run(CLI + ["train", "--data", str(synth_data), "--out", str(tmp_path / "r3"), "--shot", "9"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "fewer than 14 readable clips" in r.stderr


def test_ddp_two_gloo_processes(synth_data, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "clipfsar", "train", "--data", str(synth_data), "--out", str(run), "--steps", "2", "--way", "3",
           "--query", "1", "--episodes-per-step", "2", "--frames", "4", "--val-every", "2", "--val-episodes", "10"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "last" / "trainer_state.json").read_text())["step"] == 2
    assert len((run / "log.csv").read_text().splitlines()) == 3  # rank 0 alone writes


def test_killed_run_resumes_and_nothing_is_corrupt(synth_data, tmp_path):
    import signal
    import time

    from clipfsar.train.checkpoint import load_checkpoint
    run = tmp_path / "run"
    p = subprocess.Popen(CLI + ["train", "--data", str(synth_data), "--out", str(run), "--steps", "80", "--way", "3",
                                "--query", "1", "--episodes-per-step", "1", "--frames", "4", "--val-every", "100",
                                "--val-episodes", "5", "--save-every", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "last" / "trainer_state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not state.exists():
        time.sleep(0.1)
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert state.exists()
    step = json.loads(state.read_text())["step"]
    assert 0 < step < 80
    load_checkpoint(run / "last")  # whatever moment the kill hit, the last checkpoint is whole
    Trainer(resumed_config(run), resume=True).run()
    assert json.loads(state.read_text())["step"] == 80
