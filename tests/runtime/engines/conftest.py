"""Helpers of the engine tests: a snapshot of a folder (to show a refusal left the bundle and cache unchanged) and
bundles with int8 variants made by calib's own quantizers."""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest


def tree(path: Path) -> dict:
    """relative path -> sha256 of every file under ``path`` ({} when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def snapshot():
    return tree


def calibration_batches(bundle_root: Path, n: int = 16):
    """Preprocessed frames of the bundle's own image size (random pixels in CLIP's value range)."""
    from clipfsar.runtime.bundle.reader import Bundle
    size = Bundle.open(bundle_root).manifest.graphs["image_encoder"].inputs[0].shape[2]
    x = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
    return [{"images": x[i:i + 8]} for i in range(0, n, 8)]


@pytest.fixture
def calib_batches():
    return calibration_batches


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, tiny_bundle):
    """The tiny bundle as `clipfsar calibrate --int8 static` leaves it: a TensorRT-form (symmetric Q/DQ) image
    encoder and the dynamic text encoder calibrate always makes."""
    from clipfsar.calib.int8 import quantize_dynamic_graph, quantize_static_graph
    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    work = tmp_path_factory.mktemp("int8")
    root = work / "b"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("engines"))
    m_img = quantize_static_graph(root / "image_encoder.onnx", work / "ie8.onnx", calibration_batches(root))
    m_txt = quantize_dynamic_graph(root / "text_encoder.onnx", work / "te8.onnx")
    add_variants(root, {"image_encoder": {"int8": NewVariant(work / "ie8.onnx", m_img)},
                        "text_encoder": {"int8": NewVariant(work / "te8.onnx", m_txt)}})
    return root
