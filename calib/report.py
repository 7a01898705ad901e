"""The precision report: how far each variant is from fp32 (held-out frames), its latency, and the table.

Per graph and variant (stored in the variant's manifest entry): output cosine to fp32 (mean and minimum over
held-out rows), max abs difference, median latency of fp32 and the variant side by side on the machine that made
them (provider and threads recorded) and their ratio ``speedup`` = fp32 time / variant time. End to end (the
manifest's ``precision_report``): few-shot accuracy on seeded episodes with each precision vs fp32, the top-1
agreement rate, the drop in points and ``flagged`` when it exceeds ``max_drop`` (``auto`` never picks a flagged
or unmeasured variant).

Example:
    >>> compare_outputs(ref_session, variant_session, [{"images": x}])["cosine_min"]
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List

import numpy as np


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-30), 1.0)


def compare_outputs(ref, variant, batches: List[Dict[str, np.ndarray]]) -> Dict:
    """Cosine (per output row) and max abs difference of ``variant`` vs ``ref`` (two ``OnnxGraph``) on ``batches``.

    Returns ``cosine_mean``, ``cosine_min``, ``max_abs_diff`` (worst over outputs), ``rows`` and ``outputs``
    (the same per output name).
    """
    per: Dict[str, Dict[str, list]] = {}
    for inputs in batches:
        a, b = ref.run(**inputs), variant.run(**inputs)
        for name in a:
            d = per.setdefault(name, {"cos": [], "diff": []})
            d["cos"].append(_cosines(a[name], b[name]))
            d["diff"].append(float(np.abs(a[name].astype(np.float64) - b[name]).max()))
    outputs = {n: {"cosine_mean": float(np.concatenate(d["cos"]).mean()),
                   "cosine_min": float(np.concatenate(d["cos"]).min()),
                   "max_abs_diff": max(d["diff"])} for n, d in per.items()}
    return {"cosine_mean": min(o["cosine_mean"] for o in outputs.values()),
            "cosine_min": min(o["cosine_min"] for o in outputs.values()),
            "max_abs_diff": max(o["max_abs_diff"] for o in outputs.values()),
            "rows": int(sum(len(c) for c in next(iter(per.values()))["cos"])), "outputs": outputs}


def median_latency_ms(graphs: Dict[str, object], inputs: Dict[str, np.ndarray], repeats: int = 20) -> Dict[str, float]:
    """Median ms per call of each graph on the same ``inputs``, measured interleaved (one warm-up call each)."""
    times: Dict[str, list] = {k: [] for k in graphs}
    for g in graphs.values():
        g.run(**inputs)
    for _ in range(repeats):
        for k, g in graphs.items():
            t0 = time.perf_counter()
            g.run(**inputs)
            times[k].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def format_report(manifest) -> str:
    """The precision report of a bundle's manifest as a text table."""
    rows = [f"{'graph':<14}{'variant':<8}{'cos mean':>10}{'cos min':>10}{'max|diff|':>11}{'fp32 ms':>9}"
            f"{'ms':>8}{'speedup':>9}  method"]
    for name, g in manifest.graphs.items():
        for p, v in g.variants.items():
            r = v.report
            if "cosine_mean" not in r:
                rows.append(f"{name:<14}{p:<8}{'(not measured: ' + r.get('skipped', '?') + ')':>57}  {v.method}")
                continue
            rows.append(f"{name:<14}{p:<8}{r['cosine_mean']:>10.5f}{r['cosine_min']:>10.5f}{r['max_abs_diff']:>11.2e}"
                        f"{r['latency_ms_fp32']:>9.2f}{r['latency_ms']:>8.2f}{r['speedup']:>8.2f}x  {v.method}")
    rep = manifest.precision_report
    for name, by_precision in rep.get("execution_precisions", {}).items():  # bf16: no file, the fp32 graph
        for p, r in by_precision.items():
            if "cosine_mean" in r:
                rows.append(f"{name:<14}{p:<8}{r['cosine_mean']:>10.5f}{r['cosine_min']:>10.5f}"
                            f"{r['max_abs_diff']:>11.2e}{r['latency_ms_fp32']:>9.2f}{r['latency_ms']:>8.2f}"
                            f"{r['speedup']:>8.2f}x  the fp32 graph at {p} inference precision (OpenVINO)")
    if rep:
        rows.append(f"latency: {rep.get('provider', '?')}, {rep.get('threads', 0) or 'default'} threads, "
                    f"{rep.get('machine', '?')}")
        ep = rep.get("episodes")
        if ep:
            rows.append(f"end to end: {ep['way']}-way {ep['shot']}-shot, {ep['episodes']} episodes on "
                        f"'{ep['split']}' (seed {ep['seed']}), max drop {rep['max_drop']} points")
            for p, v in rep.get("variants", {}).items():
                flag = "  FLAGGED (auto never picks it)" if v.get("flagged") else ""
                agree = f", top-1 agreement {100 * v['agreement']:.1f}%" if "agreement" in v else ""
                drop = f", drop {v['drop_points']:+.2f} pts" if "drop_points" in v else ""
                rows.append(f"  {p:<5} accuracy {v['accuracy']:6.2f}{drop}{agree}{flag}")
        else:
            rows.append("end to end: not measured (no labelled split given: --split); auto will not pick these "
                        "variants")
    return "\n".join(rows)
