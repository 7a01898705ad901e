"""``clipfsar demo``: the whole chain on synthetic data, on a CPU, in under ten minutes.

synthetic clips -> the text prior of the shipped pretrained tiny weights (zero-shot) -> a short training run
from those weights -> evaluation on the test classes -> export to a bundle -> a generated video streamed through
the torch-free runtime into an annotated video. Every number printed is also in ``OUT/summary.json``.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click
import numpy as np

ALPHA = 0.5  # weight of the video-text loss in training; with --steps 900 the best of the recipes compared on
#             val (README, "The demo's recipe now")


def _step(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


def _fresh_image_tower(weights: str, path: Path, seed: int) -> str:
    """Write ``weights`` with the image tower (``visual.*``) replaced by a seeded random init to ``path``."""
    import torch
    from safetensors.torch import save_file

    from clipfsar.train.backbone import create_clip
    torch.manual_seed(seed)
    fresh = create_clip("tiny", None).state_dict()
    state = {k: (fresh[k] if k.startswith("visual.") else v).contiguous()
             for k, v in create_clip("tiny", weights).state_dict().items()}
    save_file(state, str(path))
    return str(path)


def train_config(data: Path, run: Path, init, seed: int, steps: int, alpha: float = ALPHA, **model):
    """The demo's training run (step 3/6): tiny model from ``init``, 4 episodes of 5-way 1-shot per step, lr 1e-3
    cosine; ``model`` overrides ModelConfig fields (``text_in_prototype=False``: the paper's ablation).

    Example:
        >>> Trainer(train_config(Path("data"), Path("run"), "init.safetensors", seed=0, steps=900)).run()
    """
    from clipfsar.train.config import TrainConfig
    return TrainConfig(data=str(data), out=str(run), arch="tiny", weights=init, steps=steps, seed=seed, lr=1e-3,
                       warmup_steps=10, warmup_lr=1e-5, schedule="cosine", alpha=alpha, query=3, episodes_per_step=4,
                       val_every=max(1, steps // 4), val_episodes=300, model=model)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--steps", default=900, show_default=True, help="Training steps (4 episodes each).")
@click.option("--episodes", default=2000, show_default=True, help="Test episodes for each evaluation.")
@click.option("--weights", default="synth", show_default=True,
              help="Initial tiny weights: the shipped pretrained 'synth', a weights file, or 'none' (random).")
@click.option("--seed", default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="Delete OUT first.")
def demo(out: Path, steps: int, episodes: int, weights: str, seed: int, fresh: bool) -> None:
    """Run the whole chain on synthetic data (the README's main job)."""
    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.runtime import Classifier
    from clipfsar.runtime.base.jsonconfig import write_json_atomic
    from clipfsar.train.evaluate import evaluate_checkpoint
    from clipfsar.train.loop import Trainer
    from clipfsar.train.synth import make_dataset, render_clip, write_video
    from clipfsar.train.zeroshot import zero_shot_accuracy

    weights = None if weights.lower() in ("none", "random") else weights
    summary: dict = {"seed": seed, "steps": steps, "episodes": episodes, "weights": weights or "random init"}

    start = time.perf_counter()
    if fresh or (out.exists() and not (out / "done").exists()):
        shutil.rmtree(out, ignore_errors=True)  # a demo folder left half-done by an earlier run
    if (out / "done").exists():
        click.echo(f"{out} holds a finished demo; pass --fresh to run it again")
        return
    out.mkdir(parents=True)
    data, run, bundle = out / "data", out / "run", out / "bundle"

    t = _step("1/6 synthetic action clips and their captions")
    splits = make_dataset(data, seed=seed, clips_per_class=20)
    click.echo(f"{data}: " + ", ".join(f"{k} {len(v)} classes" for k, v in splits.items())
               + f" x 20 clips, captions in {data / 'captions.txt'} ({time.perf_counter() - t:.0f} s)")

    t = _step(f"2/6 the text prior: zero-shot on the unseen test classes ({episodes} episodes, 5-way, no support "
              f"clip, no training)")
    summary["zero_shot_before_training"] = {}
    for label, w in (("random init", None), (f"weights '{weights}'", weights)):
        if w is None and label != "random init":
            continue
        acc = zero_shot_accuracy(data, "tiny", w, "test", 5, episodes, seed)
        summary["zero_shot_before_training"][label] = acc
        click.echo(f"  {label:<22} {acc['accuracy']:5.1f} +- {acc['ci95']:.1f} %  (chance 20 %)")

    t = _step(f"3/6 training from {weights or 'random init'} ({steps} steps of 4 episodes, 5-way 1-shot): the text "
              f"tower stays frozen, the image tower starts from random init and is fine-tuned")
    # The prior's image tower saw mean-pooled frames (blind to motion direction): a fresh image tower learns motion
    # from the episodes while the video-text loss aligns it to the frozen pretrained text space (README, 'Pretraining').
    init = _fresh_image_tower(weights, out / "init.safetensors", seed) if weights else None
    Trainer(train_config(data, run, init, seed, steps)).run()
    summary["train_seconds"] = round(time.perf_counter() - t, 1)
    click.echo(f"run folder {run} ({time.perf_counter() - t:.0f} s)")

    t = _step(f"4/6 evaluation on the unseen test classes ({episodes} episodes, 5-way; zero-shot = the video-text "
              f"branch alone, fusion beta 0.9)")
    summary["evaluation"] = {}
    click.echo(f"  {'':<8}{'zero-shot':>16}{'few-shot':>16}{'fusion':>16}   (chance 20 %)")
    for shot in (1, 5):
        report = evaluate_checkpoint(run, data, "test", 5, shot, episodes, seed, beta=0.9)
        br = report["branches"]
        summary["evaluation"][f"{shot}-shot"] = {"zero_shot": br["videotext"], "few_shot": br["fewshot"],
                                                 "fusion": br["fusion"], "beta": report["beta"]}
        cells = "".join(f"{br[k]['accuracy']:9.1f} +- {br[k]['ci95']:.1f}" for k in ("videotext", "fewshot", "fusion"))
        click.echo(f"  {shot}-shot {cells}")
    one = summary["evaluation"]["1-shot"]
    goals = {"zero-shot >= 35 %": one["zero_shot"]["accuracy"] >= 35.0,
             "fusion >= few-shot": all(e["fusion"]["accuracy"] >= e["few_shot"]["accuracy"]
                                       for e in summary["evaluation"].values())}
    summary["goals"] = goals
    click.echo("  " + "; ".join(f"{g}: {'yes' if ok else 'NO'}" for g, ok in goals.items())
               + " (the no-text-token ablation and the random-init runs: README, 'Pretraining')")
    if not goals["fusion >= few-shot"]:
        click.echo("  fusion < few-shot: these classes are defined by motion, which the video-text branch's frame "
                   "averaging erases (README: 'Why the fusion goal is out of reach'); the bundle "
                   "labels windows with the few-shot branch (beta 0, the paper's reported setting)")

    t = _step("5/6 export: ONNX graphs + prototypes of the 9 test classes (5 shots each)")
    b = export_bundle(run, data, bundle, shots=5, classes_file=data / "splits" / "test.txt", window_seconds=2.0)
    for g, d in b.manifest.parity["graphs"].items():
        click.echo(f"  {g:<14} onnxruntime vs torch max abs diff {d:.1e}")
    summary["export"] = {"parity_max_abs_diff": dict(b.manifest.parity["graphs"]),
                         "seconds": round(time.perf_counter() - t, 1)}
    click.echo(f"bundle {bundle} ({time.perf_counter() - t:.0f} s)")

    t = _step("6/6 streaming a new video through the torch-free runtime")
    rng = np.random.default_rng(seed + 100)
    truth, frames = [], []
    for name in splits["test"][:4]:
        shape, motion = name[2:].split(" ", 1)
        truth.append((len(frames) / 12, name))
        frames += render_clip(shape, motion, rng, 96, 36)
    write_video(out / "stream.mp4", frames, fps=12)
    clf = Classifier.load(bundle, backend="auto")
    click.echo(f"backend: {clf.providers['image_encoder']}")
    from clipfsar.runtime.classify.annotate import AnnotatedSink
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
    summary["streaming"] = {"windows_right": correct, "windows_inside_one_action": total,
                            "decisions": clf.stats.decisions, "encoder_images_per_decision": per_decision,
                            "backend": clf.providers["image_encoder"]}
    t = _step("device side: enrol a held-out class from 5 clips where torch cannot be imported, then 'unknown'")
    from clipfsar.demo_enroll import enrol_and_stream
    summary["enrolment"] = enrol_and_stream(out, bundle, data, splits, seed)
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
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
