"""The import structure: packages and the runtime's subpackages depend one way, and no module imports itself back.

Every ``import`` and ``from ... import`` counts, also those inside functions (a lazy import is still a
dependency). The orders below are the ones DESIGN.md section 2 and ``clipfsar/runtime/__init__.py`` document.
"""
import ast
from pathlib import Path
from typing import Dict, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the source folder of each package under the clipfsar import root (pyproject.toml's package-dir)
FOLDERS = {"runtime": "runtime", "train": "train", "calib": "calib", "export": "export", "": "clipfsar"}
PACKAGE_ORDER = ["runtime", "train", "calib", "export", ""]  # "" is the app layer: clipfsar.cli, demo, eval
RUNTIME_ORDER = ["base", "video", "bundle", "engines", "teaching", "classify", "serving", "studio", "cli"]


def module_name(path: Path) -> str:
    for package, folder in FOLDERS.items():
        base = ROOT / folder
        if base in path.parents:
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            return ".".join(["clipfsar"] + ([package] if package else []) + parts)
    raise ValueError(path)


def imports_of(path: Path, name: str) -> Set[str]:
    """The clipfsar modules ``path`` imports (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("clipfsar")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base = parts[:len(parts) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("clipfsar"):
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def graph() -> Dict[str, Set[str]]:
    files = {module_name(p): p for folder in FOLDERS.values() for p in (ROOT / folder).rglob("*.py")}
    return {name: {m for m in imports_of(path, name) if m in files and m != name} for name, path in files.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FOLDERS else ""


def runtime_layer(module: str):
    """Index of a runtime module's subpackage in RUNTIME_ORDER; None for the front (``clipfsar.runtime`` itself and
    the documented ``clipfsar.runtime.classes``), which may import every layer."""
    parts = module.split(".")
    if len(parts) >= 4 and parts[2] in RUNTIME_ORDER:
        return RUNTIME_ORDER.index(parts[2])
    return None


def test_packages_depend_one_way():
    # the root package ``clipfsar`` holds only ``__version__`` (checked below), so every layer may read it
    bad = [f"{m} -> {d}" for m, deps in graph().items() for d in deps if d != "clipfsar"
           and PACKAGE_ORDER.index(package_of(d)) > PACKAGE_ORDER.index(package_of(m))]
    assert not bad, bad


def test_root_package_imports_nothing():
    assert graph()["clipfsar"] == set()


def test_runtime_subpackages_depend_one_way():
    g = graph()
    bad = []
    for m, deps in g.items():
        if package_of(m) != "runtime":
            continue
        layer = runtime_layer(m)
        for d in deps:
            if package_of(d) != "runtime":
                continue
            target = runtime_layer(d)
            outside = target is None and d != "clipfsar.runtime"
            if outside or layer is not None and target is not None and target > layer:
                bad.append(f"{m} -> {d}")
    assert not bad, bad


def test_runtime_front_is_used_only_from_outside():
    g = graph()
    inside = [f"{m} -> {d}" for m, deps in g.items() if runtime_layer(m) is not None for d in deps
              if d in ("clipfsar.runtime", "clipfsar.runtime.classes")]
    assert not inside, inside


def test_no_import_cycles():
    g = graph()
    state: Dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for d in sorted(g[node]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])
    # a package's __init__ importing its own modules lazily is not a cycle of modules
    cycles = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not cycles, cycles


@pytest.mark.parametrize("sub", RUNTIME_ORDER)
def test_runtime_subpackage_says_what_it_owns_and_may_import(sub):
    doc = ast.get_docstring(ast.parse((ROOT / "runtime" / sub / "__init__.py").read_text()))
    assert doc and "May import" in doc


def test_runtime_folder_holds_only_subpackages_and_the_front():
    flat = sorted(p.name for p in (ROOT / "runtime").glob("*.py"))
    assert flat == ["__init__.py", "classes.py"], flat
