import json
import pkgutil
import subprocess
import sys

import clipfsar.runtime


def test_runtime_modules_import_no_torch():
    names = [m.name for m in pkgutil.walk_packages(clipfsar.runtime.__path__, "clipfsar.runtime.")]
    assert "clipfsar.runtime.classify.classifier" in names and "clipfsar.runtime.cli.run" in names
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "import clipfsar.cli\n"
            "bad = [m for m in ('torch', 'torchvision', 'open_clip') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_run_works_where_torch_cannot_be_imported(tmp_path, tiny_bundle, stream_file):
    for name in ("torch", "torchvision", "open_clip"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "clipfsar", "run", str(tiny_bundle), "--source", str(stream_file),
                        "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert lines and {"label", "score", "t_start", "t_end", "frame"} <= set(lines[0])
    r = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert r.returncode != 0  # the environment really has no torch
