"""Benchmark: on-device enrolment time and open-set quality of the rejection scores.

1. Enrolment time per class at K = 1 and 5 shots (tiny and random-init ViT-B-16 bundles, onnxruntime CPU):
   ``Enroller.enroll`` end to end (decode, preprocess, image encoder on K x T frames, tokenizer + text encoder,
   support head, locked atomic store write). ``cold`` includes creating the three inference sessions (a fresh
   process's first enrolment); ``warm`` is the median of the next runs.
2. Open-set quality (few-shot open-set protocol after Berti et al. 2026): seeded 5-way 1-shot and 5-shot episodes
   on the test split whose queries are one clip of each episode class plus 5 clips of test classes outside the
   episode; AUROC and OSCR of each candidate rejection score, closed-set accuracy of the calibrated probability
   and of the paper's fused probability (same argmax when beta = 0). ``znorm`` (teaching/cohort.py) is normalised
   against a cohort of up to 256 train-split clips, as ``clipfsar calibrate-threshold`` builds it.

    .venv/bin/python benchmarks/enrol_bench.py --run RUN --data DATA [--episodes 2000] [--archs tiny ViT-B-16]

RUN: a trained tiny run folder (e.g. ``demo_out/run``), DATA its synthetic dataset (``demo_out/data``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path


def enrol_times(bundle: Path, clips, reps: int = 3) -> dict:
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.enroll import Enroller
    out = {}
    from clipfsar.runtime.teaching.classes import remove_class
    for k in (1, 5):
        if f"bench class k{k}" in Bundle.open(bundle, check_hashes=False).store.class_names:  # a --keep rerun
            remove_class(bundle, f"bench class k{k}")
        t0 = time.perf_counter()
        e = Enroller(Bundle.open(bundle))
        e.enroll(f"bench class k{k}", clips[:k])
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(reps):
            t0 = time.perf_counter()
            e.enroll(f"bench class k{k}", clips[:k], mode="replace")
            warm.append(time.perf_counter() - t0)
        feats = []
        for _ in range(reps):  # the clips alone: decode, preprocess, image encoder on K x T frames
            t0 = time.perf_counter()
            [e.clip_features(c) for c in clips[:k]]
            feats.append(time.perf_counter() - t0)
        out[k] = {"cold_s": cold, "warm_median_s": statistics.median(warm),
                  "clip_features_median_s": statistics.median(feats)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="Trained tiny run (without it: only the ViT-B-16 enrolment times).")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--archs", nargs="+", default=["tiny", "ViT-B-16"])
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("bench_out/enrol"))
    ap.add_argument("--keep", action="store_true", help="Reuse full-size bundles already in --out (no re-export).")
    a = ap.parse_args()
    from clipfsar.export.bundle_export import export_bundle
    from clipfsar.runtime.bundle.reader import Bundle
    from clipfsar.runtime.teaching.calibration import softmax
    from clipfsar.runtime.teaching.cohort import MAX_COHORT_CLIPS, sample_cohort
    from clipfsar.runtime.teaching.openset import encode_split, open_set_metrics, run_episodes

    if not a.keep:
        shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True, exist_ok=True)
    test_classes = a.data / "splits" / "test.txt"
    if a.run is None:
        a.archs = [x for x in a.archs if x != "tiny"]
    else:
        t0 = time.perf_counter()
        tiny = export_bundle(a.run, a.data, a.out / "tiny_bundle", shots=5, classes_file=test_classes,
                             window_seconds=2.0, parity_episodes=10, force=True)
        print(f"exported the trained tiny bundle in {time.perf_counter() - t0:.0f} s; calibration:",
              json.dumps({k: v for k, v in tiny.manifest.calibration.items() if k != "fitted_on"}))
    val_cls = (a.data / "splits" / "val.txt").read_text().split()[0]
    clips = sorted((a.data / val_cls).glob("*.mp4"))[:5]
    report = {"enrol": {}, "open_set": {}}
    for arch in a.archs:
        if arch == "tiny":
            path = a.out / "tiny_bundle"
        elif a.keep and (a.out / f"{arch}_bundle" / "manifest.json").is_file():
            path = a.out / f"{arch}_bundle"
        else:  # a random-init full-size model: times only
            import torch

            from clipfsar.train import create_model_and_transforms, save_checkpoint
            torch.manual_seed(0)
            model, prep = create_model_and_transforms(arch)
            ck = save_checkpoint(a.out / f"{arch}_ckpt", model, prep)
            del model
            path = a.out / f"{arch}_bundle"
            export_bundle(ck, a.data, path, shots=1, classes_file=test_classes, parity_episodes=2,
                          val_episodes=0)
        report["enrol"][arch] = enrol_times(path, clips)
        for k, r in report["enrol"][arch].items():
            print(f"enrol {arch:<9} K={k}: cold {r['cold_s']:.2f} s, warm median {r['warm_median_s']:.2f} s "
                  f"(clips through the image encoder alone: {r['clip_features_median_s']:.2f} s)")
    if a.run is None:
        (a.out / "report.json").write_text(json.dumps(report, indent=2))
        return
    b = Bundle.open(a.out / "tiny_bundle")
    feats = encode_split(b, a.data, "test")
    cal = b.manifest.calibration
    train = encode_split(b, a.data, "train")  # the open-set cohort, as `calibrate-threshold` builds it
    cohort, _ = sample_cohort(train.clips, MAX_COHORT_CLIPS, seed=0)
    for shot in (1, 5):
        m = open_set_metrics(b, feats, cal, shot, a.episodes, seed=0, cohort=cohort)
        ep = run_episodes(b, feats, 5, shot, a.episodes, 0)  # closed set: the paper's fused argmax
        fused_acc = float((ep.fused.argmax(-1) == ep.labels).mean() * 100)
        cal_acc = float((softmax(-ep.distances / cal["temperature"]).argmax(-1) == ep.labels).mean() * 100)
        m["closed_set_accuracy_fused"] = fused_acc
        m["closed_set_accuracy_calibrated"] = cal_acc
        report["open_set"][shot] = m
        print(f"\n5-way {shot}-shot, {a.episodes} episodes (+5 unknown queries each): closed-set accuracy "
              f"calibrated {cal_acc:.2f} %, paper fused {fused_acc:.2f} %")
        print("| score | AUROC | OSCR |\n|---|---|---|")
        for name, s in m["scores"].items():
            print(f"| {name} | {s['auroc']:.3f} | {s['oscr']:.3f} |")
    (a.out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
