"""``clipfsar eval``: a checkpoint (PyTorch) or a bundle (its ONNX graphs) on seeded N-way K-shot episodes.

It sits above ``train`` and ``calib`` (the bundle's evaluation lives in calib/bundle_eval.py), so neither imports
the other's command line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Checkpoint or run folder.")
@click.option("--bundle", type=click.Path(path_type=Path), help="Evaluate through a bundle's ONNX graphs instead.")
@click.option("--data", type=click.Path(path_type=Path), required=True)
@click.option("--split", default="test", show_default=True)
@click.option("--way", default=5, show_default=True)
@click.option("--shot", default=1, show_default=True)
@click.option("--episodes", default=10000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--beta", type=float, default=0.9, show_default=True, help="Fusion weight of the fusion row.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--class-names", "class_names_file", type=click.Path(path_type=Path),
              help="Class-name map for numbered class folders: JSON/CSV folder -> name, or SSv2's labels.json "
                   "(default: the one stored with the checkpoint or bundle).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="With --bundle: the graph variants to run (see `clipfsar calibrate`).")
def evaluate(checkpoint: Optional[Path], bundle: Optional[Path], data: Path, split: str, way: int, shot: int,
             episodes: int, seed: int, beta: Optional[float], as_json: bool, precision: str = "fp32",
             class_names_file: Optional[Path] = None) -> None:
    """Evaluate on seeded N-way K-shot episodes (1 query per class): mean accuracy +- 95% CI per branch."""
    if (checkpoint is None) == (bundle is None):
        raise click.UsageError("give exactly one of --checkpoint or --bundle")
    from clipfsar.train.class_names import load_class_map
    class_map = load_class_map(class_names_file) if class_names_file else None
    if bundle is not None:
        from clipfsar.calib.bundle_eval import evaluate_bundle
        report = evaluate_bundle(bundle, data, split, way, shot, episodes, seed, beta, precision=precision,
                                 class_map=class_map)
    else:
        from clipfsar.train.evaluate import evaluate_checkpoint
        report = evaluate_checkpoint(checkpoint, data, split, way, shot, episodes, seed, beta, class_map)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['way']}-way {report['shot']}-shot, {report['episodes']} episodes on '{split}' "
               f"(seed {seed}), {report.get('checkpoint') or report['bundle']}"
               + (f" [{', '.join(f'{g} {p}' for g, p in report['precisions'].items())}]" if "precisions" in report
                  else ""))
    labels = {b: f"{b} (beta={report['beta']})" if b == "fusion" else b for b in report["branches"]}
    width = max(12, *(len(v) + 2 for v in labels.values()))  # the fusion row's label is longer than 12
    click.echo(f"{'branch':<{width}}{'accuracy':>10}{'ci95':>8}")
    for branch, acc in report["branches"].items():
        click.echo(f"{labels[branch]:<{width}}{acc['accuracy']:>10.2f}{acc['ci95']:>8.2f}")
