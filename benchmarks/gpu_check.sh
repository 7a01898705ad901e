#!/usr/bin/env bash
# One prepared GPU check (issue 8, item 9), under 8 minutes on one GPU. Wherever a CUDA GPU is available it measures:
#   1. onnxruntime's CUDA provider, ViT-B-16 image encoder (random init) fp32 vs fp16 vs int8 (static Q/DQ and
#      dynamic) at batch 1, 8 and 64: frames/s and cosine to fp32 (held-out frames of synthetic clips);
#   2. the streaming runtime (`clipfsar bench`) on the CUDA provider, fp32 and fp16 bundles;
#   3. a few AMP training steps (`clipfsar train --amp auto`, 20 steps) with the time per step.
# Without a GPU it says so and runs the same steps on the CPU with the tiny model (SMOKE), to prove the script.
#
#   benchmarks/gpu_check.sh [OUT]            # env: PY (python, default .venv/bin/python), ARCH (default ViT-B-16)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-bench_out/gpu_check}
ARCH=${ARCH:-ViT-B-16}
rm -rf "$OUT" && mkdir -p "$OUT"
echo "== $(date -u +%FT%TZ) $(uname -m), $(nproc) cores"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
BACKEND=$("$PY" - <<'PY'
from clipfsar.runtime.engines import usable_backends
b = usable_backends()
print("cuda" if "cuda" in b else "cpu")
PY
)
if [ "$BACKEND" = cpu ]; then
  echo "== no CUDA GPU usable here: NOTHING BELOW IS A GPU MEASUREMENT (smoke run: tiny model on the CPU)"
  ARCH=tiny; STEPS=3; FRAMES=120; SIZE=64; T1=600; T2=600; T3=600
else  # 240 + 120 + 110 s: the whole check stays under 8 minutes
  STEPS=20; FRAMES=2000; SIZE=224; T1=240; T2=120; T3=110
fi
failed() { echo "!! step $1 failed or ran past its time limit (exit $2); the next steps still run"; }

echo "== 1. image encoder $ARCH on $BACKEND: fp32 / fp16 / int8"
timeout "$T1" "$PY" - "$OUT" "$ARCH" "$BACKEND" <<'PY' || failed 1 $?
import json, statistics, sys, time
from pathlib import Path
import numpy as np, torch
from clipfsar.calib.data import collect_frames
from clipfsar.calib.fp16 import to_fp16
from clipfsar.calib.int8 import quantize_dynamic_graph, quantize_static_graph
from clipfsar.export.graphs import ImageEncoder
from clipfsar.export.onnx_export import export_graph
from clipfsar.runtime.bundle import ModelFacts
from clipfsar.runtime.engines import OnnxGraph
from clipfsar.train import create_model_and_transforms
from clipfsar.train.synth import make_dataset
out, arch, backend = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.manual_seed(0)
model, prep = create_model_and_transforms(arch)
model = model.float().eval()
make_dataset(out / "clips", seed=0, clips_per_class=1, size=256, length=16)
facts = ModelFacts(arch, 0, 8, prep.image_size, prep.resize_short, tuple(prep.mean), tuple(prep.std), "{}", .1, .9, 1., 2., 77)
sets = collect_frames(out / "clips", facts, frames=32, holdout=64, seed=0)
calib, held = sets.calibration.pixels, sets.held_out.pixels
paths = {"fp32": out / "enc.fp32.onnx", "fp16": out / "enc.fp16.onnx", "int8-qdq": out / "enc.qdq.onnx",
         "int8-dynamic": out / "enc.dyn.onnx"}
export_graph(ImageEncoder(model), "image_encoder", (torch.from_numpy(held[:2]),), paths["fp32"])
to_fp16(paths["fp32"], paths["fp16"], "image_encoder")
quantize_static_graph(paths["fp32"], paths["int8-qdq"], [{"images": calib[i:i + 8]} for i in range(0, 32, 8)], "minmax")
quantize_dynamic_graph(paths["fp32"], paths["int8-dynamic"])
rows = []
ref = None
for name, p in paths.items():
    try:
        g = OnnxGraph(p, backend, precision=name.split("-")[0])
    except Exception as e:
        rows.append({"variant": name, "error": str(e)[:200]}); print(json.dumps(rows[-1]), flush=True); continue
    feats = g.run(images=held)["features"]
    ref = feats if ref is None else ref
    cos = (ref * feats).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(feats, axis=1)
    for batch in (1, 8, 64):
        x = np.ascontiguousarray(held[np.arange(batch) % len(held)])
        for _ in range(3):
            g.run(images=x)
        t = []
        for _ in range(10):
            t0 = time.perf_counter(); g.run(images=x); t.append(time.perf_counter() - t0)
        ms = 1000 * statistics.median(t)
        rows.append({"variant": name, "provider": g.providers[0], "batch": batch, "ms": round(ms, 3),
                     "frames_per_s": round(batch * 1000 / ms, 1), "cos_mean": float(cos.mean()), "cos_min": float(cos.min())})
        print(json.dumps(rows[-1]), flush=True)
(out / "encoder.json").write_text(json.dumps(rows, indent=2))
PY

echo "== 2. streaming runtime on $BACKEND (tiny bundle, fp32 and fp16)"
timeout "$T2" "$PY" - "$OUT" "$BACKEND" "$FRAMES" <<'PY' || failed 2 $?
import json, sys
from pathlib import Path
import torch
from clipfsar.calib.calibrate import calibrate_bundle
from clipfsar.export.bundle_export import export_bundle
from clipfsar.runtime.bench import run_bench
from clipfsar.train import create_model_and_transforms, save_checkpoint
from clipfsar.train.synth import make_dataset
out, backend, frames = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = out / "data"
make_dataset(data, seed=0, clips_per_class=4, size=64, length=16)
torch.manual_seed(0)
model, prep = create_model_and_transforms("tiny", frames=8)
ck = save_checkpoint(out / "ckpt", model, prep)
export_bundle(ck, data, out / "bundle", shots=2, classes_file=data / "splits" / "test.txt", parity_episodes=5)
calibrate_bundle(out / "bundle", data, ("fp16",), frames=32, holdout=16, split="test", episodes=100)
clip = sorted((data / "a_circle_growing").iterdir())[0]
for precision in ("fp32", "fp16"):
    r = run_bench(out / "bundle", clip, [backend], frames, precision=precision)["backends"][0]
    print(json.dumps({k: r[k] for k in ("backend", "provider", "precisions", "decisions_per_s", "frames_per_s",
                                        "ms_per_decision", "rss_mb_start", "rss_mb_end")}), flush=True)
PY

echo "== 3. AMP training steps ($ARCH, $STEPS steps, --amp auto)"
"$PY" -m clipfsar synth "$OUT/train_data" --clips 8 --size "$SIZE" >/dev/null  # an episode needs shot + query = 6
start=$(date +%s.%N)
timeout "$T3" "$PY" -m clipfsar train --data "$OUT/train_data" --out "$OUT/run" --arch "$ARCH" --steps "$STEPS" \
  --amp auto --val-every "$STEPS" --val-episodes 20 --save-every "$STEPS" > "$OUT/train.log" 2>&1 || failed 3 $?
tail -n 3 "$OUT/train.log"
end=$(date +%s.%N)
echo "{\"train_steps\": $STEPS, \"arch\": \"$ARCH\", \"seconds\": $(awk "BEGIN {print $end - $start}"), \"device\": \"$BACKEND\"}"
echo "== done: $OUT"
