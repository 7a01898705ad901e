"""Nothing is unpickled from a user's disk and no text is executed: a scan of every module of the package for
pickle-like modules, ``torch.load`` without ``weights_only=True``, ``np.load(..., allow_pickle=True)``, ``eval(``
and ``exec(`` (the builtins: ``model.eval()`` is a method and fine)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("clipfsar", "train", "export", "runtime", "calib")  # pyproject.toml's package-dir map
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _is_true(node):
    return isinstance(node, ast.Constant) and node.value is True


def findings(source: str, name: str):
    """(line, what) for every unsafe construct in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            out.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            f, kw = node.func, {k.arg: k.value for k in node.keywords}
            if isinstance(f, ast.Name) and f.id in ("eval", "exec", "__import__"):
                out.append((node.lineno, f"{f.id}("))
            elif isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name):
                if f.value.id == "torch" and not _is_true(kw.get("weights_only")):
                    out.append((node.lineno, "torch.load without weights_only=True"))
                if f.value.id in ("np", "numpy") and _is_true(kw.get("allow_pickle")):
                    out.append((node.lineno, "np.load(allow_pickle=True)"))
            elif isinstance(f, ast.Attribute) and f.attr in ("loads", "load") and isinstance(f.value, ast.Name) \
                    and f.value.id in UNSAFE_MODULES:
                out.append((node.lineno, f"{f.value.id}.{f.attr}("))
    return out


def test_the_scan_finds_what_it_looks_for():
    bad = ("import pickle\nfrom dill import loads\nimport torch, numpy as np\ntorch.load('x')\n"
           "torch.load('x', weights_only=False)\nnp.load('x', allow_pickle=True)\neval('1')\nexec('x=1')\n")
    ok = "import torch\ntorch.load('x', weights_only=True)\nmodel.eval()\nnp.load('x')\nevaluate(1)\n"
    assert [w for _, w in findings(bad, "bad")] == [
        "import pickle", "from dill import", "torch.load without weights_only=True",
        "torch.load without weights_only=True", "np.load(allow_pickle=True)", "eval(", "exec("]
    assert findings(ok, "ok") == []


@pytest.mark.parametrize("folder", PACKAGE_DIRS)
def test_package_never_unpickles_or_executes_text(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no modules under {folder}"
    bad = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in files for line, what in findings(p.read_text(), str(p))]
    assert not bad, "unsafe constructs:\n" + "\n".join(bad)
