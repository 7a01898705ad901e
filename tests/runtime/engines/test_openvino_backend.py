"""The OpenVINO backend: same outputs as onnxruntime, its compiled-model cache (corrupt entries rebuilt, with the
reason logged), a variant it cannot compile (fp32 with the reason logged), and the error where it is missing."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from clipfsar.runtime.engines.backends import OnnxGraph, create_graph  # noqa: E402
from clipfsar.runtime.engines.openvino_backend import OvGraph  # noqa: E402


def _images(n=2, size=64):
    return np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)


def test_openvino_matches_onnxruntime_and_caches(tiny_bundle, tmp_path):
    path = tiny_bundle / "image_encoder.onnx"
    x = _images(3)
    ref = OnnxGraph(path, "cpu").run(images=x)["features"]
    first = OvGraph(path, "fp32", cache_dir=tmp_path, threads=2)
    assert first.cache_note.startswith("compiled and cached")
    assert np.abs(first.run(images=x)["features"] - ref).max() < 1e-4
    again = OvGraph(path, "fp32", cache_dir=tmp_path, threads=2)
    assert again.cache_note.startswith("loaded cached compiled model")
    assert np.abs(again.run(images=x[:1])["features"] - ref[:1]).max() < 1e-4  # another batch size: dynamic
    assert len(list((tmp_path / "openvino" / "CPU").glob("image_encoder.fp32.*.blob"))) == 1
    # another thread count is another key: a second entry, the first one kept
    OvGraph(path, "fp32", cache_dir=tmp_path, threads=1)
    assert len(list((tmp_path / "openvino" / "CPU").glob("image_encoder.fp32.*.blob"))) == 2


@pytest.mark.parametrize("damage", ["blob bytes", "record", "blob missing", "foreign blob"])
def test_corrupt_cache_is_rebuilt_with_the_reason(tiny_bundle, tmp_path, caplog, damage):
    path = tiny_bundle / "image_encoder.onnx"
    x = _images()
    ref = OvGraph(path, "fp32", cache_dir=tmp_path).run(images=x)["features"]
    folder = tmp_path / "openvino" / "CPU"
    blob = next(folder.glob("*.blob"))
    record = blob.with_suffix(".json")
    if damage == "blob bytes":
        blob.write_bytes(blob.read_bytes()[:1000] + b"\0" * 100)
        why = "does not match its recorded sha256"
    elif damage == "record":
        record.write_text("{not json")
        why = "is unreadable"
    elif damage == "blob missing":
        blob.unlink()
        why = "is missing"
    else:  # bytes whose sha256 the record vouches for, but not a model OpenVINO imports
        import hashlib
        junk = b"not an OpenVINO model" * 10
        blob.write_bytes(junk)
        rec = json.loads(record.read_text())
        rec["blob_sha256"] = hashlib.sha256(junk).hexdigest()
        record.write_text(json.dumps(rec))
        why = "could not import the cached model"
    with caplog.at_level(logging.INFO, logger="clipfsar.runtime.engines.openvino_backend"):
        g = OvGraph(path, "fp32", cache_dir=tmp_path)
    assert why in caplog.text and g.cache_note.startswith("compiled and cached")
    assert np.abs(g.run(images=x)["features"] - ref).max() < 1e-5
    assert OvGraph(path, "fp32", cache_dir=tmp_path).cache_note.startswith("loaded")  # the rebuilt entry is good


def _uncompilable_variant(bundle: Path) -> Path:
    """An int8 'variant' with an op no OpenVINO plugin has (a custom domain), registered in the manifest."""
    import onnx
    from onnx import TensorProto, helper

    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    node = helper.make_node("NoSuchKernel", ["images"], ["features"], domain="org.clipfsar.test")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                              ["batch", 3, 64, 64])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("org.clipfsar.test", 1)])
    src = bundle.parent / "bad.onnx"
    onnx.save(model, str(src))
    add_variants(bundle, {"image_encoder": {"int8": NewVariant(src, "int8-qdq-minmax (test: no kernel)")}})
    return src


def test_variant_openvino_cannot_compile_runs_fp32_with_the_reason(bundle, caplog):
    from clipfsar.runtime.classify.classifier import Classifier
    _uncompilable_variant(bundle)
    with caplog.at_level(logging.WARNING):
        clf = Classifier.load(bundle, backend="openvino", precision="int8")
    assert clf.precisions["image_encoder"] == "fp32"
    assert "OpenVINO cannot compile" in caplog.text and "in fp32 instead" in caplog.text
    frames = [np.full((64, 64, 3), i * 20, np.uint8) for i in range(8)]
    assert clf.classify_clip(frames).label in clf.class_names


def test_fallback_through_create_graph_keeps_the_manifest_names(bundle):
    from clipfsar.runtime.bundle.reader import Bundle
    _uncompilable_variant(bundle)
    b = Bundle.open(bundle)
    g = create_graph(b.graph_path("image_encoder", "int8"), "openvino", None, precision="int8",
                     spec=b.manifest.graphs["image_encoder"])
    assert g.served_precision == "fp32" and g.input_names == ["images"] and g.output_names == ["features"]


def test_backend_openvino_not_installed_names_the_install_command(tiny_bundle, stream_file):
    code = ("import sys; sys.modules['openvino'] = None; from clipfsar.cli import main; "
            f"sys.argv = ['clipfsar', 'run', {str(tiny_bundle)!r}, '--source', {str(stream_file)!r}, "
            "'--backend', 'openvino', '--precision', 'fp32']; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install 'clip-fsar[openvino]'" in r.stderr and "Traceback" not in r.stderr


def test_bf16_on_onnxruntime_is_refused(tiny_bundle):
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.engines.precision import PrecisionUnavailableError, choose_precisions
    with pytest.raises(PrecisionUnavailableError, match="only OpenVINO"):
        choose_precisions(Bundle.open(tiny_bundle), "bf16", "cpu")
