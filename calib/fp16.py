"""FP16 variants: onnxruntime's float16 converter with a block list that keeps the numerically fragile ops fp32.

We use ``onnxruntime.transformers.float16.convert_float_to_float16`` (onnxruntime's maintained copy of
onnxconverter-common's converter, already a dependency) with ``keep_io_types=True``. Kept in fp32:
LayerNormalization, Softmax/LogSoftmax, every Reduce*, Exp/Log (the OTAM soft-min and log-sum-exp) and, in
``query_head``, everything from the cosine distances on (OTAM and the fusion). Two repairs make the converter's
output load in onnxruntime: it inserts one ``Cast`` per blocked consumer of a shared tensor, all with the same
name and output (e.g. CLIP's LayerNorm weights that torch.onnx deduplicates) -- those identical casts are merged --
the result is sorted topologically again, and the converter's stale tensor types are inferred afresh.

Example:
    >>> to_fp16(Path("bundle/image_encoder.onnx"), Path("image_encoder.fp16.onnx"), "image_encoder")
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Set

FP32_OPS = ("LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceMin", "ReduceMax",
            "ReduceL1", "ReduceL2", "ReduceProd", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "Exp", "Log")
# graphs whose tail stays fp32: everything downstream of the first node of these types
FP32_TAIL_FROM = {"query_head": ("ReduceL2",)}
METHOD = "float16 (onnxruntime converter; LayerNorm/Softmax/reductions/Exp/Log fp32; fp32 I/O)"


def _downstream(model, start_ops) -> List[str]:
    """Names of the nodes that consume (directly or not) the output of any node whose type is in ``start_ops``."""
    consumers: Dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    seen: Set[str] = set()
    stack = [n for n in model.graph.node if n.op_type in start_ops]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        for o in node.output:
            stack.extend(consumers.get(o, []))
    return sorted(seen)


def _merge_duplicate_casts(model) -> None:
    """Drop nodes whose outputs another node already produces with the same op, inputs and attributes."""
    produced: Dict[str, tuple] = {}
    keep = []
    for node in model.graph.node:
        sig = (node.op_type, tuple(node.input), tuple(a.SerializeToString() for a in node.attribute))
        if node.output and all(o in produced for o in node.output):
            if all(produced[o] == sig for o in node.output):
                continue
            raise ValueError(f"fp16 conversion produced two different nodes writing {list(node.output)}")
        for o in node.output:
            produced[o] = sig
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def _toposort(model) -> None:
    """Order nodes so every input is produced before it is used (graph inputs and initializers are ready)."""
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending = list(model.graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"fp16 graph has a cycle or an unproduced input at {rest[0].name}")
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def to_fp16(src: Path, dst: Path, graph_name: str) -> str:
    """Write the fp16 variant of the ONNX graph ``src`` to ``dst``; returns the method string for the manifest.

    Raises:
        ValueError: the converter produced a graph we cannot repair (names the node).
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    node_block = _downstream(model, FP32_TAIL_FROM.get(graph_name, ()))
    model16 = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False,
                                       op_block_list=list(FP32_OPS) + list(DEFAULT_OP_BLOCK_LIST),
                                       node_block_list=node_block)
    _merge_duplicate_casts(model16)
    _toposort(model16)
    # the converter leaves value_info entries whose types disagree with the graph (fp32 vs fp16), which makes
    # onnxruntime's optimizer crash; drop them and infer them again from the graph itself
    del model16.graph.value_info[:]
    model16 = onnx.shape_inference.infer_shapes(model16, strict_mode=True)
    onnx.checker.check_model(model16, full_check=True)
    onnx.save(model16, str(dst))
    return METHOD + (f"; {len(node_block)} tail nodes (distances, OTAM, fusion) fp32" if node_block else "")


def fp16_nodes_among(path: Path, op_types=FP32_OPS) -> List[str]:
    """Nodes of ``op_types`` in the graph at ``path`` that read or write an fp16 tensor (should be none)."""
    import onnx
    from onnx import TensorProto

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return [n.name for n in model.graph.node if n.op_type in op_types
            and any(types.get(t) == TensorProto.FLOAT16 for t in list(n.input) + list(n.output))]
