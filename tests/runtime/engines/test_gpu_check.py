"""benchmarks/gpu_check.py, the prepared GPU check: its pure parts, its refusal without a GPU, and (slow) the whole
CPU smoke run (--dry-run), which writes every section to the JSON report."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

SECTIONS = ["device", "matmul", "vit_fp16", "amp_training", "torchrun_nccl", "heads_onnx"]


def test_datasheet_peaks_match_the_names_torch_reports():
    assert gpu_check.spec_fp16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_check.spec_fp16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.spec_fp16_tflops("NVIDIA H200") == 989.4
    assert gpu_check.spec_fp16_tflops("NVIDIA L40S") == 362.0 and gpu_check.spec_fp16_tflops("NVIDIA L4") == 121.0
    assert gpu_check.spec_fp16_tflops("Orin") is None


def test_budget_spent_skips_sections_and_still_writes(tmp_path):
    out = tmp_path / "r.json"
    rc = gpu_check.main(["--dry-run", "--budget-s", "0", "--out", str(out)])
    report = json.loads(out.read_text())
    assert rc == 1 and report["dry_run"] is True and list(report["sections"]) == SECTIONS
    assert all("skipped" in s for s in report["sections"].values())


def test_without_a_gpu_and_without_dry_run_it_refuses(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is usable here")
    assert gpu_check.main(["--out", str(tmp_path / "r.json")]) == 2
    assert "--dry-run" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_section(tmp_path):
    """About 90 s on 2 cores: every section runs (torchrun on gloo) and none fails."""
    out = tmp_path / "smoke.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True, text=True,
                       timeout=480)
    report = json.loads(out.read_text())
    assert r.returncode == 0, r.stdout + r.stderr
    s = report["sections"]
    assert list(s) == SECTIONS and not [n for n, v in s.items() if "error" in v or "skipped" in v]
    assert [b["batch"] for b in s["vit_fp16"]["batches"]] == [1, 2, 4]
    assert s["amp_training"]["bf16"]["grads_finite"] and s["amp_training"]["fp16"]["grads_finite"]
    assert s["torchrun_nccl"]["all_reduce_ok"] and s["torchrun_nccl"]["ddp_ok"]
    assert s["heads_onnx"]["query_head"]["max_abs_diff_vs_torch"] < 1e-4
