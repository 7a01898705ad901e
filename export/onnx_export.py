"""Export the four graphs to ONNX (opset 17, named I/O, dynamic batch/class axes) and check each against
its PyTorch module in onnxruntime."""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnx_ir as ir
import onnxscript.optimizer
import torch

from clipfsar.runtime.engines.backends import OnnxGraph
from clipfsar.train.model import CLIPFSAR

from .graphs import IO, ImageEncoder, QueryHead, SupportHead, TextEncoder

log = logging.getLogger(__name__)
OPSET = 17
PARITY_TOL = 1e-4
EXTERNAL_DATA_BYTES = 1_800_000_000  # above this a graph's weights go to an external data file (protobuf: 2 GB)


def example_inputs(model: CLIPFSAR, image_size: int, seed: int = 0) -> Dict[str, Tuple[torch.Tensor, ...]]:
    """Seeded example inputs per graph (batch/class/shot sizes chosen > 1 so dynamic axes are exercised)."""
    g = torch.Generator().manual_seed(seed)
    t, d = model.cfg.frames, model.embed_dim
    tokens = model.tokenizer([model.cfg.prompt.format(n) for n in ("a circle moving left", "waving")]).int()
    return {
        "image_encoder": (torch.randn(2, 3, image_size, image_size, generator=g),),
        "text_encoder": (tokens,),
        "support_head": (torch.randn(3, 2, t, d, generator=g), torch.randn(3, d, generator=g)),
        "query_head": (torch.randn(2, t, d, generator=g), torch.randn(3, t, d, generator=g),
                       torch.randn(3, d, generator=g)),
    }


def graph_modules(model: CLIPFSAR) -> Dict[str, torch.nn.Module]:
    """The four graph wrappers, in eval mode (the exporter restores each wrapper's mode on the whole model)."""
    mods = {"image_encoder": ImageEncoder(model), "text_encoder": TextEncoder(model, model.tokenizer.eot_token_id),
            "support_head": SupportHead(model), "query_head": QueryHead(model)}
    return {k: m.eval() for k, m in mods.items()}


def _external_data_file(name: str) -> str:
    return f"{name}.onnx.data"


def export_graph(module: torch.nn.Module, name: str, args: Tuple[torch.Tensor, ...], path: Path,
                 external_data: Optional[bool] = None) -> List[str]:
    """Export ``module`` to ``path`` (ONNX, opset 17), with shape arithmetic folded, checked by ``onnx.checker``.

    A graph whose weights exceed ``EXTERNAL_DATA_BYTES`` (protobuf cannot hold more than 2 GB) is written with ONNX
    external data: the graph in ``path`` and every tensor in one ``<name>.onnx.data`` beside it, checked by path.
    ``external_data`` forces it on (tests) or off; None decides by size.

    Returns:
        The external data files written beside ``path`` (names relative to its folder; empty for one-file graphs).
    """
    inputs, outputs, dynamic = IO[name]
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=path.parent) as raw_dir:
        raw = Path(raw_dir) / path.name  # for > 2 GB the exporter writes one file per tensor beside it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(module, args, str(raw), input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        size = sum(f.stat().st_size for f in Path(raw_dir).iterdir())
        large = size > EXTERNAL_DATA_BYTES if external_data is None else external_data
        if not large:
            m = onnx.load(str(raw))
            # fold the shape arithmetic the TorchScript exporter leaves (e.g. nn.MultiheadAttention's unflatten), so
            # every tensor has a static rank, as TensorRT's parser needs
            m = onnxscript.optimizer.optimize(m)
            m.graph.name = name
            onnx.checker.check_model(m)
            onnx.save(m, str(path))
            return []
        # large: never serialise the whole model in one protobuf; the IR keeps external tensors memory-mapped
        model = ir.load(str(raw))
        model = onnxscript.optimizer.optimize(model)
        model.graph.name = name
        data = _external_data_file(name)
        ir.save(model, str(path), external_data=data)
    onnx.checker.check_model(str(path))  # by path: the checker reads the external data itself
    log.info("%s: %.2f GB of weights, written as external data %s", name, size / 1e9, data)
    return [data]


def _torch_outputs(module: torch.nn.Module, args) -> Tuple[np.ndarray, ...]:
    with torch.no_grad():
        out = module(*args)
    out = out if isinstance(out, tuple) else (out,)
    return tuple(o.float().numpy() for o in out)


def check_parity(module: torch.nn.Module, name: str, args, path: Path) -> float:
    """Max abs difference between onnxruntime (CPU) and PyTorch over every output of graph ``name``."""
    inputs, outputs, _ = IO[name]
    got = OnnxGraph(path, backend="cpu").run(**{k: v.numpy() for k, v in zip(inputs, args)})
    want = _torch_outputs(module, args)
    return max(float(np.abs(got[o] - w).max()) for o, w in zip(outputs, want))


def export_all(model: CLIPFSAR, image_size: int, out_dir: Path,
               external_data: Optional[bool] = None) -> Dict[str, Dict]:
    """Export the four graphs into ``out_dir``; returns per graph: file, external data files (``data``), I/O specs
    and parity (max abs diff). ``external_data``: see :func:`export_graph`."""
    model = model.eval().float()
    mods, examples = graph_modules(model), example_inputs(model, image_size)
    result = {}
    for name, module in mods.items():
        path = Path(out_dir) / f"{name}.onnx"
        data = export_graph(module, name, examples[name], path, external_data)
        diff = check_parity(module, name, examples[name], path)
        log.info("%s: exported, onnxruntime vs torch max abs diff %.2e", name, diff)
        result[name] = {"file": path.name, "data": data, "max_abs_diff": diff, **io_specs(path)}
    return result


def io_specs(path: Path) -> Dict:
    """Inputs/outputs of an ONNX file as manifest entries (name, shape with named dynamic axes, dtype)."""
    m = onnx.load(str(path), load_external_data=False)

    def spec(vi):
        t = vi.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": vi.name, "shape": shape,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return {"inputs": [spec(i) for i in m.graph.input], "outputs": [spec(o) for o in m.graph.output]}
