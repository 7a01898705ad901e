"""Which precision variant of each graph to run: ``fp32``, ``fp16``, ``int8`` or ``auto`` (from the bundle's report).

``auto``: on the CPU the int8 variant of a graph where the precision report shows it is faster than fp32 and the
int8 bundle within the accuracy bound (``flagged`` false), else fp32; on a GPU backend the fp16 variant where the
fp16 bundle is within the bound, else fp32 (the report's int8 latencies are from the CPU that made them, so they
say nothing about a GPU). An explicit ``fp16``/``int8`` runs that variant of every graph that has one and fp32 for
the rest (the heads usually stay fp32); a bundle with no graph in that precision is an error.

Example:
    >>> choose_precisions(Bundle.open("bundle/"), "auto", "cpu")
    {'image_encoder': 'int8', 'text_encoder': 'fp32', 'support_head': 'fp32', 'query_head': 'fp32'}
"""
from __future__ import annotations

import logging
from typing import Dict

from clipfsar.runtime.base.errors import BundleError, ClipFsarError
from clipfsar.runtime.bundle.reader import PRECISIONS, Bundle
from clipfsar.runtime.engines import openvino_precision

log = logging.getLogger(__name__)

CHOICES = ("auto",) + PRECISIONS + ("bf16",)  # bf16: the fp32 graph at bf16 on OpenVINO (openvino_precision.py)
GPU_BACKENDS = ("trt", "tensorrt", "cuda")


class PrecisionUnavailableError(ClipFsarError):
    """The precision asked for cannot run on the chosen backend."""


def _eligible(bundle: Bundle, precision: str) -> bool:
    """Whether the report measured ``precision`` end to end and found it within the accuracy bound."""
    entry = bundle.manifest.precision_report.get("variants", {}).get(precision, {})
    return entry.get("flagged") is False


def choose_precisions(bundle: Bundle, precision: str, backend: str) -> Dict[str, str]:
    """Graph name -> the precision to run, for every graph of ``bundle``.

    Args:
        precision: ``auto``, ``fp32``, ``fp16`` or ``int8``.
        backend: the backend that will run the graphs (``auto`` is taken as the best usable one here).
    Raises:
        ClipFsarError: an unknown precision. BundleError: no graph has that precision (lists those it has).
        PrecisionUnavailableError: a dynamic-int8 variant asked on a GPU backend (only onnxruntime's CPU runs it).
    """
    if precision not in CHOICES:
        raise ClipFsarError(f"unknown precision '{precision}'; choose one of {', '.join(CHOICES)}")
    graphs = bundle.manifest.graphs
    if backend == "auto":
        from clipfsar.runtime.engines.backends import usable_backends
        backend = usable_backends()[0]
    if precision == "fp32":
        return {name: "fp32" for name in graphs}
    if precision == "bf16":
        from clipfsar.runtime.engines.openvino_precision import bf16_choice
        return bf16_choice(bundle, graphs, backend)
    if precision in ("fp16", "int8"):
        if not any(precision in bundle.precisions(n) for n in graphs):
            have = sorted({p for n in graphs for p in bundle.precisions(n)}, key=PRECISIONS.index)
            raise BundleError(f"bundle {bundle.root} has no {precision} variant (it has {', '.join(have)}); "
                              f"make one with `clipfsar calibrate {bundle.root} --precision {precision}`")
        chosen = {n: precision if precision in bundle.precisions(n) else "fp32" for n in graphs}
    elif backend == "openvino" or (backend == "cpu" and openvino_precision.measured_on(bundle) == "openvino"):
        chosen = openvino_precision.openvino_choice(bundle, graphs, backend)  # fastest measured on OpenVINO
    elif backend in GPU_BACKENDS:
        ok = _eligible(bundle, "fp16")
        chosen = {n: "fp16" if ok and "fp16" in bundle.precisions(n) else "fp32" for n in graphs}
    else:
        ok = _eligible(bundle, "int8")
        chosen = {n: "int8" if ok and "int8" in bundle.precisions(n)
                  and graphs[n].variants["int8"].report.get("speedup", 0.0) > 1.0 else "fp32" for n in graphs}
    for n, p in chosen.items():
        method = graphs[n].variants["int8"].method if p == "int8" else ""
        if method.startswith("int8-qdq-u8") and backend in ("trt", "tensorrt"):
            raise PrecisionUnavailableError(
                f"the int8 variant of {n} in {bundle.root} is Q/DQ with uint8 activations (onnxruntime's CPU form), "
                f"which TensorRT cannot build; make a symmetric one with `clipfsar calibrate {bundle.root} "
                f"--precision int8 --int8 static`, or use --backend cpu")
        if method.startswith("int8-dynamic") and backend in GPU_BACKENDS:
            raise PrecisionUnavailableError(
                f"the int8 variant of {n} in {bundle.root} is dynamic quantization (MatMulInteger), which only "
                f"onnxruntime's CPU provider runs, not backend '{backend}'; use --backend cpu, or make a Q/DQ "
                f"variant with `clipfsar calibrate {bundle.root} --precision int8 --int8 static`")
    if precision == "auto":
        log.info("precision auto on %s: %s", backend, ", ".join(f"{n} {p}" for n, p in chosen.items()))
    return chosen
