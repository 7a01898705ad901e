"""``clipfsar demo``: the whole chain on synthetic data, on a CPU, in under eight minutes.

Per synthetic family (``--families``; default the appearance family, the Kinetics/UCF/HMDB analogue; ``motion`` is
the Something-Something analogue): clips -> zero-shot with the shipped frame-level prior -> a short training run
of the heads on the prior's frozen image tower (cached frame features) -> evaluation on the test classes ->
export to a bundle -> a generated video streamed through the torch-free runtime -> the teach step: a held-out class
enrolled torch-free from 5 clips and recognised, a never-enrolled one called 'unknown' -> open-set AUROC / OSCR at
1 and 5 shots (protocol unknowns and unknowns sharing a factor with a known class). Every number printed is also in
``OUT/summary.json`` under ``families.<family>``.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List

import click
import numpy as np

ALPHA = 0.5  # weight of the video-text loss in training
ARCH = "small"  # the default: CLIP's ResNet design at 64 px, with the shipped prior (docs/default-model.md)
STEPS = 300  # training steps (4 episodes each) on cached frame features; appearance family, 900 steps: training
#            episode accuracy 0.97 at step 100, val 99.0 % at 900 (docs/default-model.md)


def _step(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


def _fresh_image_tower(weights: str, path: Path, seed: int, arch: str = ARCH) -> str:
    """Write ``weights`` with the image tower (``visual.*``) replaced by a seeded random init to ``path`` (the
    previous demo's recipe; benchmarks/text_token_ablation.py compares it)."""
    import torch
    from safetensors.torch import save_file

    from clipfsar.train.backbone import create_clip
    torch.manual_seed(seed)
    fresh = create_clip(arch, None).state_dict()
    state = {k: (fresh[k] if k.startswith("visual.") else v).contiguous()
             for k, v in create_clip(arch, weights).state_dict().items()}
    save_file(state, str(path))
    return str(path)


def train_config(data: Path, run: Path, init, seed: int, steps: int, alpha: float = ALPHA, frozen: bool = False,
                 arch: str = ARCH, **model):
    """The demo's training run: the ``arch`` model from ``init``, 4 episodes of 5-way 1-shot per step, lr 1e-3 cosine;
    ``frozen``: the image tower fixed and its frame features cached (2 samplings per clip), only the heads train
    (what the demo does with the frame-level prior); ``model`` overrides ModelConfig fields
    (``text_in_prototype=False``: the paper's ablation).

    Example:
        >>> Trainer(train_config(Path("data"), Path("run"), "synth", seed=0, steps=900, frozen=True)).run()
    """
    from clipfsar.train.config import TrainConfig
    extra = {"freeze_backbone": True, "cache_samplings": 2} if frozen else {}
    return TrainConfig(data=str(data), out=str(run), arch=arch, weights=init, steps=steps, seed=seed, lr=1e-3,
                       warmup_steps=10, warmup_lr=1e-5, schedule="cosine", alpha=alpha, query=3, episodes_per_step=4,
                       val_every=max(1, steps // 4), val_episodes=300, model=model, **extra)


def write_threshold_split(data: Path, splits: Dict[str, List[str]], leave_out: List[str]) -> str:
    """``splits/calib.txt``: the val classes but ``leave_out`` (the teach step's enrolled and never-enrolled classes),
    so the "unknown" threshold is fitted on actions that are neither enrolled nor the one streamed as unknown (the
    open-set cohort is the train split's clips). Returns the split's name."""
    from clipfsar.train.synth import folder_name
    names = [n for n in splits["val"] if n not in leave_out]
    (data / "splits" / "calib.txt").write_text("".join(folder_name(n) + "\n" for n in names))
    return "calib"


def run_family(out: Path, family: str, weights, steps: int, episodes: int, seed: int,
               open_set_episodes: int, arch: str = ARCH) -> Dict:
    """The whole chain for one synthetic family in ``out`` (module docstring); returns its summary."""
    from clipfsar.demo_enroll import enrol_and_stream
    from clipfsar.demo_openset import open_set_tables
    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.train.evaluate import evaluate_checkpoint
    from clipfsar.train.loop import Trainer
    from clipfsar.train.synth import make_dataset, render_class_clip, shares_a_factor, write_video
    from clipfsar.train.zeroshot import zero_shot_accuracy

    summary: Dict = {"family": family}
    start = time.perf_counter()
    out.mkdir(parents=True)
    data, run, bundle = out / "data", out / "run", out / "bundle"
    t = _step(f"[{family}] 1/8 synthetic clips and their captions")
    splits = make_dataset(data, seed=seed, clips_per_class=20, family=family)
    click.echo(f"{data}: " + ", ".join(f"{k} {len(v)} classes" for k, v in splits.items())
               + f" x 20 clips, e.g. '{splits['test'][0]}'; captions (clip and per-frame) in "
               f"{data / 'captions.txt'} ({time.perf_counter() - t:.0f} s)")
    summary["classes"] = splits

    t = _step(f"[{family}] 2/8 the prior: zero-shot on the unseen test classes ({episodes} episodes, 5-way, no "
              f"support clip, no training)")
    summary["zero_shot_before_training"] = {}
    for label, w in (("random init", None), (f"weights '{weights}'", weights)):
        if w is None and label != "random init":
            continue
        acc = zero_shot_accuracy(data, arch, w, "test", 5, episodes, seed)
        summary["zero_shot_before_training"][label] = acc
        click.echo(f"  {label:<22} {acc['accuracy']:5.1f} +- {acc['ci95']:.1f} %  (chance 20 %)")

    frozen = weights is not None
    t = _step(f"[{family}] 3/8 training from {weights or 'random init'} ({steps} steps of 4 episodes, 5-way 1-shot): "
              + ("the prior's image tower frozen, its frame features cached; the temporal head trains"
                 if frozen else "every tower but the text tower is trained"))
    Trainer(train_config(data, run, weights, seed, steps, frozen=frozen, arch=arch)).run()
    summary["train_seconds"] = round(time.perf_counter() - t, 1)
    summary["frozen_backbone"] = frozen
    click.echo(f"run folder {run} ({time.perf_counter() - t:.0f} s)")

    t = _step(f"[{family}] 4/8 evaluation on the unseen test classes ({episodes} episodes, 5-way; zero-shot = the "
              f"video-text branch alone, fusion beta 0.9)")
    summary["evaluation"] = {}
    click.echo(f"  {'':<8}{'zero-shot':>16}{'few-shot':>16}{'fusion':>16}   (chance 20 %)")
    for shot in (1, 5):
        report = evaluate_checkpoint(run, data, "test", 5, shot, episodes, seed, beta=0.9)
        br = report["branches"]
        summary["evaluation"][f"{shot}-shot"] = {"zero_shot": br["videotext"], "few_shot": br["fewshot"],
                                                 "fusion": br["fusion"], "beta": report["beta"]}
        cells = "".join(f"{br[k]['accuracy']:9.1f} +- {br[k]['ci95']:.1f}" for k in ("videotext", "fewshot", "fusion"))
        click.echo(f"  {shot}-shot {cells}")

    t = _step(f"[{family}] 5/8 export: ONNX graphs + prototypes of the 9 test classes (5 shots each)")
    b = export_bundle(run, data, bundle, shots=5, classes_file=data / "splits" / "test.txt", window_seconds=2.0)
    for g, d in b.manifest.parity["graphs"].items():
        click.echo(f"  {g:<14} onnxruntime vs torch max abs diff {d:.1e}")
    summary["export"] = {"parity_max_abs_diff": dict(b.manifest.parity["graphs"]),
                         "seconds": round(time.perf_counter() - t, 1)}

    t = _step(f"[{family}] 6/8 streaming a new video through the torch-free runtime")
    summary["streaming"] = _stream(out, bundle, splits["test"][:4], seed, render_class_clip, write_video)

    t = _step(f"[{family}] 7/8 the teach step, where torch cannot be imported: enrol a held-out class from 5 clips, "
              f"fit 'unknown' on other val classes, stream it and a never-enrolled class")
    from clipfsar.demo_enroll import pick_classes
    picked = pick_classes(splits)
    calib = write_threshold_split(data, splits, [picked["held"], picked["other"]])
    summary["enrolment"] = enrol_and_stream(out, bundle, data, splits, seed, threshold_split=calib,
                                            cohort_split="train")
    e = summary["enrolment"]
    e["goal_met"] = e["enrolled_ok"] >= 4 and e["unknown_ok"] >= 4

    t = _step(f"[{family}] 8/8 open set, torch-free: 5-way episodes of the test classes, 5 unknown queries of each "
              f"kind ({open_set_episodes} episodes): protocol unknowns (other test classes) and unknowns sharing a "
              f"factor with a class of the episode (val classes)")
    tables = open_set_tables(bundle, data, shares_a_factor, episodes=open_set_episodes, seed=seed)
    for kind in ("protocol", "factor_sharing"):
        for shot, m in tables[kind].items():
            cells = "  ".join(f"{k} AUROC {v['auroc']:.3f} OSCR {v['oscr']:.3f}" for k, v in m["scores"].items())
            click.echo(f"  {kind:<15}{shot}  closed-set {m['closed_set_accuracy']:5.1f} %  {cells}")
    summary["open_set"] = tables
    summary["open_set"]["goal_met"] = all(m["scores"]["znorm"]["auroc"] >= 0.80
                                          for m in tables["factor_sharing"].values())
    summary["open_set"]["seconds"] = round(time.perf_counter() - t, 1)
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
    return summary


def _stream(out: Path, bundle: Path, names: List[str], seed: int, render, write_video) -> Dict:
    """Stream a video of ``names`` (3 s each) through the bundle; count windows inside one action labelled right."""
    from clipfsar.runtime import Classifier
    from clipfsar.runtime.classify.annotate import AnnotatedSink
    rng = np.random.default_rng(seed + 100)
    truth, frames = [], []
    for name in names:
        truth.append((len(frames) / 12, name))
        frames += render(name, rng, 96, 36)[0]
    write_video(out / "stream.mp4", frames, fps=12)
    clf = Classifier.load(bundle, backend="auto")
    click.echo(f"backend: {clf.providers['image_encoder']}")
    sink = AnnotatedSink(out / "annotated.mp4", False, 12.0)
    correct = total = 0
    with open(out / "decisions.jsonl", "w") as log:
        try:
            for d in clf.stream(out / "stream.mp4", window=2.0, hop=0.5, smooth=2, on_frame=sink):
                actual = [n for s, n in truth if s <= d.t_start + 1e-6][-1]
                inside = d.t_end < next((s for s, _ in truth if s > d.t_start + 1e-6), 1e9)
                mark = "" if not inside else ("ok" if d.label == actual else "wrong")
                correct, total = correct + (mark == "ok"), total + bool(inside)
                click.echo(f"  [{d.t_start:5.2f}-{d.t_end:5.2f}s] {d.label:<30} {d.score:.2f}  "
                           f"(playing: {actual}) {mark}")
                log.write(json.dumps({"label": d.label, "score": d.score, "t_start": d.t_start,
                                      "t_end": d.t_end, "frame": d.frame, "truth": actual}) + "\n")
        finally:
            sink.close()
    per_decision = clf.stats.encoder_images / max(1, clf.stats.decisions)
    click.echo(f"{correct}/{total} windows inside one action labelled right; annotated video "
               f"{out / 'annotated.mp4'}; each decision cost {per_decision:.0f} image-encoder images")
    return {"windows_right": correct, "windows_inside_one_action": total, "decisions": clf.stats.decisions,
            "encoder_images_per_decision": per_decision, "backend": clf.providers["image_encoder"]}


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--families", default="appearance", show_default=True,
              help="Comma-separated synthetic families to run: appearance (classes told apart by what is in the "
                   "frames), motion (by how things move).")
@click.option("--steps", default=STEPS, show_default=True, help="Training steps (4 episodes each).")
@click.option("--episodes", default=2000, show_default=True, help="Test episodes for each evaluation.")
@click.option("--open-set-episodes", default=100, show_default=True, help="Episodes of each open-set measurement.")
@click.option("--arch", default=ARCH, show_default=True,
              help="Architecture: small (the default prior's), tiny (the earlier ViT prior), or any open_clip name.")
@click.option("--weights", default="synth", show_default=True,
              help="Initial weights of ARCH: the shipped frame-level prior 'synth', a weights file, or 'none' (random "
                   "init, every tower trained).")
@click.option("--seed", default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="Delete OUT first.")
def demo(out: Path, families: str, steps: int, episodes: int, open_set_episodes: int, arch: str, weights: str,
         seed: int, fresh: bool) -> None:
    """Run the whole chain on synthetic data (the README's main job)."""
    from clipfsar.runtime.base.jsonconfig import write_json_atomic
    from clipfsar.train.synth import FAMILIES

    chosen = [f.strip() for f in families.split(",") if f.strip()]
    bad = [f for f in chosen if f not in FAMILIES]
    if bad or not chosen:
        raise click.BadParameter(f"unknown family {', '.join(bad) or '(none)'}; choose from {', '.join(FAMILIES)}",
                                 param_hint="--families")
    weights = None if weights.lower() in ("none", "random") else weights
    from clipfsar.train.backbone import create_clip
    create_clip(arch, weights)  # an unknown architecture or missing weights fail here, before OUT is touched
    start = time.perf_counter()
    if fresh or (out.exists() and not (out / "done").exists()):
        shutil.rmtree(out, ignore_errors=True)  # a demo folder left half-done by an earlier run
    if (out / "done").exists():
        click.echo(f"{out} holds a finished demo; pass --fresh to run it again")
        return
    out.mkdir(parents=True)
    summary: Dict = {"seed": seed, "steps": steps, "episodes": episodes, "arch": arch,
                     "weights": weights or "random init",
                     "families": {}}
    for family in chosen:
        summary["families"][family] = run_family(out / family, family, weights, steps, episodes, seed,
                                                 open_set_episodes, arch)
        write_json_atomic(out / "summary.json", summary)  # a family's numbers are kept as soon as it is done
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
    click.secho("\n== summary", bold=True)
    for family, s in summary["families"].items():
        e, one = s["enrolment"], s["evaluation"]["1-shot"]
        fs = s["open_set"]["factor_sharing"]
        click.echo(f"  {family}: few-shot 1-shot {one['few_shot']['accuracy']:.1f} %, zero-shot "
                   f"{one['zero_shot']['accuracy']:.1f} %; teach step: '{e['held']}' {e['enrolled_ok']}/"
                   f"{e['enrolled_windows']} windows, never-enrolled '{e['other']}' unknown {e['unknown_ok']}/"
                   f"{e['unknown_windows']}; factor-sharing open-set AUROC (znorm) "
                   + ", ".join(f"{k} {m['scores']['znorm']['auroc']:.3f}" for k, m in fs.items()))
    write_json_atomic(out / "summary.json", summary)
    (out / "done").write_text("ok\n")
    click.secho(f"\ndone in {summary['minutes']:.1f} min; every number above is in {out / 'summary.json'}",
                bold=True)
    click.echo("""
The same on real data with real CLIP weights (a folder per class of videos + splits/{train,val,test}.txt):
  clipfsar train --data DATA --out runs/rn50 --preset hmdb51          # CLIP-RN50, openai weights, paper settings
  clipfsar train --data DATA --out runs/vitb16 --arch ViT-B-16 --weights openai --steps 2000
  clipfsar eval --checkpoint runs/vitb16 --data DATA --split test --shot 1 --episodes 10000
  clipfsar export --checkpoint runs/vitb16 --support SUPPORT_DIR --shots 5 --out bundle
  clipfsar run bundle --source 0 --show                              # camera 0, live
""")
