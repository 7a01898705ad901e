"""``clipfsar enroll``, ``clipfsar classes`` and ``clipfsar calibrate-threshold``: torch-free."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import click

from clipfsar.runtime.engines.cache_dir import CACHE_OPTION_HELP


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("clips", nargs=-1, type=click.Path())
@click.option("--name", required=True, help="The class name (goes into the bundle's prompt, e.g. 'a photo of {}').")
@click.option("--add", is_flag=True, help="Add these clips as more shots of an enrolled class.")
@click.option("--replace", is_flag=True, help="Enrol an already enrolled class again from these clips.")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait while another process writes the bundle.")
@click.option("--backend", type=click.Choice(["cpu", "trt", "tensorrt", "cuda"]), default="cpu", show_default=True,
              help="What runs the encoders (trt: a Jetson with TensorRT and no onnxruntime).")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help=CACHE_OPTION_HELP)
def enroll(bundle: Path, clips: Tuple[str, ...], name: str, add: bool, replace: bool, timeout: float,
           backend: str = "cpu", cache_dir: Optional[Path] = None) -> None:
    """Enrol a class from K clips (video files or frame folders), or from its NAME alone (no clips: zero-shot),
    into BUNDLE, torch-free. The prototype store is rewritten atomically under a lock."""
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.enroll import Enroller, EnrollError

    if add and replace:
        raise EnrollError("pass --add or --replace, not both")
    mode = "add" if add else "replace" if replace else "new"
    b = Enroller(Bundle.open(bundle), backend=backend, cache_dir=cache_dir).enroll(name, list(clips), mode, timeout)
    i = b.store.class_names.index(name.strip())
    k = int(b.store.shots[i])
    what = f"{k} shot{'s' if k != 1 else ''}" if k else "zero-shot (text feature only, scored by the video-text branch)"
    n = len(b.store.class_names)
    click.echo(f"enrolled '{name.strip()}' in {bundle}: {what}; {n} class{'es' if n != 1 else ''}")
    if name.strip() in (b.manifest.cohort.get("class_names") or []):
        click.echo(f"note: the open-set cohort holds clips of '{name.strip()}' (split "
                   f"'{b.manifest.cohort.get('split')}'), which now is enrolled: its 'known' scores come out low; "
                   f"rebuild the cohort with `clipfsar calibrate-threshold` (it leaves enrolled classes out)", err=True)
    _remind_threshold(b)


def _remind_threshold(b) -> None:
    """After the classes changed: the fitted 'unknown' threshold (if any) was fitted for the old ones."""
    t = b.manifest.calibration.get("threshold") or {}
    if t.get("value") is not None and t.get("score") == "znorm":
        click.echo("note: the 'unknown' threshold (znorm: normalised per class and for the number of classes) still "
                   "applies, but its false-accept rate was measured with the previous classes: run `clipfsar "
                   "calibrate-threshold` again to re-measure it", err=True)
    elif t.get("value") is not None:
        click.echo("note: the 'unknown' threshold was fitted for the previous classes; run `clipfsar "
                   "calibrate-threshold` again", err=True)


@click.group()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.pass_context
def classes(ctx: click.Context, bundle: Path) -> None:
    """List, remove or rename BUNDLE's enrolled classes (atomic; a running classifier keeps its store).

    Example: clipfsar classes bundle/ rename "wave" "waving a hand"
    """
    ctx.obj = bundle


_timeout = click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
                        help="Seconds to wait while another process writes the bundle.")


@classes.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_cmd(bundle: Path, as_json: bool) -> None:
    """The enrolled classes and their shot counts (0 = zero-shot)."""
    from clipfsar.runtime.teaching.classes import list_classes
    infos = list_classes(bundle)
    if as_json:
        click.echo(json.dumps([{"name": c.name, "shots": c.shots} for c in infos]))
        return
    for c in infos:
        click.echo(f"{c.name}\t{c.shots if c.shots else '0 (zero-shot)'}")


@classes.command("remove")
@click.argument("name")
@_timeout
@click.pass_obj
def remove_cmd(bundle: Path, name: str, timeout: float) -> None:
    """Remove class NAME."""
    from clipfsar.runtime.teaching.classes import remove_class
    b = remove_class(bundle, name, timeout)
    left = len(b.store.class_names)
    click.echo(f"removed '{name}'; {left} class{'es' if left != 1 else ''} left")
    _remind_threshold(b)


@classes.command("rename")
@click.argument("old")
@click.argument("new")
@_timeout
@click.pass_obj
def rename_cmd(bundle: Path, old: str, new: str, timeout: float) -> None:
    """Rename OLD to NEW (its text feature and prototype are recomputed for the new name)."""
    from clipfsar.runtime.teaching.classes import rename_class
    b = rename_class(bundle, old, new, timeout)
    click.echo(f"renamed '{old}' to '{new.strip()}'")
    _remind_threshold(b)


@click.command("calibrate-threshold")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(),
              help="Dataset folder (a folder per class + splits/); clips of classes the bundle has not enrolled.")
@click.option("--split", default="val", show_default=True)
@click.option("--far", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True,
              help="Target false-accept rate of unknowns.")
@click.option("--shot", type=click.IntRange(min=1), default=1, show_default=True,
              help="Shots of the open-set episodes measured.")
@click.option("--episodes", type=click.IntRange(min=1), default=500, show_default=True,
              help="Open-set episodes measured.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cohort-split", default=None,
              help="Split of --data whose clips (classes not enrolled) become the open-set cohort the 'znorm' score "
                   "is normalised against [default: train when --data has it, else the bundle's cohort if any]; "
                   "'none': threshold the max calibrated probability instead.")
@click.option("--dry-run", is_flag=True, help="Measure and print; do not write the manifest.")
def calibrate_threshold(bundle: Path, data: str, split: str, far: float, shot: int, episodes: int, seed: int,
                        cohort_split: Optional[str], dry_run: bool) -> None:
    """Fit the "unknown" threshold at a false-accept rate on clips of classes BUNDLE has not enrolled; `run` then
    uses it by default (--threshold overrides, --threshold 0 turns rejection off)."""
    import os

    from clipfsar.runtime.base.errors import DatasetError
    from clipfsar.runtime.base.redact import refuse_url
    from clipfsar.runtime.bundle.edit import set_cohort
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.openset import fit_threshold, make_cohort, store_threshold

    data = refuse_url(data, "--data")  # a URL is refused (masked) before anything prints it
    if not Path(data).is_dir():
        raise DatasetError(f"--data {data} is not a folder (a folder per class + splits/)")
    b = Bundle.open(bundle)
    if not dry_run and not os.access(bundle, os.W_OK):  # refuse before the work, not after it
        raise DatasetError(f"bundle {bundle} is read-only; pass --dry-run to measure only, or copy it somewhere "
                           f"writable")
    chosen = "train" if cohort_split is None else cohort_split
    cohort = None  # None: the bundle's own (if any); with --cohort-split none, thresholds keep max_prob
    if chosen == "none":
        cohort = (None, {})
    elif chosen == split:
        raise DatasetError(f"the open-set cohort's split ({'--cohort-split' if cohort_split else 'default'} "
                           f"'{chosen}') is the split the threshold is fitted on (--split {split}); the cohort "
                           f"must hold other actions: pass --cohort-split OTHER (or none)")
    elif cohort_split is None and not (Path(data) / "splits" / f"{chosen}.txt").is_file():
        click.echo(f"note: {data} has no splits/{chosen}.txt: " + (
            "the bundle's open-set cohort is kept" if b.manifest.cohort else
            "no open-set cohort, so the threshold is on the max calibrated probability"), err=True)
    else:
        cohort = make_cohort(b, Path(data), chosen, seed=seed)
        click.echo(f"open-set cohort: {len(cohort[0])} clips of {cohort[1]['classes']} classes of split '{chosen}'")
    entry = fit_threshold(b, data, split, far, shot, episodes, seed, cohort=cohort)
    os_ = entry.get("open_set")
    if os_:
        click.echo(f"open-set episodes ({os_['way']}-way {os_['shot']}-shot + {os_['way']} unknown queries, "
                   f"{os_['episodes']} episodes): closed-set accuracy {os_['closed_set_accuracy']:.1f} %")
        for name, m in os_["scores"].items():
            click.echo(f"  {name:<17} AUROC {m['auroc']:.3f}  OSCR {m['oscr']:.3f}")
    what = {"znorm": "Z-normalised open-set score (znorm)"}.get(entry["score"], "max calibrated probability")
    click.echo(f"threshold on {what}: {entry['value']:.6f} (accepts "
               f"{100 * entry['accepted_unknown']:.1f} % of {entry['unknown_clips']} clips of "
               f"{entry['unknown_classes']} classes not enrolled; target {100 * far:g} %)")
    if entry.get("enrolled_clips"):
        click.echo(f"on this bundle's own {len(b.store.class_names)} classes: it accepts "
                   f"{100 * entry['accepted_enrolled']:.1f} % of the split's {entry['enrolled_clips']} clips of "
                   f"enrolled classes (support clips included); AUROC enrolled vs not enrolled "
                   f"{entry['bundle_auroc']:.3f}")
    if dry_run:
        click.echo("--dry-run: nothing stored")
    else:
        if cohort is not None and cohort[0] is not None:  # cohort and threshold in one manifest write
            cal = dict(b.manifest.calibration, threshold=entry)
            set_cohort(b.root, *cohort, calibration=cal)
        else:
            store_threshold(b, entry)
        click.echo(f"stored in {bundle}/manifest.json; `clipfsar run` uses it by default")
