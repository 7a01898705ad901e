"""Training-side subcommands: ``synth``, ``archs``, ``train``, ``eval``."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of classes, splits and clip jitter.")
@click.option("--clips", "clips_per_class", default=20, show_default=True, help="Clips per class.")
@click.option("--size", default=96, show_default=True, help="Frame width and height in pixels.")
@click.option("--length", default=24, show_default=True, help="Frames per clip.")
@click.option("--fps", default=12.0, show_default=True)
@click.option("--ext", type=click.Choice([".mp4", ".avi", ".webm"]), default=".mp4", show_default=True)
@click.option("--family", type=click.Choice(["motion", "appearance"]), default="motion", show_default=True,
              help="motion: classes are shape x motion (the Something-Something analogue); appearance: shape x "
                   "scene, each clip moving at random (the Kinetics/UCF/HMDB analogue).")
@click.option("--clutter", default=0.0, show_default=True,
              help="What else every clip shows, as real clips do: 0 (none), or between 0.05 and 0.45 (the "
                   "ablation's *-clutter families: 0.4). Appearance: a band of another scene over this share "
                   "(+- 0.05) of the frame; motion: another shape doing another motion (any value in the range).")
def synth(out: Path, seed: int, clips_per_class: int, size: int, length: int, fps: float, ext: str,
          family: str, clutter: float) -> None:
    """Write synthetic action clips to OUT, with OUT/splits/{train,val,test}.txt and OUT/captions.txt (clip and
    per-frame captions)."""
    from clipfsar.runtime.base.errors import ConfigError

    from .synth import check_clutter, make_dataset
    try:
        check_clutter(clutter, family)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--clutter") from None
    splits = make_dataset(out, seed, clips_per_class, size, length, fps, ext, family=family, clutter=clutter)
    for split, names in splits.items():
        click.echo(f"{split}: {len(names)} classes x {clips_per_class} clips")
    click.echo(f"wrote {out}")


@click.command()
def archs() -> None:
    """List the backbone architectures (``tiny`` plus every open_clip config)."""
    from .backbone import list_archs
    click.echo("\n".join(list_archs()))


@click.command()
@click.option("--data", type=click.Path(path_type=Path), help="Dataset root (class folders + splits/).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder (must not exist).")
@click.option("--arch", help="Backbone: tiny, ViT-B-16, RN50, ... [default: tiny]")
@click.option("--weights", help="open_clip pretrained tag (e.g. openai) or a local weights file.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="A JSON TrainConfig.")
@click.option("--preset", help="The paper's settings: ssv2-full, ssv2-small, k100, ucf101, hmdb51.")
@click.option("--steps", type=int, help="Optimizer steps.")
@click.option("--seed", type=int)
@click.option("--way", type=int)
@click.option("--shot", type=int)
@click.option("--query", type=int, help="Queries per class in training episodes.")
@click.option("--episodes-per-step", type=int)
@click.option("--optimizer", type=click.Choice(["adam", "adamw"]))
@click.option("--lr", type=float)
@click.option("--warmup-lr", type=float)
@click.option("--warmup-steps", type=int)
@click.option("--schedule", type=click.Choice(["step", "cosine"]))
@click.option("--milestones", help="Comma-separated steps where the step schedule multiplies lr by gamma.")
@click.option("--alpha", type=float, help="Weight of the video-text loss.")
@click.option("--val-every", type=int)
@click.option("--val-episodes", type=int)
@click.option("--save-every", type=int, help="Steps between resume checkpoints (default: --val-every).")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]))
@click.option("--freeze-backbone", is_flag=True, default=None, help="Cache frame features once; train the heads.")
@click.option("--cache-samplings", type=int, help="Frame samplings cached per clip with --freeze-backbone.")
@click.option("--feature-cache", help="With --freeze-backbone: a folder of feature caches shared by runs (named by "
              "the image tower, preprocessing, frames and seed). Default: the run folder.")
@click.option("--workers", type=int, help="Decoding threads.")
@click.option("--frames", type=int, help="T, frames per clip.")
@click.option("--depth", type=int, help="Temporal Transformer depth.")
@click.option("--no-text-prototype", is_flag=True, default=None, help="Ablation: no text token in prototypes.")
@click.option("--shot-pooling", type=click.Choice(["before", "after"]))
@click.option("--beta", type=float, help="Inference fusion weight stored in the checkpoint.")
@click.option("--class-names", "class_names_file", type=click.Path(path_type=Path),
              help="Class-name map for numbered class folders: JSON/CSV folder -> name, or SSv2's labels.json.")
@click.option("--resume", is_flag=True, help="Continue --out from its last checkpoint (with its saved config; "
              "--data replaces the saved data folder, e.g. after moving it).")
@click.option("--stop-after", type=int, help="Stop after this many steps of this invocation (resume later).")
def train(data, out, config_file, preset, resume, stop_after, milestones, no_text_prototype, class_names_file=None,
          **opts) -> None:
    """Train CLIP-FSAR on episodic N-way K-shot tasks."""
    from clipfsar.runtime.base.jsonconfig import from_dict, read_json

    from .config import TrainConfig
    from .config import preset as get_preset
    from .loop import Trainer, resumed_config

    if resume:
        if class_names_file:
            raise click.UsageError("--class-names is stored with the run; it cannot change on --resume")
        cfg = resumed_config(out, data)
    else:
        if data is None:
            raise click.UsageError("--data is required")
        values = get_preset(preset) if preset else {}
        if config_file:
            values.update(read_json(config_file, "training config"))
        model_keys = ("frames", "depth", "shot_pooling", "beta")
        model = dict(values.pop("model", {}))
        for k in model_keys:
            value = opts.pop(k)
            if value is not None:
                model[k] = value
        if no_text_prototype:
            model["text_in_prototype"] = False
        values.update({k: v for k, v in opts.items() if v is not None})
        if milestones:
            values["milestones"] = [int(m) for m in milestones.split(",")]
        # absolute, so that --resume works from any directory (the run folder itself is always the --out given)
        values.update(data=str(Path(data).absolute()), out=str(Path(out).absolute()), model=model)
        if class_names_file:  # stored in the run config and every checkpoint
            from .class_names import load_class_map
            values["class_names"] = load_class_map(class_names_file)
        cfg = from_dict(TrainConfig, values, "training config")
    run = Trainer(cfg, resume=resume, stop_after=stop_after).run()
    click.echo(f"run folder: {run}")
