"""Benchmark: the x86 CPU backends side by side -- the runtime's own choice vs PyTorch, onnxruntime and OpenVINO.

For each bundle made by benchmarks/cpu_bundles.py (random-init ViT-B-16 and RN50, exported and calibrated with
`clipfsar calibrate`'s defaults), the image encoder at batch 1 and 8, ``--threads`` threads, median of ``--runs``
interleaved calls in one process:

- PyTorch eager fp32 (the same random-init weights: the seed the checkpoint was made with);
- onnxruntime fp32, int8 dynamic (onnxruntime's quantize_dynamic: the CPU's best before OpenVINO), and on the
  bundle's symmetric int8 Q/DQ graph;
- OpenVINO, straight from its API (``compile_model`` with only the thread count and the latency hint): fp32, bf16
  on the fp32 graph, and on our int8 Q/DQ graph; for batch 8 also with the throughput hint (OpenVINO's best is
  the fastest of these);
- the runtime's own choice: ``Classifier.load(bundle, backend="auto", precision="auto")``'s image encoder.

Cosine to onnxruntime fp32 on held-out frames of synthetic clips; images/s; the machine's GEMM limits (onnxruntime
MatMul fp32 and MatMulInteger u8 x s8 at ViT-B-16's MLP shape, and OpenVINO's fp32/int8 MatMul) and ``uptime``
before and after.

    .venv/bin/python benchmarks/cpu_backends.py [--bundles bench_out/cpu] [--archs ViT-B-16 RN50] [--runs 9]
        [--threads 2] [--out bench_out/cpu/cpu_backends.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _cos(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _load():
    return os.getloadavg()[0]


def _ov(path: Path, threads: int, precision: str = "f32", hint: str = "LATENCY"):
    import openvino as ov
    cfg = {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
    compiled = ov.Core().compile_model(str(path), "CPU", cfg)
    req = compiled.create_infer_request()
    return lambda x: np.array(req.infer({0: x})[compiled.outputs[0]])


def _ort(path: Path, threads: int):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def _torch(arch: str, threads: int):
    import torch

    from clipfsar.export.graphs import ImageEncoder
    from clipfsar.train import create_model_and_transforms
    torch.set_num_threads(threads)
    torch.manual_seed(0)  # benchmarks/cpu_bundles.py's seed: the bundle's weights
    model, _ = create_model_and_transforms(arch, frames=8)
    enc = ImageEncoder(model.float().eval()).eval()

    def run(x):
        with torch.inference_mode():
            return enc(torch.from_numpy(x)).numpy()
    return run


def _interleaved(fns, x, runs: int):
    for f in fns.values():
        f(x)
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f(x)
            times[k].append(1000 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def gemm_limits(threads: int, runs: int, m: int = 1576, k: int = 768, n: int = 3072):
    """GFLOP/s (GOP/s) of one MatMul at ViT-B-16's MLP shape (batch 8 x 197 tokens, 768 -> 3072)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n)).astype(np.float32)
    wq = rng.integers(-127, 128, (k, n), dtype=np.int8)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        f32 = helper.make_model(helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [numpy_helper.from_array(w, "w")]),
            opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        i8 = helper.make_model(helper.make_graph(
            [helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "mmi",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])], [numpy_helper.from_array(wq, "w")]),
            opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        # OpenVINO's int8 GEMM: a symmetric Q/DQ MatMul (what it folds into its int8 kernels)
        scale = numpy_helper.from_array(np.array(0.02, np.float32), "s")
        zp = numpy_helper.from_array(np.array(0, np.int8), "z")
        qdq = helper.make_model(helper.make_graph(
            [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])], "qdq",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
            [numpy_helper.from_array(wq, "wq"), scale, zp]), opset_imports=[helper.make_opsetid("", 17)],
            ir_version=9)
        paths = {}
        for name, model in (("f32", f32), ("i8", i8), ("qdq", qdq)):
            paths[name] = Path(d) / f"{name}.onnx"
            onnx.save(model, str(paths[name]))
        x = rng.standard_normal((m, k)).astype(np.float32)
        xu = rng.integers(0, 256, (m, k), dtype=np.uint8)
        ops = 2 * m * k * n / 1e9
        fns = {"onnxruntime MatMul fp32": (_ort(paths["f32"], threads), x),
               "onnxruntime MatMulInteger u8s8": (_ort(paths["i8"], threads), xu),
               "OpenVINO MatMul fp32": (_ov(paths["f32"], threads), x),
               "OpenVINO MatMul bf16": (_ov(paths["f32"], threads, "bf16"), x),
               "OpenVINO int8 Q/DQ MatMul": (_ov(paths["qdq"], threads), x)}
        for name, (f, inp) in fns.items():
            ms = _interleaved({name: f}, inp, runs)[name]
            out[name] = {"ms": ms, "gops": ops / (ms / 1000)}
    return out


def arch_rows(bundle_dir: Path, arch: str, data: Path, threads: int, runs: int, torch_too: bool):
    from clipfsar.calib.data import collect_frames
    from clipfsar.calib.int8 import quantize_dynamic_graph
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.classify.classifier import Classifier

    b = Bundle.open(bundle_dir)
    sets = collect_frames(data, b.manifest.model, frames=8, holdout=16, seed=1)
    held = sets.held_out.pixels  # (16, 3, S, S) frames of other clips
    fp32 = b.graph_path("image_encoder")
    qdq = b.graph_path("image_encoder", "int8")
    method = b.manifest.graphs["image_encoder"].variants["int8"].method
    work = Path(tempfile.mkdtemp(prefix="cpu-bench-"))
    dyn = work / "dyn.onnx"
    quantize_dynamic_graph(fp32, dyn)
    clf = Classifier.load(bundle_dir, backend="auto", precision="auto", threads=threads, spinning=True)
    auto_name = f"runtime auto ({clf.backend} {clf.precisions['image_encoder']})"
    fns = {}
    if torch_too:
        fns["PyTorch eager fp32"] = _torch(arch, threads)
    fns.update({
        "onnxruntime fp32": _ort(fp32, threads),
        "onnxruntime int8 dynamic": _ort(dyn, threads),
        "onnxruntime int8 Q/DQ (ours)": _ort(qdq, threads),
        "OpenVINO fp32": _ov(fp32, threads),
        "OpenVINO bf16": _ov(fp32, threads, "bf16"),
        "OpenVINO int8 Q/DQ (ours)": _ov(qdq, threads),
        auto_name: lambda x: clf.image_encoder.run(images=x)["features"]})
    ref = np.concatenate([fns["onnxruntime fp32"](held[i:i + 8]) for i in range(0, len(held), 8)])
    cos = {k: float(_cos(ref, np.concatenate([f(held[i:i + 8]) for i in range(0, len(held), 8)])).min())
           for k, f in fns.items()}
    rows = []
    for batch in (1, 8):
        x = np.ascontiguousarray(held[:batch])
        load0 = _load()
        fb = dict(fns)
        if batch == 8:  # OpenVINO's throughput hint: its other configuration for a batch
            fb["OpenVINO int8 Q/DQ (ours), throughput hint"] = _ov(qdq, threads, hint="THROUGHPUT")
            fb["OpenVINO bf16, throughput hint"] = _ov(fp32, threads, "bf16", hint="THROUGHPUT")
        ms = _interleaved(fb, x, runs if batch == 1 else max(3, runs // 2))
        base = ms.get("PyTorch eager fp32")
        ov_best = min(v for k, v in ms.items() if k.startswith("OpenVINO"))
        for k, v in ms.items():
            rows.append({"arch": arch, "batch": batch, "what": k, "ms": v, "images_per_s": 1000 * batch / v,
                         "vs_torch": v / base if base else None, "vs_openvino_qdq": v / ms["OpenVINO int8 Q/DQ (ours)"],
                         "vs_openvino_best": v / ov_best, "cosine_min": cos.get(k, cos.get(k.split(",")[0])),
                         "load": [load0, _load()]})
        print(json.dumps({"arch": arch, "batch": batch, "ms": ms}), flush=True)
    rep = b.manifest.precision_report
    return rows, {"arch": arch, "int8_method": method, "auto": auto_name, "report_backend": rep.get("backend"),
                  "report_variants": rep.get("variants"), "execution_precisions": rep.get("execution_precisions")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", type=Path, default=Path("bench_out/cpu"))
    ap.add_argument("--archs", nargs="+", default=["ViT-B-16", "RN50"])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-gemm", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or a.bundles / "cpu_backends.json"
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    loads = {"start": os.getloadavg()}
    gemm = None if a.no_gemm else gemm_limits(a.threads, a.runs)
    if gemm:
        print(json.dumps({"gemm": gemm}), flush=True)
    rows, facts = [], []
    for arch in a.archs:
        r, f = arch_rows(a.bundles / f"{arch}_bundle", arch, a.bundles / "data", a.threads, a.runs, not a.no_torch)
        rows += r
        facts.append(f)
    loads["end"] = os.getloadavg()
    import onnxruntime
    import openvino
    result = {"started": started, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": a.threads,
              "runs": a.runs, "openvino": openvino.__version__, "onnxruntime": onnxruntime.__version__,
              "loadavg": loads, "gemm": gemm, "rows": rows, "bundles": facts}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\n| arch | batch | what | ms | images/s | vs PyTorch | vs OpenVINO int8 Q/DQ | vs OpenVINO best | cos min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vt = f"{r['vs_torch']:.2f}x" if r["vs_torch"] else "-"
        print(f"| {r['arch']} | {r['batch']} | {r['what']} | {r['ms']:.1f} | {r['images_per_s']:.1f} | {vt} | "
              f"{r['vs_openvino_qdq']:.2f}x | {r['vs_openvino_best']:.2f}x | {r['cosine_min']:.5f} |")
    if gemm:
        for k, v in gemm.items():
            print(f"GEMM {k}: {v['ms']:.2f} ms, {v['gops']:.0f} GOP/s")
    print(f"load average: start {loads['start']}, end {loads['end']}")


if __name__ == "__main__":
    main()
