"""FP16/INT8 variants of the tiny model's graphs: ops kept fp32, accuracy vs fp32, the report, auto's choice."""
import json
import shutil

import numpy as np
import onnx
import pytest

from clipfsar.calib.fp16 import FP32_OPS, fp16_nodes_among, to_fp16
from clipfsar.calib.int8 import quantize_static_graph
from clipfsar.calib.report import format_report
from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.classify.classifier import Classifier
from clipfsar.runtime.engines.backends import OnnxGraph
from clipfsar.runtime.engines.precision import PrecisionUnavailableError, choose_precisions

GRAPHS = ("image_encoder", "text_encoder", "support_head", "query_head")


def _cos(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("name", GRAPHS)
def test_fp16_keeps_listed_ops_fp32_and_fp32_io(tmp_path, tiny_bundle, name):
    dst = tmp_path / f"{name}.fp16.onnx"
    to_fp16(Bundle.open(tiny_bundle).graph_path(name), dst, name)
    assert fp16_nodes_among(dst) == []
    m = onnx.load(str(dst))
    io_types = {t.type.tensor_type.elem_type for t in list(m.graph.input) + list(m.graph.output)}
    assert io_types <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64}
    fp16 = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert fp16, "nothing was converted to fp16"
    if name == "query_head":  # OTAM's soft-min and the fusion: every node after the distances stays fp32
        ops = ("ReduceMin", "Exp", "Log", "Sub", "Where", "Pad", "LogSoftmax")
        assert fp16_nodes_among(dst, ops) == []
    assert set(FP32_OPS) >= {"LayerNormalization", "Softmax", "ReduceSum"}


def test_fp16_and_int8_close_to_fp32(calibrated):
    b = Bundle.open(calibrated)
    x = np.random.default_rng(1).normal(size=(6, 3, 64, 64)).astype(np.float32)
    ref = OnnxGraph(b.graph_path("image_encoder"), "cpu").run(images=x)["features"]
    f16 = OnnxGraph(b.graph_path("image_encoder", "fp16"), "cpu", precision="fp16").run(images=x)["features"]
    i8 = OnnxGraph(b.graph_path("image_encoder", "int8"), "cpu", precision="int8").run(images=x)["features"]
    assert _cos(ref, f16).min() >= 0.999
    assert _cos(ref, i8).min() >= 0.99
    rep = b.manifest.graphs["image_encoder"].variants
    assert rep["fp16"].report["cosine_min"] >= 0.999 and rep["int8"].report["cosine_min"] >= 0.99
    assert rep["int8"].method.startswith("int8-dynamic")  # a ViT: dynamic


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_qdq(tmp_path, tiny_bundle, method):
    src = Bundle.open(tiny_bundle).graph_path("image_encoder")
    rng = np.random.default_rng(0)
    calib = [{"images": rng.normal(size=(4, 3, 64, 64)).astype(np.float32)} for _ in range(3)]
    how = quantize_static_graph(src, tmp_path / "q.onnx", calib, method)
    assert how.startswith(f"int8-qdq-{method}")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = rng.normal(size=(4, 3, 64, 64)).astype(np.float32)
    a = OnnxGraph(src, "cpu").run(images=x)["features"]
    q = OnnxGraph(tmp_path / "q.onnx", "cpu", precision="int8").run(images=x)["features"]
    assert _cos(a, q).min() >= 0.99


def test_report_fields(calibrated):
    m = Bundle.open(calibrated).manifest
    assert set(m.graphs["image_encoder"].variants) == {"fp16", "int8"}
    assert set(m.graphs["query_head"].variants) == {"fp16"}  # heads stay fp32 in the int8 bundle
    r = m.graphs["image_encoder"].variants["int8"].report
    for key in ("cosine_mean", "cosine_min", "max_abs_diff", "latency_ms", "latency_ms_fp32", "speedup",
                "provider", "threads", "rows"):
        assert key in r
    rep = m.precision_report
    cal = rep["calibration"]
    assert cal["frames"] == 32 and cal["held_out_frames"] == 16 and cal["seed"] == 0
    calib_clips = {c["clip"] for c in cal["clips"]}
    held_clips = {c["clip"] for c in cal["held_out_clips"]}
    assert calib_clips and held_clips and not calib_clips & held_clips  # held-out frames come from other clips
    assert all(len(c["frames"]) == m.model.frames for c in cal["clips"])
    assert rep["episodes"]["episodes"] == 60
    for p in ("fp16", "int8"):
        v = rep["variants"][p]
        assert 0 <= v["agreement"] <= 1 and isinstance(v["flagged"], bool)
        assert v["drop_points"] == pytest.approx(rep["variants"]["fp32"]["accuracy"] - v["accuracy"])
    table = format_report(m)
    assert "image_encoder" in table and "int8" in table and "top-1 agreement" in table


def _with_report(root, tmp_path, flagged=False, speedup=2.0):
    dst = tmp_path / "b2"
    shutil.copytree(root, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["precision_report"]["variants"]["int8"]["flagged"] = flagged
    m["precision_report"]["variants"]["fp16"]["flagged"] = flagged
    m["graphs"]["image_encoder"]["variants"]["int8"]["report"]["speedup"] = speedup
    m["graphs"]["text_encoder"]["variants"]["int8"]["report"]["speedup"] = 0.9  # never faster: stays fp32
    (dst / "manifest.json").write_text(json.dumps(m))
    return Bundle.open(dst)


def test_auto_choice(calibrated, tmp_path):
    b = _with_report(calibrated, tmp_path)
    assert choose_precisions(b, "auto", "cpu") == {"image_encoder": "int8", "text_encoder": "fp32",
                                                   "support_head": "fp32", "query_head": "fp32"}
    assert choose_precisions(b, "auto", "cuda") == dict.fromkeys(GRAPHS, "fp16")
    assert choose_precisions(b, "int8", "cpu")["text_encoder"] == "int8"
    assert choose_precisions(b, "fp32", "cpu") == dict.fromkeys(GRAPHS, "fp32")
    shutil.rmtree(tmp_path / "b2")
    slow = _with_report(calibrated, tmp_path, speedup=0.8)  # int8 not faster here: fp32
    assert choose_precisions(slow, "auto", "cpu")["image_encoder"] == "fp32"
    shutil.rmtree(tmp_path / "b2")
    flagged = _with_report(calibrated, tmp_path, flagged=True)  # loses too much: never picked by auto
    assert set(choose_precisions(flagged, "auto", "cpu").values()) == {"fp32"}
    assert set(choose_precisions(flagged, "auto", "tensorrt").values()) == {"fp32"}
    assert choose_precisions(flagged, "int8", "cpu")["image_encoder"] == "int8"  # asked explicitly: runs


def test_auto_without_report_is_fp32(tiny_bundle):
    assert set(choose_precisions(Bundle.open(tiny_bundle), "auto", "cpu").values()) == {"fp32"}


def test_bad_precision_requests(calibrated, tiny_bundle):
    with pytest.raises(BundleError, match="has no int8 variant \\(it has fp32\\)"):
        choose_precisions(Bundle.open(tiny_bundle), "int8", "cpu")
    with pytest.raises(PrecisionUnavailableError, match="dynamic quantization .* not backend 'cuda'"):
        choose_precisions(Bundle.open(calibrated), "int8", "cuda")


def test_u8_variant_refused_on_tensorrt(calibrated, tmp_path):
    dst = tmp_path / "b3"
    shutil.copytree(calibrated, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["graphs"]["image_encoder"]["variants"]["int8"]["method"] = "int8-qdq-u8-minmax (test)"
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PrecisionUnavailableError, match="uint8 activations .* TensorRT cannot build"):
        choose_precisions(Bundle.open(dst), "int8", "trt")


def test_classifier_runs_the_variant(calibrated, stream_file):
    clf = Classifier.load(calibrated, backend="cpu", precision="int8")
    assert clf.precisions == {"image_encoder": "int8", "query_head": "fp32"}
    assert clf.stats.precisions == clf.precisions
    ref = Classifier.load(calibrated, backend="cpu", precision="fp32")
    frames = [np.full((64, 64, 3), 30 * i, np.uint8) for i in range(8)]
    a, b = ref.classify_clip(frames), clf.classify_clip(frames)
    assert np.allclose(a.scores, b.scores, atol=0.05)


def test_static_u8_is_cpu_only(tmp_path, tiny_bundle):
    """onnxruntime's CPU form of static Q/DQ: uint8 activations; the runtime refuses it on TensorRT."""
    src = Bundle.open(tiny_bundle).graph_path("image_encoder")
    rng = np.random.default_rng(0)
    calib = [{"images": rng.normal(size=(4, 3, 64, 64)).astype(np.float32)} for _ in range(2)]
    how = quantize_static_graph(src, tmp_path / "u8.onnx", calib, "minmax", u8=True)
    assert how.startswith("int8-qdq-u8-minmax")
    m = onnx.load(str(tmp_path / "u8.onnx"))
    zero_points = [t for t in m.graph.initializer if t.name.endswith("_zero_point")]
    assert any(t.data_type == onnx.TensorProto.UINT8 for t in zero_points)
    x = rng.normal(size=(4, 3, 64, 64)).astype(np.float32)
    a = OnnxGraph(src, "cpu").run(images=x)["features"]
    q = OnnxGraph(tmp_path / "u8.onnx", "cpu", precision="int8").run(images=x)["features"]
    assert _cos(a, q).min() >= 0.99
