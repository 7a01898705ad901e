"""``clipfsar export-triton BUNDLE OUT``: a stock Triton model repository (no torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click


@click.command("export-triton")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="Instance group kind of the encoder and head.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="Graph variant to ship (graphs without it ship fp32).")
@click.option("--engines", type=click.Path(path_type=Path, file_okay=False),
              help="A TensorRT engine cache (`clipfsar engine`): a verified encoder engine ships as tensorrt_plan.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def export_triton(bundle: Path, out: Path, kind: str, instances: int, max_batch: int, queue_delay_us: int,
                  precision: str, engines: Optional[Path], overwrite: bool) -> None:
    """Write BUNDLE as a Triton model repository in OUT (config.pbtxt + versioned model files)."""
    from .triton_repo import export_triton_repo
    summary = export_triton_repo(bundle, out, kind, instances, max_batch, queue_delay_us, precision, engines,
                                 overwrite)
    for model, what in summary.items():
        click.echo(f"{model:<18} {what}")
    import json
    scores = json.loads((out / "bundle_info" / "1" / "info.json").read_text())["scores"]
    thr = scores["threshold"]
    click.echo(f"scores: read output '{scores['output']}' for what `clipfsar run` reports ("
               f"{'calibrated probabilities' if scores['calibrated'] else 'the paper fusion, as probs'}); "
               + ("no 'unknown' threshold fitted" if thr["value"] is None else
                  f"'unknown' when the largest calibrated probability is below {thr['value']:.6f}"
                  if thr["score"] != "znorm" else
                  f"'unknown' when the open-set score 'known' (from 'distances' and bundle_info's scores.znorm, "
                  f"see its formula) is below {thr['value']:.6f}") + "; 'probs' is the paper's fusion")
    click.echo(f"wrote {out}: tritonserver --model-repository {out.resolve()}")
