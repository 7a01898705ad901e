"""``calibrate_bundle``: make fp16/int8 variants of a bundle's graphs, measure them, add them atomically.

Which variants: fp16 of every graph (LayerNorm, Softmax, reductions, OTAM and fusion stay fp32: calib/fp16.py);
int8 of the two encoders (image: dynamic for ViTs, static Q/DQ calibrated on real frames for CNNs -- uint8 form for
the CPU by default, symmetric int8 for TensorRT with ``static`` --, or as asked;
text: dynamic). The heads stay fp32 in the int8 bundle: they are a few small MatMuls around OTAM's soft-min,
well under a millisecond, where int8 saves nothing and costs accuracy.

Example:
    >>> report = calibrate_bundle(Path("bundle"), Path("data"), ("fp16", "int8"), split="val")
"""
from __future__ import annotations

import datetime
import logging
import platform
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.edit import NewVariant, add_variants
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.engines.backends import OnnxGraph, create_graph

from .data import collect_frames
from .fp16 import to_fp16
from .int8 import int8_mode_for, quantize_dynamic_graph, quantize_static_graph
from .openvino import BF16_GRAPHS, calibration_backend, default_precisions
from .report import compare_outputs, median_latency_ms

log = logging.getLogger(__name__)
INT8_GRAPHS = ("image_encoder", "text_encoder")


def _text_tokens(bundle: Bundle) -> Optional[np.ndarray]:
    """Tokens of the bundle's class prompts (the bundle's own tokenizer, else open_clip's), or None without one."""
    prompts = [bundle.manifest.model.prompt.format(n) for n in bundle.store.class_names]
    try:
        if bundle.manifest.tokenizer:
            from clipfsar.runtime.teaching.tokenizer import ClipTokenizer
            return ClipTokenizer.from_manifest(bundle.root, bundle.manifest.tokenizer)(prompts)
        from clipfsar.calib.bundle_eval import _tokens
        return _tokens(bundle, list(bundle.store.class_names))
    except Exception as e:  # no tokenizer here: the text encoder's variants are made but not measured
        log.warning("text encoder variants not measured: no tokenizer (%s)", e)
        return None


def _held_out_inputs(bundle: Bundle, held: np.ndarray, threads: int) -> Dict[str, list]:
    """Per graph, the held-out input batches: frames for the image encoder, their fp32 features for the heads."""
    facts, store = bundle.manifest.model, bundle.store
    enc = OnnxGraph(bundle.graph_path("image_encoder"), "cpu", threads=threads)
    frames = [{"images": held[i:i + 8]} for i in range(0, len(held), 8)]
    feats = np.concatenate([enc.run(**b)["features"] for b in frames]).reshape(-1, facts.frames, facts.embed_dim)
    text = store.text_features[np.arange(len(feats)) % len(store.text_features)]
    out = {"image_encoder": frames,
           "support_head": [{"support": feats[:, None], "text": text}],
           "query_head": [{"query": feats, "prototypes": store.prototypes, "text": store.text_features}]}
    tokens = _text_tokens(bundle)
    if tokens is not None:
        out["text_encoder"] = [{"tokens": tokens}]
    return out


def _make_variants(bundle: Bundle, precisions: Sequence[str], work: Path, calib: np.ndarray, method: str,
                   int8_mode: str, backend: str = "cpu") -> Dict[str, Dict[str, NewVariant]]:
    made: Dict[str, Dict[str, NewVariant]] = {}
    for name in bundle.manifest.graphs:
        src = bundle.graph_path(name)
        if "bf16" in precisions and name in BF16_GRAPHS:  # no file: the fp32 graph at bf16 inference precision
            made.setdefault(name, {})["bf16"] = NewVariant(src, "bf16 (OpenVINO inference precision on the fp32 graph)")
        if "fp16" in precisions:
            dst = work / f"{name}.fp16.onnx"
            made.setdefault(name, {})["fp16"] = NewVariant(dst, to_fp16(src, dst, name))
        if "int8" in precisions and name in INT8_GRAPHS:
            dst = work / f"{name}.int8.onnx"
            mode = int8_mode_for(bundle.manifest.model.arch, int8_mode, backend) if name == "image_encoder" else \
                "dynamic"
            if mode.startswith("static"):
                how = quantize_static_graph(src, dst, [{"images": calib[i:i + 8]} for i in range(0, len(calib), 8)],
                                            method, u8=mode == "static-u8")
                if mode == "static":  # the TensorRT form: checked against TensorRT's Q/DQ rules before it is added
                    from clipfsar.runtime.engines.trt_qdq import qdq_problems
                    problems = qdq_problems(dst)
                    if problems:
                        raise ClipFsarError(f"the int8 Q/DQ variant of {name} breaks TensorRT's rules (nothing was "
                                            f"added to {bundle.root}): {'; '.join(problems[:3])}")
            else:
                how = quantize_dynamic_graph(src, dst)
            made.setdefault(name, {})["int8"] = NewVariant(dst, how)
        log.info("made %s variants of %s", "/".join(made.get(name, {})) or "no", name)
    return made


def _measure(bundle: Bundle, made: Dict[str, Dict[str, NewVariant]], held: Dict[str, list],
             threads: int, backend: str = "cpu") -> Dict[str, Dict[str, NewVariant]]:
    """The same variants with their reports (cosine on held-out inputs, side-by-side latency), measured on
    ``backend`` (``cpu``: onnxruntime; ``openvino``), the one that will run them."""
    out: Dict[str, Dict[str, NewVariant]] = {}
    for name, variants in made.items():
        ref = create_graph(bundle.graph_path(name), backend, None, threads, spec=bundle.manifest.graphs[name])
        for p, v in variants.items():
            if name not in held:
                report = {"skipped": "no inputs (no tokenizer)"}
            else:
                var = create_graph(v.source, backend, None, threads, precision=p, spec=bundle.manifest.graphs[name])
                if getattr(var, "served_precision", p) != p:  # OpenVINO could not compile it: fp32 ran (logged)
                    out.setdefault(name, {})[p] = NewVariant(v.source, v.method, {"skipped": f"{backend} cannot "
                                                                                  f"compile it"})
                    continue
                report = compare_outputs(ref, var, held[name])
                first = {k: a[:1] if name == "image_encoder" else a for k, a in held[name][0].items()}  # batch 1
                lat = median_latency_ms({"fp32": ref, p: var}, first)
                report.update(latency_ms_fp32=lat["fp32"], latency_ms=lat[p], speedup=lat["fp32"] / lat[p],
                              latency_batch=int(len(next(iter(first.values())))), provider=var.providers[0],
                              threads=threads, backend=backend)
            out.setdefault(name, {})[p] = NewVariant(v.source, v.method, report)
            log.info("%s %s: %s", name, p, {k: round(x, 5) for k, x in report.items() if isinstance(x, float)})
    return out


def calibrate_bundle(bundle_dir: Path, data: Path, precisions: Sequence[str] = ("fp16", "int8"),
                     method: str = "minmax", frames: int = 512, holdout: int = 64, seed: int = 0,
                     split: Optional[str] = None, int8_mode: str = "auto", max_drop: float = 1.0,
                     episodes: int = 1000, way: int = 5, shot: int = 1, threads: int = 0,
                     backend: str = "auto") -> Bundle:
    """Add ``precisions`` variants to the bundle at ``bundle_dir`` with their report; returns the reopened bundle.

    Args:
        data: a folder of videos, or a dataset root (then ``split`` names ``splits/<split>.txt``).
        method: static int8 calibration: ``minmax``, ``entropy`` or ``percentile``.
        frames, holdout, seed: calibration and held-out frame counts (different clips), sampling seed.
        split: labelled split for calibration frames and the end-to-end episodes (none: accuracy not measured).
        int8_mode: ``auto`` (dynamic for ViTs, static-u8 for CNNs), ``dynamic``, ``static`` (TensorRT) or
            ``static-u8`` (CPU).
        max_drop: accuracy points a variant may lose before it is flagged.
        precisions: ``fp16``, ``int8``, ``bf16`` (OpenVINO on a CPU with BF16; no file: the fp32 graph at bf16
            inference precision), or ``auto`` (calib/openvino.py: fp16 and int8, and bf16 where it runs).
        backend: where the variants are measured, the one that will run them: ``cpu`` (onnxruntime), ``openvino``,
            or ``auto`` (OpenVINO on an x86 CPU where it is installed, else onnxruntime; calib/openvino.py). On
            OpenVINO the image encoder's int8 ``auto`` is the symmetric Q/DQ form, the one it runs fastest.
    Raises:
        DatasetError: too few readable frames. BundleError: invalid bundle. ClipFsarError: unknown precision,
        ``max_drop`` not finite and >= 0, ``episodes`` < 1.
    """
    backend = calibration_backend(backend)
    precisions = default_precisions(backend) if tuple(precisions) == ("auto",) else tuple(precisions)
    bad = [p for p in precisions if p not in ("fp16", "int8", "bf16")]
    if bad or not precisions:
        raise ClipFsarError(f"--precision takes fp16, int8 and/or bf16 (fp32 is always there), got "
                            f"{','.join(precisions)}")
    if "bf16" in precisions and "bf16" not in default_precisions(backend):
        raise ClipFsarError(f"--precision bf16 needs OpenVINO on a CPU with BF16 (backend here: {backend}); "
                            f"leave it out or pass --backend openvino on such a CPU")
    if not 0 <= max_drop < float("inf"):  # NaN fails too: it would switch the flag off
        raise ClipFsarError(f"--max-drop must be a finite number of points >= 0, got {max_drop}")
    if episodes < 1:
        raise ClipFsarError(f"--episodes must be >= 1, got {episodes}")
    bundle = Bundle.open(Path(bundle_dir))
    sets = collect_frames(Path(data), bundle.manifest.model, frames, holdout, seed, split)
    with tempfile.TemporaryDirectory(prefix="clipfsar-calib-") as work:
        made = _make_variants(bundle, precisions, Path(work), sets.calibration.pixels, method, int8_mode, backend)
        measured = _measure(bundle, made, _held_out_inputs(bundle, sets.held_out.pixels, threads), threads, backend)
        executed = {n: {p: v.report for p, v in vs.items() if p == "bf16"} for n, vs in measured.items()}
        measured = {n: {p: v for p, v in vs.items() if p != "bf16"} for n, vs in measured.items()}
        report = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {_cores()} cores",
                  "provider": "OpenVINO CPU" if backend == "openvino" else "CPUExecutionProvider",
                  "backend": backend, "threads": threads, "max_drop": max_drop,
                  # per graph, the execution precisions that have no file (bf16): their cosine and latency
                  "execution_precisions": {n: r for n, r in executed.items() if r},
                  "calibration": {"data": str(data), "split": split, "seed": seed, "method": method,
                                  "int8_mode": int8_mode, "frames": len(sets.calibration.pixels),
                                  "clips": sets.calibration.clips, "held_out_frames": len(sets.held_out.pixels),
                                  "held_out_clips": sets.held_out.clips,
                                  "unreadable": [{"clip": c, "reason": r} for c, r in sets.unreadable]},
                  "episodes": None, "variants": {}}
        # variants first (a kill after this leaves them listed but unmeasured end to end: auto skips them)
        bundle = add_variants(Path(bundle_dir), measured, precision_report=report)
    if split is not None:
        report = _end_to_end(Path(bundle_dir), data, split, precisions, report, way, shot, episodes, seed, max_drop,
                             backend)
        bundle = add_variants(Path(bundle_dir), {}, precision_report=report)
    return bundle


def _end_to_end(bundle_dir: Path, data: Path, split: str, precisions, report: Dict, way: int, shot: int,
                episodes: int, seed: int, max_drop: float, backend: str = "cpu") -> Dict:
    from clipfsar.calib.bundle_eval import evaluate_bundle
    runs = {p: evaluate_bundle(bundle_dir, data, split, way, shot, episodes, seed, backend=backend, precision=p,
                               predictions=True) for p in ("fp32",) + tuple(precisions)}
    ref = np.array(runs["fp32"]["predictions"])
    variants = {"fp32": {"accuracy": runs["fp32"]["accuracy"], "ci95": runs["fp32"]["ci95"], "flagged": False,
                         "graphs": runs["fp32"]["precisions"]}}
    for p in precisions:
        r = runs[p]
        drop = runs["fp32"]["accuracy"] - r["accuracy"]
        variants[p] = {"accuracy": r["accuracy"], "ci95": r["ci95"], "drop_points": drop,
                       "agreement": float((np.array(r["predictions"]) == ref).mean()), "flagged": drop > max_drop,
                       "graphs": r["precisions"]}
        if drop > max_drop:
            log.warning("%s loses %.2f accuracy points (> --max-drop %.2f): flagged, auto never picks it",
                        p, drop, max_drop)
    return {**report, "episodes": {"way": way, "shot": shot, "episodes": episodes, "seed": seed, "split": split,
                                   "branch": "fewshot"}, "variants": variants}


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
