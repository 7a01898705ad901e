"""``clipfsar ablation``: the paper's ablation on synthetic families (or any data sets), over training seeds."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List

import click

from .synth import FAMILIES


def _ints(value: str, what: str) -> List[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'", param_hint=what) from None
    if not out:
        raise click.BadParameter("empty", param_hint=what)
    return out


CLUTTERED = {f"{f}-clutter": f for f in FAMILIES}  # the families made with synth.CLUTTER, and their base family


def _family_of(folder: Path) -> str:
    """The family a data folder says it is (``synth.json``: ``FAMILY-clutter`` when it has clutter), else the
    folder's name."""
    facts = folder / "synth.json"
    if facts.is_file():
        from clipfsar.runtime.base.jsonconfig import read_json
        info = read_json(facts, "synthetic data facts")
        family = info.get("family")
        if family:
            return f"{family}-clutter" if info.get("clutter") else str(family)
    return folder.name


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder of the ablation: data/, cache/, runs/, ablation.json, ablation.md (reused: finished runs "
                   "are not trained again).")
@click.option("--family", "families", multiple=True, type=click.Choice(["motion", "appearance", *CLUTTERED]),
              help="A synthetic family, made under OUT/data/FAMILY if absent (`clipfsar synth --family`; "
                   "X-clutter: `--family X --clutter 0.4`). Repeatable. Default: all four, unless --data is given.")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(path_type=Path),
              help="An existing data set folder (class folders + splits/); its family is read from synth.json, "
                   "else its folder name. Repeatable.")
@click.option("--arch", default="small", show_default=True,
              help="Architecture of the prior: small (the default prior's), tiny, or any open_clip name.")
@click.option("--weights", default="synth", show_default=True,
              help="The prior of ARCH: a tag or a weights file. Its image tower stays frozen.")
@click.option("--seeds", default="0,1,2", show_default=True,
              help="Training seeds, comma-separated (3 or more for a 95 % interval worth reading).")
@click.option("--shots", default="1,5", show_default=True, help="Evaluated shots, comma-separated.")
@click.option("--per-shot-training", is_flag=True, help="Train a model per shot count (the paper); default: every "
              "shot is evaluated on the 1-shot models.")
@click.option("--steps", default=600, show_default=True, help="Optimizer steps per run (4 episodes each).")
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--alpha", default=0.5, show_default=True, help="Weight of the video-text loss.")
@click.option("--cache-samplings", default=4, show_default=True,
              help="Cached frame samplings per training clip (0 = centre, the rest random: the augmentation).")
@click.option("--episodes", default=2000, show_default=True,
              help="Seeded episodes per evaluation: on the test split (seed 0), and on the val split (seed 1) to "
                   "fit the fusion's beta.")
@click.option("--clips", default=20, show_default=True, help="Clips per class of a family made here.")
@click.option("--data-seed", default=0, show_default=True, help="Seed of a family made here.")
@click.option("--threads", default=1, show_default=True,
              help="torch intra-op threads (1: the heads' tensors are small; threads cost more than they give).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
def ablation(out: Path, families, data_dirs, arch: str, weights: str, seeds: str, shots: str, per_shot_training: bool,
             steps: int, lr: float, alpha: float, cache_samplings: int, episodes: int, clips: int, data_seed: int,
             threads: int, as_json: bool) -> None:
    """The paper's ablation: few-shot without the text token, CLIP-FSAR, fusion (beta 0.9 and beta fitted on the
    val split) and zero-shot, at each shot, mean and 95 % t-interval over training seeds, the prior's image tower
    frozen (cached features)."""
    import torch

    from clipfsar.runtime.base.errors import ConfigError

    from .ablation import AblationConfig, goals, run_ablation, table
    from .synth import CLUTTER, make_dataset

    if threads < 1:
        raise click.BadParameter("must be >= 1", param_hint="--threads")
    try:  # every option checked before any data set is made
        cfg = AblationConfig(data={"": ""}, out=str(out), arch=arch,
                             weights=None if weights == "none" else weights,
                             seeds=_ints(seeds, "--seeds"), shots=_ints(shots, "--shots"),
                             per_shot_training=per_shot_training, steps=steps, lr=lr, alpha=alpha, episodes=episodes,
                             cache_samplings=cache_samplings)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    from .backbone import create_clip
    create_clip(cfg.arch, cfg.weights)  # an unknown architecture or missing weights fail before any data set is made
    data = {}
    for folder in data_dirs:
        if not Path(folder).is_dir():
            raise click.BadParameter(f"data folder not found: {folder}", param_hint="--data")
        family = _family_of(Path(folder))
        if family in data:
            raise click.BadParameter(f"two data sets of family '{family}'", param_hint="--data")
        data[family] = str(Path(folder).absolute())
    for family in families or (() if data_dirs else ("motion", "appearance", *CLUTTERED)):
        if family in data:
            given = "given twice" if family in families[:families.index(family)] else f"also --data {data[family]}"
            raise click.BadParameter(f"family '{family}' {given}", param_hint="--family")
        folder = out / "data" / family
        if (folder / "splits").is_dir():
            click.echo(f"reusing the {family} family in {folder} (as made before: --clips and --data-seed are not "
                       "applied to it)", err=True)
        else:
            click.echo(f"making the {family} family in {folder}", err=True)
            make_dataset(folder, seed=data_seed, clips_per_class=clips,
                         family=CLUTTERED.get(family, family), clutter=CLUTTER if family in CLUTTERED else 0.0)
        data[family] = str(folder.absolute())
    cfg = dataclasses.replace(cfg, data=data)
    torch.set_num_threads(threads)
    report = run_ablation(cfg, log=lambda m: click.echo(m, err=True))
    report["goals"] = goals(report)
    (out / "ablation.json").write_text(json.dumps(report, indent=2))
    text = table(report)
    lines = [text, "", f"mean +- 95 % t-interval over training seeds (n); test split, {cfg.way}-way, "
             f"{cfg.episodes} episodes (seed {cfg.eval_seed}) per seed; beta fitted on {cfg.episodes} val episodes "
             f"(seed {cfg.eval_seed + 1}); {report['date']}"]
    lines += [f"goal {'met' if g['met'] else 'NOT met'}: {g['family']} {g['goal']} = {g['value']:.1f} "
              f"(>= {g['bound']})" for g in report["goals"]]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(lines))
