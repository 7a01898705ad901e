"""INT8 variants with ``onnxruntime.quantization`` (the maintained quantizer of the runtime we ship).

- ``dynamic``: int8 weights, activations quantized per call (``quantize_dynamic``, MatMul/Gemm). For the CPU and
  for ViTs, where activation ranges vary too much for static scales. Runs on onnxruntime's CPU provider only
  (MatMulInteger / DynamicQuantizeLinear); TensorRT cannot run it.
- ``static``: explicit Q/DQ with calibration data (``quantize_static``, QuantFormat.QDQ, symmetric int8
  activations and per-channel int8 weights on Conv/MatMul/Gemm, biases left float -- ``QuantizeBias`` off --, as
  TensorRT's explicit INT8 wants: runtime/engines/trt_qdq.py is the check). For TensorRT.
- ``static-u8``: onnxruntime's fast CPU form of static Q/DQ (uint8 asymmetric activations, int8 per-channel weights,
  every op onnxruntime has a quantized kernel for). For CNN backbones on the CPU; TensorRT cannot build it.
  Calibration methods of both static forms: MinMax, Entropy, Percentile (99.999).

Example:
    >>> quantize_dynamic_graph(Path("image_encoder.onnx"), Path("image_encoder.int8.onnx"))
    >>> quantize_static_graph(Path("image_encoder.onnx"), Path("out.onnx"), [{"images": x}], "minmax")
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np

METHODS = ("minmax", "entropy", "percentile")
MODES = ("auto", "dynamic", "static", "static-u8")
OPS = ["Conv", "MatMul", "Gemm"]


def int8_mode_for(arch: str, mode: str = "auto", backend: str = "cpu") -> str:
    """``mode``, or for ``auto``: on onnxruntime's CPU ``dynamic`` for ViTs (and any transformer) and ``static-u8``
    Q/DQ for CNN backbones (``RN50`` ...); on OpenVINO the symmetric ``static`` Q/DQ for both (calib/openvino.py)."""
    if mode not in MODES:
        raise ValueError(f"int8 mode must be one of {', '.join(MODES)}, got '{mode}'")
    if mode != "auto":
        return mode
    if backend == "openvino":
        return "static"
    return "static-u8" if arch.upper().startswith("RN") else "dynamic"


def _preprocessed(src: Path, work: Path) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph optimisation) before quantization.

    The exporter's recorded intermediate shapes are dropped first and inferred again: the RN50 image encoder
    carries one that ONNX's strict shape inference (which the quantizer runs) rejects (2048 vs 1024).
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process
    model = onnx.load(str(src))
    del model.graph.value_info[:]
    clean, out = work / "clean.onnx", work / "pre.onnx"
    onnx.save(model, str(clean), save_as_external_data=model.ByteSize() > 1_800_000_000)
    try:
        quant_pre_process(str(clean), str(out), skip_symbolic_shape=True)
    except Exception:  # an optimisation the quantizer's helper cannot do: quantize the graph as exported
        return clean
    return out


def quantize_dynamic_graph(src: Path, dst: Path) -> str:
    """Int8 weights (MatMul/Gemm), dynamic activations; returns the method string for the manifest."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory(prefix="clipfsar-int8-") as work:
        quantize_dynamic(str(_preprocessed(Path(src), Path(work))), str(dst), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], per_channel=False)
    return "int8-dynamic (onnxruntime quantize_dynamic; MatMul/Gemm weights int8)"


class _Batches:
    """A CalibrationDataReader over preprocessed batches (one dict of named inputs per call)."""

    def __init__(self, batches: List[Dict[str, np.ndarray]]):
        self.batches, self.i = batches, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def quantize_static_graph(src: Path, dst: Path, batches: Iterable[Dict[str, np.ndarray]], method: str = "minmax",
                          u8: bool = False) -> str:
    """Explicit Q/DQ calibrated on ``batches``: symmetric int8 activations on Conv/MatMul/Gemm (TensorRT), or with
    ``u8`` uint8 asymmetric activations on every quantizable op (onnxruntime's fast CPU form). Weights: per-channel
    int8.

    Raises:
        ValueError: an unknown ``method`` or no calibration batch.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got '{method}'")
    batches = list(batches)
    if not batches:
        raise ValueError("static int8 needs at least one calibration batch")
    reader = type("Reader", (_Batches, CalibrationDataReader), {})(batches)
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": not u8, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with tempfile.TemporaryDirectory(prefix="clipfsar-int8-") as work:
        if not u8:  # TensorRT's form: symmetric (zero zero-points) and float biases (no INT32 DequantizeLinear,
            # which TensorRT's parser rejects; it fuses the bias itself): runtime/engines/trt_qdq.py checks both
            extra.update(CalibTensorRangeSymmetric=True, QuantizeBias=False)
        quantize_static(str(_preprocessed(Path(src), Path(work))), str(dst), reader, quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8 if u8 else QuantType.QInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=calib, op_types_to_quantize=None if u8 else OPS,
                        extra_options=extra)
    n = sum(len(next(iter(b.values()))) for b in batches)
    if u8:
        return f"int8-qdq-u8-{method} (onnxruntime quantize_static, Q/DQ, uint8 activations, CPU; {n} frames)"
    return (f"int8-qdq-{method} (onnxruntime quantize_static, Q/DQ, symmetric, per-channel, float biases: "
            f"TensorRT's form; {n} frames)")
