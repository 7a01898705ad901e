"""``clipfsar export``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .engine_hook import build_export_engines, engine_export_options, engine_request


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="Checkpoint or run folder.")
@click.option("--support", "support_dir", type=click.Path(path_type=Path), required=True,
              help="A folder per class (names from the folders) of support clips.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to write.")
@click.option("--shots", default=1, show_default=True, help="K clips per class.")
@click.option("--classes", "classes_file", type=click.Path(path_type=Path), help="Only the classes listed here.")
@click.option("--window", "window_seconds", type=float, help="Stream window in seconds (default: median clip).")
@click.option("--force", is_flag=True, help="Replace an existing bundle.")
@click.option("--class-names", "class_names_file", type=click.Path(path_type=Path),
              help="Class-name map for numbered class folders: JSON/CSV folder -> name, or SSv2's labels.json "
                   "(default: the one stored with the checkpoint).")
@engine_export_options
@click.option("--precision", "precision_text", default="fp32", show_default=True,
              help="Graph variants, comma-separated (fp32,fp16,int8); fp16/int8 need --calib-data.")
@click.option("--calib-data", type=click.Path(path_type=Path),
              help="Clips for calibration and the precision report (as `clipfsar calibrate --data`).")
@click.option("--calib-split", help="Split of a dataset root given as --calib-data (enables the accuracy check).")
@click.option("--calib-frames", default=512, show_default=True, help="Calibration frames.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="Static int8 calibration method.")
@click.option("--val-data", type=click.Path(path_type=Path),
              help="Dataset with splits/val.txt to fit the temperature of the calibrated scores on (default: "
                   "--support, if it has one).")
@click.option("--val-episodes", default=300, show_default=True, help="Val episodes for that fit (0: no fit).")
def export(checkpoint: Path, support_dir: Path, out: Path, shots: int, classes_file: Optional[Path],
           window_seconds: Optional[float], force: bool, precision_text: str = "fp32",
           calib_data: Optional[Path] = None, calib_split: Optional[str] = None, calib_frames: int = 512,
           calib_method: str = "minmax", class_names_file: Optional[Path] = None, val_data: Optional[Path] = None,
           val_episodes: int = 300, **engine_kw) -> None:
    """Export ONNX graphs, text-enhanced prototypes and the manifest (with parity) into a bundle."""
    from clipfsar.calib.cli import parse_precisions

    from .bundle_export import export_bundle

    engines = engine_request(**engine_kw)  # checked before the export: fails fast
    precisions = parse_precisions(precision_text)
    if precisions and calib_data is None:
        raise click.UsageError(f"--precision {precision_text} needs --calib-data (clips to calibrate on)")
    from clipfsar.train.class_names import load_class_map
    class_map = load_class_map(class_names_file) if class_names_file else None
    bundle = export_bundle(checkpoint, support_dir, out, shots, classes_file, force, window_seconds=window_seconds,
                           class_map=class_map, val_data=val_data, val_episodes=val_episodes)
    parity = bundle.manifest.parity
    click.echo(f"bundle: {out} ({len(bundle.store.class_names)} classes, {shots} shots)")
    for g, d in parity["graphs"].items():
        click.echo(f"  {g:<14} onnxruntime vs torch max abs diff {d:.2e}")
    ep = parity["episodes"]
    click.echo(f"  episodes: {ep['same_predictions']}/{ep['episodes']} same predictions as the checkpoint")
    cal = bundle.manifest.calibration
    if cal:
        click.echo(f"  calibrated scores: temperature {cal['temperature']:.4f} on {cal['fitted_on']['episodes']} val "
                   f"episodes; ECE {cal['ece_paper']:.3f} (paper) -> {cal['ece_calibrated']:.3f}")
    if precisions:
        from clipfsar.calib.calibrate import calibrate_bundle
        from clipfsar.calib.report import format_report
        bundle = calibrate_bundle(out, calib_data, precisions, calib_method, calib_frames, split=calib_split)
        click.echo(format_report(bundle.manifest))
    if engines is not None:
        for r in build_export_engines(out, engines):
            click.echo(f"  engine {r['graph']:<14} {r['precision']}: {'cached' if r['action'] == 'load' else 'built'} "
                       f"{r['engine']}")
