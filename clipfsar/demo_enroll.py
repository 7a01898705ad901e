"""The demo's device-side step: enrol a held-out class torch-free, fit "unknown", stream it and an unknown action.

Everything here runs ``clipfsar`` in a subprocess where torch, torchvision and open_clip cannot be imported (stub
packages that raise ImportError shadow them), as on a device with the runtime only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import click
import numpy as np


def torch_free_env(folder: Path) -> Dict[str, str]:
    """An environment whose Python cannot import torch, torchvision or open_clip."""
    for name in ("torch", "torchvision", "open_clip"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed on this device')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _clipfsar(args: List[str], env: Dict[str, str]) -> str:
    r = subprocess.run([sys.executable, "-m", "clipfsar", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise click.ClickException(f"clipfsar {args[0]} failed on the device side:\n{r.stderr[-2000:]}")
    return r.stdout


def pick_classes(splits: Dict[str, List[str]]) -> Dict[str, object]:
    """The teach step's two val classes: ``held`` (enrolled) shares a factor with a bundle (test) class; ``other``
    (never enrolled) shares a factor with a bundle class too, and preferably with ``held`` (the hard unknown)."""
    from clipfsar.train.synth import class_factors, shares_a_factor
    test = splits["test"]
    held = next(v for v in splits["val"] if any(shares_a_factor(v, t) for t in test))
    rest = [v for v in splits["val"] if v != held and any(shares_a_factor(v, t) for t in test)]
    other = next((v for v in rest if shares_a_factor(v, held)), rest[0])
    shared = lambda a: sorted({f for t in test for f, g in zip(class_factors(a), class_factors(t)) if f == g})
    return {"held": held, "other": other, "held_shares_with_bundle": shared(held),
            "other_shares_with_bundle": shared(other),
            "other_shares_with_held": sorted(set(class_factors(held)) & set(class_factors(other)))}


def enrol_and_stream(out: Path, bundle: Path, data: Path, splits: Dict[str, List[str]], seed: int = 0,
                     shots: int = 5, far: float = 0.1, threshold_split: str = "calib",
                     cohort_split: Optional[str] = "cohort") -> Dict:
    """Enrol a held-out val class (``pick_classes``) from ``shots`` clips, fit the "unknown" threshold on clips of
    ``threshold_split`` against a cohort of ``cohort_split`` (the demo writes both from halves of the train
    clips, so no val class is seen when fitting), then stream a video of the enrolled action followed by the other
    val class (never enrolled): it should come out ``unknown``.

    The threshold is fitted at a ``far`` false-accept rate (``calibrate-threshold`` defaults to 5 %).

    Returns:
        the classes, counts of windows labelled as expected inside each part, and the enrolment's wall time.
    """
    from clipfsar.train.synth import folder_name, render_class_clip, write_video

    env = torch_free_env(out / "device_no_torch")
    picked = pick_classes(splits)
    held, other = picked["held"], picked["other"]
    clips = [str(p) for p in sorted((data / folder_name(held)).glob("*.mp4"))[:shots]]
    t0 = time.perf_counter()
    click.echo(_clipfsar(["enroll", str(bundle), "--name", held, *clips], env).strip())
    enrol_s = time.perf_counter() - t0
    args = ["--cohort-split", cohort_split] if cohort_split else []
    click.echo(_clipfsar(["calibrate-threshold", str(bundle), "--data", str(data), "--split", threshold_split,
                          "--far", str(far), "--episodes", "300", *args], env).rstrip())
    rng = np.random.default_rng(seed + 200)
    frames, parts = [], []
    for name in (held, other):
        parts.append((len(frames) / 12, name))
        frames += render_class_clip(name, rng, 96, 48)[0]
    video = out / "enrol_stream.mp4"
    write_video(video, frames, fps=12)
    lines = _clipfsar(["run", str(bundle), "--source", str(video), "--json", "--window", "2.0", "--hop", "0.5",
                       "--smooth", "2"], env).splitlines()
    counts = {**picked, "enrolled_ok": 0, "enrolled_windows": 0, "unknown_ok": 0, "unknown_windows": 0, "far": far,
              "shots": shots, "enrol_seconds_subprocess": round(enrol_s, 2), "threshold_split": threshold_split,
              "cohort_split": cohort_split}
    for d in map(json.loads, lines):
        start = [s for s, _ in parts if s <= d["t_start"] + 1e-6][-1]
        playing = dict(parts)[start]
        inside = d["t_end"] < next((s for s, _ in parts if s > d["t_start"] + 1e-6), 1e9)
        expected = held if playing == held else "unknown"
        mark = "" if not inside else ("ok" if d["label"] == expected else "wrong")
        if inside:
            key = "enrolled" if playing == held else "unknown"
            counts[f"{key}_windows"] += 1
            counts[f"{key}_ok"] += mark == "ok"
        known = f"known {d['known']:.3f}  " if "known" in d else ""
        click.echo(f"  [{d['t_start']:5.2f}-{d['t_end']:5.2f}s] {d['label']:<30} {d['score']:.2f}  {known}"
                   f"(playing: {playing}{'' if playing == held else ', not enrolled'}) {mark}")
    click.echo(f"{counts['enrolled_ok']}/{counts['enrolled_windows']} windows of the enrolled class labelled "
               f"'{held}', {counts['unknown_ok']}/{counts['unknown_windows']} windows of '{other}' (not enrolled) "
               f"labelled 'unknown'")
    return counts
