"""The calibrated probabilities of the local runtime as one more output of the exported query head.

``clipfsar run`` reports ``p = softmax(z)`` with ``z_c = -D_c / tau`` for few-shot classes and ``a cos_c + b`` for
zero-shot ones (runtime/teaching/calibration.py; ``cos`` = cosine of the mean query frame feature and the class's text
feature); an uncalibrated bundle without zero-shot classes reports the paper's ``probs``. The model repository
written by ``clipfsar export-triton`` serves the same numbers as ``calibrated_probs`` [N] (the other outputs keep
the protocol of ``clipfsar serve``), and carries the "unknown" threshold in ``bundle_info`` and the head's config.

Example:
    >>> model = onnx.load("query_head.onnx")   # store baked in: inputs query (B, T, D)
    >>> add_calibrated_output(model, text, shots, runtime_calibration(cal, shots, frames=8, vt_scale=100.0))
"""
from __future__ import annotations

from typing import Dict

import numpy as np

CALIBRATED_OUTPUT = "calibrated_probs"


def add_calibrated_output(model, text: np.ndarray, shots: np.ndarray, calibration: Dict) -> None:
    """Append nodes computing ``calibrated_probs`` (B, N) from the head's ``query`` (B, T, D) input and its
    ``distances`` (B, N) / ``probs`` (B, N) outputs, in place (``onnx.ModelProto``). ``calibration``: the one the
    runtime uses (:func:`~clipfsar.runtime.teaching.calibration.runtime_calibration`)
   ; without a temperature the output is
    ``probs`` itself. Float32 throughout (the runtime computes in float64: differences ~1e-7)."""
    from onnx import TensorProto, helper, numpy_helper
    graph = model.graph
    out_info = helper.make_tensor_value_info(CALIBRATED_OUTPUT, TensorProto.FLOAT, ["batch", len(shots)])
    if not calibration.get("temperature"):
        graph.node.append(helper.make_node("Identity", ["probs"], [CALIBRATED_OUTPUT], name="calib/identity"))
        graph.output.append(out_info)
        return
    q = next(i for i in graph.input if i.name == "query").type.tensor_type.shape.dim
    T, D = int(q[1].dim_value), int(q[2].dim_value)
    w = np.asarray(text, np.float64)
    w = w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-8)  # (N, D), as video_text_cos
    zero = np.asarray(shots) == 0
    zs = calibration.get("zero_shot") or {"a": 1.0, "b": 0.0}
    tau = float(calibration["temperature"])
    consts = {  # z = D * scale_d + cos * scale_cos + bias  (few-shot: -D / tau; zero-shot: a cos + b)
        "calib_mean_t": np.full((T, 1), 1.0 / T), "calib_sum_d": np.ones((D, 1)), "calib_eps": np.array(1e-8),
        "calib_text_t": w.T, "calib_shape_bd": np.array([0, -1], np.int64),
        "calib_scale_d": np.where(zero, 0.0, -1.0 / tau), "calib_scale_cos": np.where(zero, float(zs["a"]), 0.0),
        "calib_bias": np.where(zero, float(zs["b"]), 0.0)}
    for name, value in consts.items():
        dtype = np.int64 if value.dtype == np.int64 else np.float32
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype), name))
    n = helper.make_node
    graph.node.extend([
        n("Transpose", ["query"], ["calib_qt"], perm=[0, 2, 1], name="calib/qt"),                 # (B, D, T)
        n("MatMul", ["calib_qt", "calib_mean_t"], ["calib_v1"], name="calib/mean"),              # (B, D, 1)
        n("Reshape", ["calib_v1", "calib_shape_bd"], ["calib_v"], name="calib/v"),               # (B, D)
        n("Mul", ["calib_v", "calib_v"], ["calib_v2"], name="calib/sq"),
        n("MatMul", ["calib_v2", "calib_sum_d"], ["calib_ss"], name="calib/ss"),                 # (B, 1)
        n("Sqrt", ["calib_ss"], ["calib_norm0"], name="calib/sqrt"),
        n("Max", ["calib_norm0", "calib_eps"], ["calib_norm"], name="calib/eps"),
        n("Div", ["calib_v", "calib_norm"], ["calib_vn"], name="calib/normalize"),
        n("MatMul", ["calib_vn", "calib_text_t"], ["calib_cos"], name="calib/cos"),              # (B, N)
        n("Mul", ["distances", "calib_scale_d"], ["calib_zd"], name="calib/zd"),
        n("Mul", ["calib_cos", "calib_scale_cos"], ["calib_zc"], name="calib/zc"),
        n("Add", ["calib_zd", "calib_zc"], ["calib_z0"], name="calib/z0"),
        n("Add", ["calib_z0", "calib_bias"], ["calib_z"], name="calib/z"),                       # (B, N) logits
        n("Softmax", ["calib_z"], [CALIBRATED_OUTPUT], axis=1, name="calib/softmax"),
    ])
    graph.output.append(out_info)
