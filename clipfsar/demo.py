"""``clipfsar demo``: the whole chain on synthetic data, on a CPU, in about ten minutes.

synthetic clips -> a short training run of the tiny model -> evaluation on the test classes -> export to a
bundle -> a generated video streamed through the torch-free runtime into an annotated video.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click
import numpy as np


def _step(title: str) -> float:
    click.secho(f"\n== {title}", bold=True)
    return time.perf_counter()


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--steps", default=450, show_default=True, help="Training steps (4 episodes each).")
@click.option("--episodes", default=1000, show_default=True, help="Test episodes for the evaluation.")
@click.option("--seed", default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="Delete OUT first.")
def demo(out: Path, steps: int, episodes: int, seed: int, fresh: bool) -> None:
    """Run the whole chain on synthetic data (the README's main job)."""
    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.runtime import Classifier
    from clipfsar.train.config import TrainConfig
    from clipfsar.train.evaluate import evaluate_checkpoint
    from clipfsar.train.loop import Trainer
    from clipfsar.train.synth import make_dataset, render_clip, write_video

    start = time.perf_counter()
    if fresh or (out.exists() and not (out / "done").exists()):
        shutil.rmtree(out, ignore_errors=True)  # a demo folder left half-done by an earlier run
    if (out / "done").exists():
        click.echo(f"{out} holds a finished demo; pass --fresh to run it again")
        return
    out.mkdir(parents=True)
    data, run, bundle = out / "data", out / "run", out / "bundle"

    t = _step("1/5 synthetic action clips")
    splits = make_dataset(data, seed=seed, clips_per_class=20)
    click.echo(f"{data}: " + ", ".join(f"{k} {len(v)} classes" for k, v in splits.items())
               + f" x 20 clips ({time.perf_counter() - t:.0f} s)")

    t = _step(f"2/5 training the tiny model ({steps} steps of 4 episodes, 5-way 1-shot)")
    cfg = TrainConfig(data=str(data), out=str(run), arch="tiny", steps=steps, seed=seed, lr=1e-3, warmup_steps=10,
                      warmup_lr=1e-5, schedule="cosine", alpha=0.5, query=3, episodes_per_step=4,
                      val_every=max(1, steps // 4), val_episodes=300)
    Trainer(cfg).run()
    click.echo(f"run folder {run} ({time.perf_counter() - t:.0f} s)")

    t = _step(f"3/5 evaluation on the unseen test classes ({episodes} episodes, 5-way 1-shot)")
    report = evaluate_checkpoint(run, data, "test", 5, 1, episodes, seed)
    for branch, acc in report["branches"].items():
        click.echo(f"  {branch:<10} {acc['accuracy']:5.1f} +- {acc['ci95']:.1f} %  (chance 20 %)")

    t = _step("4/5 export: ONNX graphs + prototypes of the 9 test classes (5 shots each)")
    b = export_bundle(run, data, bundle, shots=5, classes_file=data / "splits" / "test.txt", window_seconds=2.0)
    for g, d in b.manifest.parity["graphs"].items():
        click.echo(f"  {g:<14} onnxruntime vs torch max abs diff {d:.1e}")
    click.echo(f"bundle {bundle} ({time.perf_counter() - t:.0f} s)")

    t = _step("5/5 streaming a new video through the torch-free runtime")
    rng = np.random.default_rng(seed + 100)
    truth, frames = [], []
    for name in splits["test"][:4]:
        shape, motion = name[2:].split(" ", 1)
        truth.append((len(frames) / 12, name))
        frames += render_clip(shape, motion, rng, 96, 36)
    write_video(out / "stream.mp4", frames, fps=12)
    clf = Classifier.load(bundle, backend="auto")
    click.echo(f"backend: {clf.providers['image_encoder']}")
    from clipfsar.runtime.annotate import AnnotatedSink
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
    t = _step("device side: enrol a held-out class from 5 clips where torch cannot be imported, then 'unknown'")
    from clipfsar.demo_enroll import enrol_and_stream
    enrol_and_stream(out, bundle, data, splits, seed)
    (out / "done").write_text("ok\n")
    click.secho(f"\ndone in {(time.perf_counter() - start) / 60:.1f} min", bold=True)
    click.echo("""
The same on real data with real CLIP weights (a folder per class of videos + splits/{train,val,test}.txt):
  clipfsar train --data DATA --out runs/rn50 --preset hmdb51          # CLIP-RN50, openai weights, paper settings
  clipfsar train --data DATA --out runs/vitb16 --arch ViT-B-16 --weights openai --steps 2000
  clipfsar eval --checkpoint runs/vitb16 --data DATA --split test --shot 1 --episodes 10000
  clipfsar export --checkpoint runs/vitb16 --support SUPPORT_DIR --shots 5 --out bundle
  clipfsar run bundle --source 0 --show                              # camera 0, live
""")
