"""Benchmark: which int8 form of the image encoder runs fastest on this x86 CPU, and how close it is to the GEMM limit.

Issue 21 asks whether another int8 form beats the symmetric Q/DQ graph ``calibrate`` makes. For one bundle made by
benchmarks/cpu_bundles.py, the image encoder at batch 1, ``--threads`` threads, median of ``--runs`` interleaved
calls in one process:

- OpenVINO on the bundle's int8 Q/DQ graph (what ``--backend auto --precision auto`` runs);
- OpenVINO on NNCF's post-training quantization of the fp32 graph (``nncf.quantize``; ``ModelType.TRANSFORMER``
  with SmoothQuant for ViTs, the performance preset), calibrated on the same kind of frames;
- OpenVINO on NNCF's int8 weight compression with dynamic activation quantization (``DYNAMIC_QUANTIZATION_GROUP_SIZE``);
- onnxruntime on its own fast CPU Q/DQ form (uint8 activations, ``calibrate --int8-mode static-u8``) and on
  ``quantize_dynamic``'s graph.

Then OpenVINO's per-node profile of the Q/DQ graph: the time in its int8 FullyConnected/Convolution kernels and the
GOP/s they reach (the graph's MatMul/Conv work counted from its shapes), beside one MatMul at ViT-B-16's MLP shape
on onnxruntime's MatMulInteger (the machine's int8 GEMM limit as benchmarks/cpu_backends.py measures it).

NNCF is not a dependency of clip-fsar (``pip install nncf`` to include its rows; they are skipped without it).

    .venv/bin/python benchmarks/int8_forms.py --bundle bench_out/cpu/ViT-B-16_bundle --data bench_out/cpu/data
        [--runs 9] [--threads 2]
        [--calib-frames 32] [--out bench_out/cpu/int8_forms.json]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _ov_fn(req):
    return lambda a: np.array(req.infer({0: a})[0])


def _ov_request(model, threads: int, extra: dict | None = None, profile: bool = False):
    import openvino as ov
    cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", **(extra or {})}
    if profile:
        cfg["PERF_COUNT"] = True
    return ov.Core().compile_model(model, "CPU", cfg).create_infer_request()


def _runner(kind: str, path: Path, threads: int):
    """A function running one batch through ``path`` on ``kind`` (``ov``, ``ov-dynq`` or ``ort``)."""
    if kind == "ort":
        s, name = _ort_session(path, threads)
        return lambda a: s.run(None, {name: a})[0]
    extra = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 32} if kind == "ov-dynq" else {}
    return _ov_fn(_ov_request(str(path), threads, extra))


def _outputs(kind: str, path: Path, frames: np.ndarray, threads: int) -> np.ndarray:
    run = _runner(kind, path, threads)
    return np.concatenate([run(frames[i:i + 1]) for i in range(len(frames))])


def time_one(kind: str, path: Path, x: np.ndarray, threads: int, runs: int) -> list:
    """Seconds of ``runs`` calls after two warm-up calls, in this process alone."""
    run = _runner(kind, path, threads)
    run(x)
    run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return times


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return s, name


def gemm_work_gop(onnx_path: Path, size: int) -> float:
    """GOP (2 x multiply-adds) of the graph's MatMul and Convolution nodes at batch 1, from OpenVINO's shapes."""
    import openvino as ov
    model = ov.Core().read_model(str(onnx_path))
    model.reshape({model.inputs[0].any_name: [1, 3, size, size]})
    total = 0.0
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind not in ("MatMul", "Convolution"):
            continue
        out = [int(d) for d in op.get_output_partial_shape(0).to_shape()]
        w = [int(d) for d in op.get_input_partial_shape(1).to_shape()]
        if kind == "MatMul":
            a = [int(d) for d in op.get_input_partial_shape(0).to_shape()]
            k = a[-2] if op.get_transpose_a() else a[-1]
            total += 2.0 * float(np.prod(out)) * k
        else:  # output elements x (input channels x kernel area)
            total += 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
    return total / 1e9


def qdq_profile(req, x, runs: int) -> dict:
    """Per-kind time of one profiled call (the median call of ``runs``) of OpenVINO's compiled Q/DQ graph."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t)
    by_kind = collections.defaultdict(float)
    for p in req.profiling_info:
        by_kind[f"{p.node_type} ({p.exec_type})"] += p.real_time.total_seconds() * 1000
    top = sorted(by_kind.items(), key=lambda kv: -kv[1])[:8]
    gemm = sum(v for k, v in by_kind.items() if k.startswith(("FullyConnected", "Convolution", "MatMul")))
    return {"ms": statistics.median(times) * 1000, "gemm_ms": gemm, "top": [[k, round(v, 2)] for k, v in top]}


def matmul_integer_limit(threads: int, runs: int, m: int = 197, k: int = 768, n: int = 3072) -> float:
    """GOP/s of onnxruntime's MatMulInteger (uint8 x int8) at ``m x k x n`` (ViT-B-16's MLP, one frame), alone.

    Not cpu_backends.gemm_limits: that compiles OpenVINO's GEMMs in the same process, and the same MatMulInteger
    measured 587 GOP/s there against 804-884 alone (2026-12-07, one try each, the machine not quite idle)."""
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "mmi", [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
                              [helper.make_tensor("b", TensorProto.INT8, [k, n],
                                                  np.random.default_rng(0).integers(-127, 127, (k, n)).astype(np.int8)
                                                  .tobytes(), raw=True)])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mmi.onnx"
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # what every onnxruntime since 1.10 reads
        onnx.save(model, str(path))
        s, name = _ort_session(path, threads)
        a = np.random.default_rng(1).integers(0, 255, (m, k)).astype(np.uint8)
        for _ in range(3):
            s.run(None, {name: a})
        ts = []
        for _ in range(runs * 5):
            t = time.perf_counter()
            s.run(None, {name: a})
            ts.append(time.perf_counter() - t)
    return 2.0 * m * k * n / statistics.median(ts) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=Path("bench_out/cpu/ViT-B-16_bundle"))
    ap.add_argument("--data", type=Path, default=Path("bench_out/cpu/data"), help="the clips calibrate used")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-frames", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--time-one", nargs=3, metavar=("KIND", "GRAPH", "INPUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.time_one:
        kind, graph, inp = args.time_one
        print(json.dumps(time_one(kind, Path(graph), np.load(inp), args.threads, args.runs)))
        return

    import openvino as ov
    from cpu_backends import _cos  # this folder's cosine of rows

    from clipfsar.calib.data import collect_frames
    from clipfsar.calib.int8 import quantize_dynamic_graph, quantize_static_graph
    from clipfsar.runtime.bundle.reader import Bundle

    b = Bundle.open(args.bundle)
    arch, size = b.manifest.model.arch, int(b.manifest.model.image_size)
    fp32, qdq = b.graph_path("image_encoder"), b.graph_path("image_encoder", "int8")
    sets = collect_frames(args.data, b.manifest.model, frames=args.calib_frames, holdout=16, seed=1)
    calib = [sets.calibration.pixels[i:i + 1] for i in range(len(sets.calibration.pixels))]
    held = sets.held_out.pixels
    x = np.ascontiguousarray(held[:1])
    load_start = os.getloadavg()[0]

    work = Path(tempfile.mkdtemp(prefix="clipfsar-int8-forms-"))
    forms = {"OpenVINO on our int8 Q/DQ (runtime auto)": ("ov", qdq)}
    try:
        import nncf
        transformer = not arch.upper().startswith("RN")
        t0 = time.perf_counter()
        ptq = nncf.quantize(ov.Core().read_model(str(fp32)), nncf.Dataset(calib),
                            preset=nncf.QuantizationPreset.PERFORMANCE,
                            model_type=nncf.ModelType.TRANSFORMER if transformer else None, subset_size=len(calib))
        print(f"nncf.quantize took {time.perf_counter() - t0:.1f} s")
        ov.save_model(ptq, str(work / "ptq.xml"))
        wc = nncf.compress_weights(ov.Core().read_model(str(fp32)), mode=nncf.CompressWeightsMode.INT8_SYM)
        ov.save_model(wc, str(work / "wc.xml"))
        forms["OpenVINO on NNCF quantize (PTQ)"] = ("ov", work / "ptq.xml")
        forms["OpenVINO on NNCF int8 weights + dynamic quantization"] = ("ov-dynq", work / "wc.xml")
    except ImportError:
        print("nncf is not installed: its rows are skipped (pip install nncf)")
    quantize_static_graph(fp32, work / "u8.onnx", [{"images": f} for f in calib], "minmax", u8=True)
    quantize_dynamic_graph(fp32, work / "dyn.onnx")
    forms.update({"onnxruntime fp32 (the reference)": ("ort", fp32),
                  "onnxruntime on its uint8 Q/DQ (static-u8)": ("ort", work / "u8.onnx"),
                  "onnxruntime int8 dynamic": ("ort", work / "dyn.onnx")})
    ref = _outputs("ort", fp32, held, args.threads)
    cos = {k: float(_cos(ref, _outputs(kind, path, held, args.threads)).min()) for k, (kind, path) in forms.items()}

    np.save(work / "x.npy", x)
    times = {k: [] for k in forms}
    for _ in range(3):  # each form alone in a fresh process, as a deployment runs it, three rounds
        for k, (kind, path) in forms.items():
            out = subprocess.run([sys.executable, __file__, "--time-one", kind, str(path), str(work / "x.npy"),
                                  "--threads", str(args.threads), "--runs", str(max(1, args.runs // 3))],
                                 check=True, capture_output=True, text=True).stdout
            times[k] += json.loads(out.strip().splitlines()[-1])
    rows = [{"form": k, "ms": round(statistics.median(v) * 1000, 1), "cosine_min": round(cos[k], 5)}
            for k, v in times.items()]

    print(json.dumps(rows, indent=1), flush=True)
    work_gop = gemm_work_gop(fp32, size)
    profile = qdq_profile(_ov_request(str(qdq), args.threads, profile=True), x, args.runs)
    limit = matmul_integer_limit(args.threads, args.runs)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "arch": arch, "threads": args.threads, "runs": args.runs,
        "load_start": load_start, "load_end": os.getloadavg()[0], "rows": rows,
        "gemm_work_gop": round(work_gop, 2),
        "qdq_profile": {**profile, "gemm_gops": round(work_gop / profile["gemm_ms"] * 1000, 1)},
        "onnxruntime_matmulinteger_gops": round(limit, 1),
        "floor_ms_at_limit": round(work_gop / limit * 1000, 1),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
