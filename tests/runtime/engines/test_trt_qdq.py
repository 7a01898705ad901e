"""TensorRT's Q/DQ rules (runtime/engines/trt_qdq.py) on the real int8 graphs calib/int8.py makes: the TensorRT form
passes (int8 only, zero zero-points, no INT32 DequantizeLinear, also on a CNN with biases), onnxruntime's defaults
and the uint8 CPU form are caught; `clipfsar engine` refuses such a variant before it writes anything."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from clipfsar.calib.int8 import quantize_static_graph  # noqa: E402
from clipfsar.runtime.engines.trt_qdq import qdq_problems, qdq_summary  # noqa: E402

CLI = [sys.executable, "-m", "clipfsar"]


def small_cnn(path: Path) -> Path:
    """Conv(bias) -> BatchNorm -> Relu -> GlobalAveragePool -> Flatten -> Gemm(bias): the pieces of RN50 that get
    quantized biases (a folded BatchNorm's bias on the Conv, the attention pool's Linear layers as Gemm)."""
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.2
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("w1", f(8, 3, 3, 3)), ("b1", f(8)), ("gamma", 1 + f(8)), ("beta", f(8)), ("mean", f(8)),
        ("var", np.abs(f(8)) + 1), ("w2", f(4, 8)), ("b2", f(4)))]
    nodes = [helper.make_node("Conv", ["images", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["fl"], name="flatten"),
             helper.make_node("Gemm", ["fl", "w2", "b2"], ["features"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def batches(size=16, n=16):
    x = np.random.default_rng(1).standard_normal((n, 3, size, size)).astype(np.float32)
    return [{"images": x[i:i + 8]} for i in range(0, n, 8)]


def dq_types(path):
    """The quantized type of every DequantizeLinear (from its zero point or its input initializer)."""
    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear":
            src = n.input[2] if len(n.input) > 2 and n.input[2] in inits else n.input[0]
            if src in inits:
                out.append(inits[src].data_type)
    return out


def test_tensorrt_form_of_a_cnn_with_biases_passes(tmp_path):
    src = small_cnn(tmp_path / "cnn.onnx")
    method = quantize_static_graph(src, tmp_path / "trt.onnx", batches(), "minmax")
    assert method.startswith("int8-qdq-minmax") and "TensorRT" in method
    counts = qdq_summary(tmp_path / "trt.onnx")
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > 0  # really quantized
    assert qdq_problems(tmp_path / "trt.onnx") == []
    types = dq_types(tmp_path / "trt.onnx")
    assert types and set(types) == {TensorProto.INT8}  # no INT32 bias, no uint8


def test_onnxruntime_default_quantizes_biases_to_int32_and_is_caught(tmp_path):
    """What the TensorRT form did before: onnxruntime's QuantizeBias default on a CNN gives INT32 DequantizeLinear."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches())

        def get_next(self):
            return next(self.it, None)

    src = small_cnn(tmp_path / "cnn.onnx")
    quantize_static(str(src), str(tmp_path / "old.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    assert TensorProto.INT32 in dq_types(tmp_path / "old.onnx")
    problems = qdq_problems(tmp_path / "old.onnx")
    assert problems and any("int32" in p and "QuantizeBias" in p for p in problems)


def test_cpu_uint8_form_is_caught(tmp_path):
    src = small_cnn(tmp_path / "cnn.onnx")
    quantize_static_graph(src, tmp_path / "u8.onnx", batches(), "minmax", u8=True)
    problems = qdq_problems(tmp_path / "u8.onnx")
    assert any("UINT8" in p for p in problems) and any("non-zero zero point" in p for p in problems)


def test_real_vit_encoder_of_a_bundle(int8_bundle):
    """The tiny bundle's ViT image encoder as `calibrate --int8 static` makes it: TensorRT's form."""
    from clipfsar.runtime.bundle.reader import Bundle
    b = Bundle.open(int8_bundle)
    path = b.graph_path("image_encoder", "int8")
    assert qdq_summary(path)["DequantizeLinear"] > 0 and qdq_problems(path) == []


def test_asymmetric_int8_and_missing_zero_points(tmp_path):
    """Graphs written by hand: int8 with a non-zero zero point, and a QuantizeLinear with no zero point (uint8)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(3, np.int8), "zp")]
    for nodes, words in (
        ([helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
          helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")], "non-zero zero point"),
        ([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q"),
          helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")], "UINT8"),
    ):
        m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
        problems = qdq_problems(m)
        assert len(problems) == 2 and all(words in p for p in problems), problems  # both Q and DQ named
        assert "'q'" in problems[0] and "'dq'" in problems[1]


def test_engine_refuses_a_non_tensorrt_int8_graph_before_writing(tmp_path, tiny_bundle, snapshot, calib_batches):
    """A variant that claims the symmetric form but is asymmetric: `clipfsar engine` names the bundle, the graph
    and the way out, exits 2, and leaves the bundle and the cache folder as they were (checked without TensorRT:
    the lint comes first)."""
    import shutil

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from clipfsar.runtime.bundle.edit import NewVariant, add_variants

    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("engines"))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib_batches(root))

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(root / "image_encoder.onnx"), str(tmp_path / "asym.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"], extra_options={"ActivationSymmetric": False})
    add_variants(root, {"image_encoder": {"int8": NewVariant(tmp_path / "asym.onnx", "int8-qdq-minmax (by hand)")}})
    cache = tmp_path / "cache"
    before = snapshot(root)
    r = subprocess.run(CLI + ["engine", str(root), "--precision", "int8", "--cache-dir", str(cache)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "image_encoder" in r.stderr and "non-zero zero point" in r.stderr and "--int8 static" in r.stderr
    assert str(root / "variants") in r.stderr  # the file, inside the bundle, is named
    assert snapshot(root) == before and not cache.exists()
