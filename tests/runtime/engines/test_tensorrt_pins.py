"""The `[tensorrt]` extras pin one CUDA major per platform (pyproject.toml): cuda-python 13 needs an R580+ driver,
which JetPack 6 (CUDA 12.6, r36 driver) does not have."""
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[3]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
PLATFORMS = {"desktop": {"sys_platform": "linux", "platform_machine": "x86_64"},
             "jetson": {"sys_platform": "linux", "platform_machine": "aarch64"},
             "mac": {"sys_platform": "darwin", "platform_machine": "arm64"}}


def resolved(extra, platform):
    """name -> SpecifierSet of the requirements of ``extra`` that apply on ``platform``."""
    env = PLATFORMS[platform]
    out = {}
    for line in EXTRAS[extra]:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out[req.name] = out.get(req.name, SpecifierSet()) & req.specifier
    return out


def admits(spec: SpecifierSet, version: str) -> bool:
    return spec.contains(version, prereleases=True)


def test_cuda12_extra_on_desktop():
    reqs = resolved("tensorrt", "desktop")
    assert set(reqs) == {"tensorrt-cu12", "cuda-python", "onnx"}
    assert admits(reqs["tensorrt-cu12"], "10.3.0") and not admits(reqs["tensorrt-cu12"], "8.6.1")
    assert admits(reqs["cuda-python"], "12.9.4") and not admits(reqs["cuda-python"], "13.0.0")


def test_cuda12_extra_on_jetpack6():
    """JetPack 6.1/6.2: TensorRT 10.3 comes with JetPack; cuda-python stays on its CUDA 12.6."""
    reqs = resolved("tensorrt", "jetson")
    assert set(reqs) == {"cuda-python", "onnx"}
    assert admits(reqs["cuda-python"], "12.6.2.post1")
    assert not admits(reqs["cuda-python"], "12.9.0") and not admits(reqs["cuda-python"], "13.0.1")


def test_cuda13_extra():
    reqs = resolved("tensorrt-cu13", "desktop")
    assert set(reqs) == {"tensorrt-cu13", "cuda-python", "onnx"}
    assert admits(reqs["cuda-python"], "13.0.1") and not admits(reqs["cuda-python"], "12.9.4")


def test_nothing_gpu_on_a_mac():
    assert set(resolved("tensorrt", "mac")) == {"onnx"}


def test_guide_documents_jetpack_61_and_both_extras():
    guide = (ROOT / "docs" / "tensorrt.md").read_text()
    assert "JetPack 6.1" in guide and "clip-fsar[tensorrt]" in guide and "clip-fsar[tensorrt-cu13]" in guide
