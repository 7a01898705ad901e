#!/usr/bin/env python
"""The prepared GPU check (issue 20): one script, at most 8 minutes, for a machine with an NVIDIA GPU and PyTorch with
CUDA (no TensorRT, no onnxruntime-gpu; besides torch only the project's small wheels: open_clip_torch, onnx,
onnxscript; onnxruntime, CPU build, is optional for the heads' parity). Writes one JSON file.

Sections (each timed, each failure recorded and the next one still run):

- ``device``: GPU name, compute capability, SMs, memory, torch / CUDA / NCCL versions, bf16 support.
- ``matmul``: measured fp16 matmul TFLOP/s (8192^3, the practical roofline) and the datasheet's dense fp16 tensor
  peak for known GPUs (``SPEC_FP16_TFLOPS``; None when unknown).
- ``vit_fp16``: the ViT-B-16 image encoder (random init, the project's ``ImageEncoder`` export wrapper) in eager
  fp16 at batch 1, 8 and 64: ms per call, images/s, FLOPs per image (``torch.utils.flop_counter``) and the
  fraction of the measured and of the datasheet roofline it reaches.
- ``amp_training``: training steps of the whole CLIP-FSAR model (5-way 1-shot episodes of 8 frames, the project's
  ``forward``) with AMP bf16 and fp16 (GradScaler): ms per step, final loss, finite gradients.
- ``torchrun_nccl``: ``torchrun --nproc_per_node 1`` running this script as a DDP worker on NCCL: an all_reduce
  checked by value and three DDP steps of the tiny model.
- ``heads_onnx``: the project's ONNX export (``export.onnx_export.export_graph``) of ``support_head`` and
  ``query_head`` from the model on the GPU, and, where onnxruntime is installed, the max abs difference of the
  exported graphs (onnxruntime CPU) against torch on the GPU.

Usage:
    python benchmarks/gpu_check.py --out gpu_check.json            # on the GPU machine (ViT-B-16)
    python benchmarks/gpu_check.py --dry-run --out smoke.json      # anywhere: tiny model, CPU, gloo, small sizes

``--dry-run`` runs every section on the CPU with the tiny model: it proves the script, it measures nothing about a
GPU (the JSON says ``"dry_run": true``). Without a CUDA GPU and without ``--dry-run`` the script exits 2.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480  # 8 minutes in all

# Dense fp16 tensor-core peak (TFLOP/s, no sparsity) from NVIDIA's datasheets; matched in order on the device name.
SPEC_FP16_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("GH200", 989.4), ("H100", 989.4),
    ("H200", 989.4), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("A10G", 70.0),
    ("A10", 125.0), ("T4", 65.0), ("V100", 125.0),
)


def spec_fp16_tflops(name: str) -> Optional[float]:
    """The datasheet fp16 peak of the GPU called ``name`` (first matching entry of SPEC_FP16_TFLOPS), else None."""
    for key, tflops in SPEC_FP16_TFLOPS:
        if key in name:
            return tflops
    return None


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_s(fn: Callable[[], Any], device: str, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Check:
    """Settings of one run: the GPU one or the CPU dry run."""

    def __init__(self, dry_run: bool, arch: Optional[str]):
        import torch
        self.dry_run = dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.arch = arch or ("tiny" if dry_run else "ViT-B-16")
        self.half = torch.float32 if dry_run else torch.float16  # CPU fp16 matmuls are emulated: fp32 there
        self.batches = (1, 2, 4) if dry_run else (1, 8, 64)
        self.matmul_n = 256 if dry_run else 8192
        self.steps = 2 if dry_run else 10
        self.iters = 3 if dry_run else 20

    def model(self):
        import torch

        from clipfsar.train import create_model_and_transforms
        torch.manual_seed(0)
        model, prep = create_model_and_transforms(self.arch, frames=8)
        return model.to(self.device), prep


def section_device(c: Check) -> Dict[str, Any]:
    import torch
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": c.device,
           "host": f"{platform.machine()}, {os.cpu_count()} cores"}
    if c.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(name=p.name, compute_capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported(),
                   nccl=".".join(map(str, torch.cuda.nccl.version())), spec_fp16_tflops=spec_fp16_tflops(p.name))
    return out


def section_matmul(c: Check) -> Dict[str, Any]:
    import torch
    n = c.matmul_n
    a = torch.randn(n, n, device=c.device, dtype=c.half)
    b = torch.randn(n, n, device=c.device, dtype=c.half)
    s = _median_s(lambda: a @ b, c.device, 3, c.iters)
    name = torch.cuda.get_device_properties(0).name if c.device == "cuda" else ""
    return {"n": n, "dtype": str(c.half).replace("torch.", ""), "ms": round(1e3 * s, 3),
            "tflops": round(2 * n ** 3 / s / 1e12, 4), "spec_fp16_tflops": spec_fp16_tflops(name)}


def section_vit(c: Check, matmul_tflops: Optional[float], spec: Optional[float]) -> Dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from clipfsar.export.graphs import ImageEncoder
    model, prep = c.model()
    enc = ImageEncoder(model).eval().to(c.half)
    size = prep.image_size
    with torch.inference_mode():
        x1 = torch.randn(1, 3, size, size, device=c.device, dtype=c.half)
        counter = FlopCounterMode(display=False)
        with counter:
            enc(x1)
        flops = counter.get_total_flops()
        rows: List[Dict[str, Any]] = []
        for batch in c.batches:
            x = torch.randn(batch, 3, size, size, device=c.device, dtype=c.half)
            s = _median_s(lambda: enc(x), c.device, 3, c.iters)
            ips = batch / s
            achieved = ips * flops / 1e12
            rows.append({"batch": batch, "ms": round(1e3 * s, 3), "images_per_s": round(ips, 1),
                         "tflops": round(achieved, 2),
                         "of_measured_matmul": round(achieved / matmul_tflops, 3) if matmul_tflops else None,
                         "of_spec_peak": round(achieved / spec, 3) if spec else None})
    return {"arch": c.arch, "image_size": size, "dtype": str(c.half).replace("torch.", ""),
            "gflops_per_image": round(flops / 1e9, 4), "batches": rows}


def _episode(c: Check, model, size: int, way: int = 5, shot: int = 1, queries: int = 1):
    import torch
    g = torch.Generator().manual_seed(0)
    T, D = model.cfg.frames, model.embed_dim
    support = torch.randn(way, shot, T, 3, size, size, generator=g).to(c.device)
    query = torch.randn(way * queries, T, 3, size, size, generator=g).to(c.device)
    labels = torch.arange(way).repeat_interleave(queries).to(c.device)
    text = torch.nn.functional.normalize(torch.randn(way, D, generator=g), dim=-1).to(c.device)
    return support, query, labels, text


def section_amp(c: Check) -> Dict[str, Any]:
    import torch
    out: Dict[str, Any] = {"arch": c.arch, "episode": "5-way 1-shot, 5 queries, 8 frames", "steps": c.steps}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model, prep = c.model()
        model.train()
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
        scaler = torch.amp.GradScaler(c.device, enabled=dtype == torch.float16 and c.device == "cuda")
        support, query, labels, text = _episode(c, model, prep.image_size)
        losses: List[float] = []
        finite = True

        def step():
            nonlocal finite
            opt.zero_grad(set_to_none=True)
            with torch.autocast(c.device, dtype=dtype):
                loss = model(support, query, labels, text)["loss"]
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            finite = finite and all(torch.isfinite(p.grad).all() for p in model.trainable_parameters()
                                    if p.grad is not None)
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))

        s = _median_s(step, c.device, 2, c.steps)
        row = {"ms_per_step": round(1e3 * s, 2), "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
               "grads_finite": bool(finite)}
        if c.device == "cuda":
            row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            torch.cuda.reset_peak_memory_stats()
        out[name] = row
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_torchrun(c: Check) -> Dict[str, Any]:
    backend = "gloo" if c.dry_run else "nccl"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        result = Path(tmp) / "worker.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(Path(__file__).resolve()), "--ddp-worker", "--backend",
               backend, "--out", str(result)] + (["--dry-run"] if c.dry_run else [])
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        out = {"command": "torchrun --nproc_per_node 1 benchmarks/gpu_check.py --ddp-worker --backend " + backend,
               "returncode": r.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
        if result.is_file():
            out.update(json.loads(result.read_text()))
        if r.returncode != 0:
            out["stderr_tail"] = r.stderr[-1500:]
        return out


def ddp_worker(args) -> None:
    """Run by torchrun: NCCL (or gloo) all_reduce, then three DDP steps of the tiny model on features."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from clipfsar.train import create_model_and_transforms
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = "cpu" if args.dry_run else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if device != "cpu":
        torch.cuda.set_device(device)
    x = torch.full((1024,), float(rank + 1), device=device)
    dist.all_reduce(x)
    want = world * (world + 1) / 2
    torch.manual_seed(0)
    model, _ = create_model_and_transforms("tiny", frames=8)
    model = model.to(device).train()
    ddp = DDP(model, device_ids=None if device == "cpu" else [torch.device(device).index],
              find_unused_parameters=True)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    T, D = model.cfg.frames, model.embed_dim
    g = torch.Generator().manual_seed(rank)
    losses = []
    for _ in range(3):
        support = torch.randn(5, 1, T, D, generator=g).to(device)
        query = torch.randn(5, T, D, generator=g).to(device)
        text = torch.nn.functional.normalize(torch.randn(5, D, generator=g), dim=-1).to(device)
        loss = ddp(support, query, torch.arange(5, device=device), text)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    if rank == 0:
        Path(args.out).write_text(json.dumps({
            "backend": dist.get_backend(), "world_size": world, "all_reduce_ok": bool(torch.allclose(
                x.cpu(), torch.full((1024,), want))), "ddp_losses": [round(v, 4) for v in losses],
            "ddp_ok": all(math.isfinite(v) for v in losses)}))
    dist.destroy_process_group()


def section_heads(c: Check) -> Dict[str, Any]:
    import numpy as np
    import torch

    from clipfsar.export.graphs import QueryHead, SupportHead
    from clipfsar.export.onnx_export import export_graph
    model, _ = c.model()
    model.eval()
    T, D = model.cfg.frames, model.embed_dim
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(5, D, generator=g), dim=-1)
    # eval wrappers, as export_all's graph_modules: the exporter restores each wrapper's mode on the whole model
    args = {"support_head": (SupportHead(model).eval(), (torch.randn(5, 2, T, D, generator=g), text)),
            "query_head": (QueryHead(model).eval(), (torch.randn(3, T, D, generator=g),
                                                     torch.randn(5, T, D, generator=g), text))}
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    out: Dict[str, Any] = {"device": c.device, "onnxruntime": ort.__version__ if ort else None}
    with tempfile.TemporaryDirectory(prefix="gpu-check-heads-") as tmp:
        for name, (module, xs) in args.items():
            xs = tuple(x.to(c.device) for x in xs)
            path = Path(tmp) / f"{name}.onnx"
            t0 = time.perf_counter()
            export_graph(module, name, xs, path)
            row: Dict[str, Any] = {"export_s": round(time.perf_counter() - t0, 2),
                                   "onnx_mb": round(path.stat().st_size / 2**20, 2)}
            if ort is not None:
                with torch.no_grad():
                    want = module(*xs)
                want = want if isinstance(want, tuple) else (want,)
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = sess.run(None, {i.name: x.cpu().numpy() for i, x in zip(sess.get_inputs(), xs)})
                row["max_abs_diff_vs_torch"] = float(max(np.abs(a - w.float().cpu().numpy()).max()
                                                         for a, w in zip(got, want)))
            out[name] = row
    return out


def run_check(dry_run: bool, arch: Optional[str], budget_s: float = BUDGET_S) -> Dict[str, Any]:
    """Every section within ``budget_s`` seconds; returns the JSON-ready report."""
    c = Check(dry_run, arch)
    t_start = time.perf_counter()
    report: Dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": dry_run, "note": ("CPU smoke run: nothing here is a GPU measurement" if dry_run else
                                     "GPU run"), "sections": {}}
    sections = report["sections"]
    plan = [("device", lambda: section_device(c)), ("matmul", lambda: section_matmul(c)),
            ("vit_fp16", lambda: section_vit(c, sections.get("matmul", {}).get("tflops"),
                                             sections.get("matmul", {}).get("spec_fp16_tflops"))),
            ("amp_training", lambda: section_amp(c)), ("torchrun_nccl", lambda: section_torchrun(c)),
            ("heads_onnx", lambda: section_heads(c))]
    for name, fn in plan:
        elapsed = time.perf_counter() - t_start
        if elapsed > budget_s:
            sections[name] = {"skipped": f"time budget of {budget_s:.0f} s spent ({elapsed:.0f} s)"}
            continue
        t0 = time.perf_counter()
        try:
            sections[name] = fn()
        except Exception as e:  # one failed section must not lose the others
            sections[name] = {"error": f"{type(e).__name__}: {e}"[:800]}
        sections[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {json.dumps(sections[name])}", flush=True)
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON report path.")
    ap.add_argument("--dry-run", action="store_true", help="CPU smoke run: tiny model, gloo, small sizes.")
    ap.add_argument("--arch", help="Model architecture (default ViT-B-16; tiny with --dry-run).")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="Seconds for all sections (default 480).")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="nccl", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU is usable here (torch.cuda.is_available() is False); pass --dry-run for the CPU "
              "smoke run", file=sys.stderr)
        return 2
    if args.out.parent and not args.out.parent.is_dir():
        print(f"error: --out folder {args.out.parent} does not exist", file=sys.stderr)
        return 2
    report = run_check(args.dry_run, args.arch, args.budget_s)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = [n for n, s in report["sections"].items() if "error" in s or "skipped" in s]
    print(f"wrote {args.out} in {report['total_seconds']} s" + (f"; failed or skipped: {', '.join(failed)}"
                                                                 if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
