"""TensorRT readiness lint: every op in the ONNX-TensorRT parser's supported list, TensorRT dtypes, static ranks.

The op list follows onnx-tensorrt's docs/operators.md for TensorRT 10 (opsets 9-20), restricted to the ops
an exported vision/text Transformer or CNN can contain. An op outside it fails the lint: extend the list only
after checking that document.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Union

import onnx

TRT_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GroupNormalization HardSigmoid HardSwish Hardmax Identity If
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization
MatMul Max MaxPool Mean Min Mish Mod Mul Neg NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
Tile TopK Transpose Trilu Unsqueeze Where Xor
""".split())

TRT_DTYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                        onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.INT8,
                        onnx.TensorProto.UINT8, onnx.TensorProto.BOOL})


@dataclass
class LintReport:
    graph: str
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def lint(model_or_path: Union[str, Path, onnx.ModelProto]) -> LintReport:
    """Check one ONNX graph for TensorRT readiness; returns the list of problems (empty = ready)."""
    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    name = model.graph.name or str(model_or_path)
    report = LintReport(name)
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            report.problems.append(f"node {node.name or node.op_type}: custom domain '{node.domain}'")
        elif node.op_type not in TRT_SUPPORTED_OPS:
            report.problems.append(f"node {node.name or node.op_type}: op {node.op_type} is not in TensorRT's "
                                   f"ONNX parser support list")
    for init in g.initializer:
        if init.data_type not in TRT_DTYPES:
            report.problems.append(f"initializer {init.name}: dtype "
                                   f"{onnx.TensorProto.DataType.Name(init.data_type)} not accepted by TensorRT")
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            report.problems.append(f"value {vi.name}: not a tensor")
            continue
        if t.elem_type not in TRT_DTYPES:
            report.problems.append(f"value {vi.name}: dtype {onnx.TensorProto.DataType.Name(t.elem_type)} "
                                   f"not accepted by TensorRT")
        if not t.HasField("shape"):
            report.problems.append(f"value {vi.name}: rank unknown (TensorRT needs static ranks)")
    return report
