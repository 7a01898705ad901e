"""TensorRT's rules for explicit quantization, checked on an ONNX graph before TensorRT is given it.

TensorRT's ONNX parser (onnx-tensorrt, ``QuantizeLinear``/``DequantizeLinear``) takes Q/DQ pairs whose quantized
type is int8 (or fp8 E4M3 / int4), with zero points that are all zero (symmetric quantization), and no int32
``DequantizeLinear`` (onnxruntime's quantizer writes those for biases when its ``QuantizeBias`` is on; TensorRT
fuses the bias itself). A ``QuantizeLinear`` without a zero point and without ``output_dtype`` quantizes to uint8
(ONNX's default), which TensorRT rejects too. onnxruntime's uint8 CPU form (``--int8 static-u8``) breaks the first
two rules, so it is refused here with a message, not inside the parser.

Needs the ``onnx`` package (in ``clip-fsar[tensorrt]`` and ``[train]``); imported when called.

Example:
    >>> qdq_problems(Path("bundle/variants/image_encoder.int8.0123abcd4567.onnx"))
    []
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _allowed_types():
    from onnx import TensorProto
    allowed = {TensorProto.INT8}
    for name in ("FLOAT8E4M3FN", "INT4"):  # newer onnx only
        if hasattr(TensorProto, name):
            allowed.add(getattr(TensorProto, name))
    return allowed


def _constants(graph) -> Dict[str, Any]:
    """Tensor name -> TensorProto of every initializer and ``Constant`` node output."""
    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = a.t
    return out


def _attr(node, name: str) -> Optional[int]:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return None


def qdq_problems(model: Union[str, Path, Any]) -> List[str]:
    """Every way the Q/DQ nodes of ``model`` (a path or a loaded ``onnx.ModelProto``) break TensorRT's rules.

    Returns:
        One line per problem, naming the node and what is wrong (empty: TensorRT's parser accepts the Q/DQ).
    Raises:
        ImportError: the ``onnx`` package is missing.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    consts = _constants(graph)
    allowed = _allowed_types()
    quantized: Dict[str, int] = {}  # output of a QuantizeLinear -> its quantized type
    problems: List[str] = []

    def type_name(t: int) -> str:
        return TensorProto.DataType.Name(t)

    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        what = f"{node.op_type} '{node.name or node.output[0]}'"
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        zp = consts.get(zp_name) if zp_name else None
        if zp is not None:
            qtype = zp.data_type
        elif node.op_type == "QuantizeLinear":
            qtype = _attr(node, "output_dtype") or TensorProto.UINT8  # ONNX's default without a zero point
        else:
            src = node.input[0]
            qtype = consts[src].data_type if src in consts else quantized.get(src, TensorProto.INT8)
        if node.op_type == "QuantizeLinear":
            quantized[node.output[0]] = qtype
        if qtype == TensorProto.INT32:
            problems.append(f"{what} dequantizes int32 (a quantized bias; TensorRT takes float biases: quantize "
                            f"without QuantizeBias)")
        elif qtype not in allowed:
            problems.append(f"{what} is {type_name(qtype)} (TensorRT takes int8, fp8 or int4 Q/DQ)")
        if zp_name and zp is None:
            problems.append(f"{what}: its zero point '{zp_name}' is computed, not a constant (TensorRT needs 0)")
        elif zp is not None and numpy_helper.to_array(zp).astype("int64").any():
            problems.append(f"{what} has a non-zero zero point (TensorRT's Q/DQ is symmetric)")
    return problems


def qdq_summary(model: Union[str, Path, Any]) -> Dict[str, int]:
    """Counts of QuantizeLinear and DequantizeLinear nodes (for reports and tests)."""
    import onnx
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return {op: sum(n.op_type == op for n in model.graph.node) for op in QDQ_OPS}
