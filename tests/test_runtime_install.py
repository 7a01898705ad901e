"""The runtime-only install: the base distribution (no `[train]` extra) goes into a fresh virtual environment
without torch, `pip check` is clean, `clipfsar run` classifies a video with a bundle, and `clipfsar train` says
how to install the training side. Needs the package index (pip's cache makes a reinstall take ~50 s here), so
it is marked slow."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "build", "dist", "demo_out", "bench_out", "__pycache__", ".pytest_cache", ".hypothesis"}


@pytest.mark.slow
def test_base_distribution_runs_without_torch(tmp_path, tiny_bundle, stream_file):
    src = tmp_path / "src"  # build from a copy: the checkout gets no build/ folder
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".egg-info")])
    venv = tmp_path / "venv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, clipfsar = venv / "bin" / "python", venv / "bin" / "clipfsar"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, env=env,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    install_s = time.perf_counter() - t0
    print(f"runtime-only install: {install_s:.1f} s")
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True, env=env).returncode != 0
    assert subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, env=env).returncode == 0
    r = subprocess.run([str(clipfsar), "run", str(tiny_bundle), "--source", str(stream_file), "--backend", "cpu",
                        "--window", "1", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    decisions = [json.loads(line) for line in r.stdout.splitlines()]
    assert decisions and all(d["label"] for d in decisions)
    r = subprocess.run([str(clipfsar), "train", "--data", str(tmp_path), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "needs the training extra" in r.stderr and "pip install 'clip-fsar[train]'" in r.stderr


@pytest.mark.parametrize("command", [["train", "--data", "d", "--out", "o"],
                                     ["eval", "--checkpoint", "c", "--data", "d"],
                                     ["export", "--checkpoint", "c", "--support", "s", "--out", "o"], ["demo"]])
def test_training_commands_without_the_extra_say_how_to_install_it(command, tmp_path):
    """torch made unimportable in-process (as on a runtime-only install): a message, exit 2, no traceback."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None; "
            f"sys.argv = ['clipfsar'] + {command!r}; from clipfsar.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: `clipfsar {command[0]}` needs the training extra" in r.stderr
    assert "pip install 'clip-fsar[train]'" in r.stderr
