"""``precision auto`` on OpenVINO: per graph, the fastest precision the report measured on OpenVINO and found
within the accuracy bound.

``clipfsar calibrate`` (calib/) measures each variant on the backend that will run it and records it in the
variant's report (``backend``); bf16 has no file (the fp32 graph at bf16 inference precision) and its report is in
the manifest's ``precision_report["execution_precisions"]``. A precision is a candidate for a graph when:
it was measured on OpenVINO, the end-to-end check ran and did not flag it (``precision_report["variants"][p]
["flagged"]`` false), and bf16 only where this CPU has BF16. Among the candidates the one with the largest
measured ``speedup`` over fp32 (side by side, same run) wins; fp32 when none is faster.

A bundle calibrated on OpenVINO and run on onnxruntime's CPU (``--backend cpu``) runs fp32: its latencies say
nothing about onnxruntime (``calibrate --backend cpu`` measures there).

Example:
    >>> openvino_choice(Bundle.open("bundle/"), ["image_encoder", "query_head"], "openvino")
    {'image_encoder': 'int8', 'query_head': 'fp32'}
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

log = logging.getLogger(__name__)

BF16 = "bf16"


def measured_on(bundle) -> str:
    """The backend the bundle's variants were measured on (``cpu`` for reports that predate the field)."""
    return bundle.manifest.precision_report.get("backend", "cpu")


def _eligible(bundle, precision: str) -> bool:
    entry = bundle.manifest.precision_report.get("variants", {}).get(precision, {})
    return entry.get("flagged") is False


def candidates(bundle, graph: str) -> Dict[str, float]:
    """Precision -> measured speedup over fp32 on OpenVINO, for the precisions ``auto`` may pick for ``graph``."""
    from clipfsar.runtime.engines.openvino_backend import has_bf16
    out: Dict[str, float] = {}
    for p, v in bundle.manifest.graphs[graph].variants.items():
        if v.report.get("backend") == "openvino" and _eligible(bundle, p):
            out[p] = float(v.report.get("speedup", 0.0))
    bf16 = bundle.manifest.precision_report.get("execution_precisions", {}).get(graph, {}).get(BF16)
    if bf16 and bf16.get("backend") == "openvino" and _eligible(bundle, BF16) and has_bf16("CPU"):
        out[BF16] = float(bf16.get("speedup", 0.0))
    return out


def openvino_choice(bundle, graphs: Sequence[str], backend: str) -> Dict[str, str]:
    """Graph -> precision for ``auto`` on ``backend`` (``openvino``, or ``cpu`` for a bundle measured on OpenVINO)."""
    if backend != "openvino":
        log.info("bundle %s was calibrated on OpenVINO: on %s its variants are unmeasured, fp32 runs (measure them "
                 "with `clipfsar calibrate --backend cpu`)", bundle.root, backend)
        return {n: "fp32" for n in graphs}
    if measured_on(bundle) != "openvino" and any(bundle.manifest.graphs[n].variants for n in graphs):
        log.warning("bundle %s was calibrated on onnxruntime: its variants' speed on OpenVINO is unmeasured, fp32 "
                    "runs; measure them with `clipfsar calibrate %s --data ...` (OpenVINO by default), or run "
                    "--backend cpu", bundle.root, bundle.root)
    chosen = {}
    for n in graphs:
        c = {p: s for p, s in candidates(bundle, n).items() if s > 1.0}
        chosen[n] = max(c, key=c.get) if c else "fp32"
    return chosen


def bf16_problem(backend: str) -> Optional[str]:
    """Why ``--precision bf16`` cannot run on ``backend`` here (None when it can)."""
    from clipfsar.runtime.engines.openvino_backend import device_facts, has_bf16
    if backend != "openvino":
        return (f"--precision bf16 runs the fp32 graph at bf16 inference precision, which only OpenVINO does; use "
                f"--backend openvino (backend here: {backend})")
    if not has_bf16("CPU"):
        return (f"--precision bf16: this CPU ({device_facts('CPU')['device_name']}) has no BF16 (AVX-512 BF16 or "
                f"AMX); use --precision int8 or fp32")
    return None


def bf16_choice(graphs: Sequence[str]) -> Dict[str, str]:
    """``--precision bf16``: the encoders at bf16 on OpenVINO, the heads fp32 (see :func:`bf16_problem`)."""
    return {n: BF16 if n in ("image_encoder", "text_encoder") else "fp32" for n in graphs}
