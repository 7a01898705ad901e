"""``clipfsar calibrate``: fp16/int8 variants of a bundle's graphs with the precision report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


def parse_precisions(text: str):
    """``fp16,int8`` -> ('fp16', 'int8'); fp32 is accepted and dropped (always in the bundle); ``auto`` ->
    ('auto',): fp16 and int8, and bf16 where the backend runs it (calib/openvino.py)."""
    items = [p.strip() for p in text.split(",") if p.strip()]
    if items == ["auto"]:
        return ("auto",)
    bad = [p for p in items if p not in ("fp32", "fp16", "int8", "bf16")]
    if bad:
        raise click.BadParameter(f"unknown precision {', '.join(bad)}; choose from fp32, fp16, int8, bf16 (or auto)",
                                 param_hint="--precision")
    return tuple(p for p in items if p != "fp32")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="A folder of videos, or a dataset root (with --split).")
@click.option("--split", help="Split of a dataset root (splits/<split>.txt): calibration clips and the episodes "
                              "of the end-to-end accuracy check.")
@click.option("--precision", "precision_text", default="auto", show_default=True,
              help="Variants to make, comma-separated (fp16, int8, bf16); auto: fp16 and int8, and bf16 on OpenVINO "
                   "where the CPU has BF16.")
@click.option("--backend", type=click.Choice(["auto", "cpu", "openvino"]), default="auto", show_default=True,
              help="Where the variants are measured, the backend that will run them (auto: OpenVINO on an x86 CPU "
                   "where it is installed, else onnxruntime).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="Static int8 calibration method.")
@click.option("--int8", "int8_mode", type=click.Choice(["auto", "dynamic", "static", "static-u8"]), default="auto",
              show_default=True, help="Image encoder int8: dynamic (ViTs, CPU), static Q/DQ (TensorRT) or "
                                      "static-u8 Q/DQ (CNNs, CPU). auto: dynamic for ViTs, static-u8 for CNNs; "
                                      "on OpenVINO static for both.")
@click.option("--frames", default=512, show_default=True, help="Calibration frames (T per clip).")
@click.option("--holdout", default=64, show_default=True, help="Held-out frames (other clips) for the report.")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-drop", default=1.0, show_default=True, help="Accuracy points a variant may lose.")
@click.option("--episodes", default=1000, show_default=True, help="Seeded episodes of the end-to-end check.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="onnxruntime threads for the latency.")
def calibrate(bundle: Path, data: Path, split: Optional[str], precision_text: str, method: str, int8_mode: str,
              frames: int, holdout: int, seed: int, max_drop: float, episodes: int, threads: int,
              backend: str = "auto") -> None:
    """Add fp16/int8 variants to a bundle, calibrated on real clips, and print the precision report."""
    from .calibrate import calibrate_bundle
    from .report import format_report

    precisions = parse_precisions(precision_text)
    if not precisions:
        raise click.BadParameter("nothing to make: fp32 is always in the bundle", param_hint="--precision")
    b = calibrate_bundle(bundle, data, precisions, method, frames, holdout, seed, split, int8_mode, max_drop,
                         episodes, threads=threads, backend=backend)
    click.echo(format_report(b.manifest))
