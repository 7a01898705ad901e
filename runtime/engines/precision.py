"""Which precision variant of each graph to run: ``fp32``, ``fp16``, ``int8`` or ``auto`` (from the bundle's report).

``auto``: on the CPU the int8 variant of a graph where the precision report shows it is faster than fp32 and the
int8 bundle within the accuracy bound (``flagged`` false), else fp32; on a GPU backend the fp16 variant where the
fp16 bundle is within the bound, else fp32 (the report's int8 latencies are from the CPU that made them, so they
say nothing about a GPU). An explicit ``fp16``/``int8`` runs that variant of every graph that has one and fp32 for
the rest (the heads usually stay fp32); when none of the graphs that will run has that precision, it is an error.
Only the graphs that run decide (``run`` never executes the text encoder). On TensorRT, an int8 variant it cannot
build falls back to fp32 with a warning, unless it is the only int8 graph or the user named the graph.

Example:
    >>> choose_precisions(Bundle.open("bundle/"), "auto", "cpu")
    {'image_encoder': 'int8', 'text_encoder': 'fp32', 'support_head': 'fp32', 'query_head': 'fp32'}
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

from clipfsar.runtime.base.errors import BundleError, ClipFsarError
from clipfsar.runtime.bundle.reader import PRECISIONS, Bundle
from clipfsar.runtime.engines.openvino_precision import bf16_choice, bf16_problem, measured_on, openvino_choice

log = logging.getLogger(__name__)

CHOICES = ("auto",) + PRECISIONS + ("bf16",)  # bf16: the fp32 graph at bf16 on OpenVINO (openvino_precision.py)
GPU_BACKENDS = ("trt", "tensorrt", "cuda")


class PrecisionUnavailableError(ClipFsarError):
    """The precision asked for cannot run on the chosen backend."""


def _eligible(bundle: Bundle, precision: str) -> bool:
    """Whether the report measured ``precision`` end to end and found it within the accuracy bound."""
    entry = bundle.manifest.precision_report.get("variants", {}).get(precision, {})
    return entry.get("flagged") is False


def trt_int8_problem(bundle: Bundle, graph: str, backend: str) -> Optional[str]:
    """Why ``backend`` cannot run the int8 variant of ``graph`` (None when it can), from the variant's method.

    Dynamic quantization (MatMulInteger) runs on onnxruntime's CPU provider only; the uint8 Q/DQ CPU form is
    refused by TensorRT's parser (runtime/engines/trt_qdq.py checks the graph itself before a build).
    """
    method = bundle.manifest.graphs[graph].variants["int8"].method
    if method.startswith("int8-qdq-u8") and backend in ("trt", "tensorrt"):
        return "Q/DQ with uint8 activations (onnxruntime's CPU form), which TensorRT cannot build"
    if method.startswith("int8-dynamic") and backend in GPU_BACKENDS:
        return (f"dynamic quantization (MatMulInteger), which only onnxruntime's CPU provider runs, not backend "
                f"'{backend}'")
    return None


def _best_backend() -> str:
    from clipfsar.runtime.engines.backends import BackendUnavailableError, usable_backends
    usable = usable_backends()
    if not usable:
        raise BackendUnavailableError("no backend can run here: onnxruntime is not installed and native TensorRT "
                                      "is not usable; pip install onnxruntime (or see docs/tensorrt.md)")
    return usable[0]


def choose_precisions(bundle: Bundle, precision: str, backend: str, graphs: Optional[Sequence[str]] = None,
                      explicit: bool = False) -> Dict[str, str]:
    """Graph name -> the precision to run, for the graphs that will run.

    Only ``graphs`` decide: a text encoder that ``run`` never executes does not make ``--precision int8`` fail.
    With ``int8`` on a GPU backend, a graph whose int8 variant that backend cannot run (dynamic, or uint8 Q/DQ on
    TensorRT) runs fp32 with a warning, unless the graphs were named (``explicit``): then it is refused.

    Args:
        precision: ``auto``, ``fp32``, ``fp16`` or ``int8``.
        backend: the backend that will run the graphs (``auto`` is taken as the best usable one here).
        graphs: the graphs that will run (default: every graph of the bundle).
        explicit: the user named ``graphs`` (``clipfsar engine --graph``): a named graph never falls back.
    Raises:
        ClipFsarError: an unknown precision. BundleError: none of ``graphs`` has that precision (lists those they
        have). PrecisionUnavailableError: an int8 variant the backend cannot run, for a named graph or for every
        graph that has one (the message names the bundle, the graph and the way out). BackendUnavailableError:
        ``auto`` on a machine where nothing can run.
    """
    if precision not in CHOICES:
        raise ClipFsarError(f"unknown precision '{precision}'; choose one of {', '.join(CHOICES)}")
    graphs = list(graphs) if graphs else list(bundle.manifest.graphs)
    specs = bundle.manifest.graphs
    if backend == "auto":
        backend = _best_backend()
    if precision == "fp32":
        return {name: "fp32" for name in graphs}
    if precision == "bf16":
        why = bf16_problem(backend)
        if why:
            raise PrecisionUnavailableError(why)
        return bf16_choice(graphs)
    if precision in ("fp16", "int8"):
        if not any(precision in bundle.precisions(n) for n in graphs):
            have = sorted({p for n in graphs for p in bundle.precisions(n)}, key=PRECISIONS.index)
            raise BundleError(f"bundle {bundle.root} has no {precision} variant (it has {', '.join(have)}) of the "
                              f"graphs that run ({', '.join(graphs)}); make one with `clipfsar calibrate "
                              f"{bundle.root} --precision {precision}`")
        chosen = {n: precision if precision in bundle.precisions(n) else "fp32" for n in graphs}
    elif backend == "openvino" or (backend == "cpu" and measured_on(bundle) == "openvino"):
        chosen = openvino_choice(bundle, graphs, backend)  # the fastest measured on OpenVINO
    elif backend in GPU_BACKENDS:
        ok = _eligible(bundle, "fp16")
        chosen = {n: "fp16" if ok and "fp16" in bundle.precisions(n) else "fp32" for n in graphs}
    else:
        ok = _eligible(bundle, "int8")
        chosen = {n: "int8" if ok and "int8" in bundle.precisions(n)
                  and specs[n].variants["int8"].report.get("speedup", 0.0) > 1.0 else "fp32" for n in graphs}
    refused = {n: why for n, p in chosen.items() if p == "int8" for why in [trt_int8_problem(bundle, n, backend)]
               if why}
    fix = (f"make a TensorRT int8 variant with `clipfsar calibrate {bundle.root} --precision int8 --int8 static`, "
           f"run fp16/fp32, or use --backend cpu")
    for n, why in refused.items():
        if explicit or precision == "int8" and len(refused) == sum(p == "int8" for p in chosen.values()):
            raise PrecisionUnavailableError(f"bundle {bundle.root}: the int8 variant of {n} is {why}; {fix}")
        log.warning("bundle %s: the int8 variant of %s is %s: %s runs fp32", bundle.root, n, why, n)
        chosen[n] = "fp32"
    if precision == "auto":
        log.info("precision auto on %s: %s", backend, ", ".join(f"{n} {p}" for n, p in chosen.items()))
    return chosen
