"""Benchmark: what the prior's frozen image tower knows about a frame, by linear probes on unseen combinations.

Issue 19's teach step and factor-sharing open set need frame features that tell the object's *shape* apart within a
scene. This measures it directly: frames of the train classes of a family's seed-0 split (rendered by the generator,
4 frames from each of ``--clips`` clips per class, 64 px like the tiny model's input) train a logistic-regression
probe on the L2-normalised image embeddings to predict each factor (shape; scene for the appearance family, motion
for the motion family); the probe is scored on frames of the val and test classes, whose factor *combinations* it
has never seen. Chance is 1/5 for the shape and 1/9 for the other factor. A probe that reads the shape off the
scene (the combinations seen in train) scores below chance here.

    .venv/bin/python benchmarks/prior_probe.py [--weights synth|none|FILE] [--arch tiny] [--family appearance]
        [--clips 6] [--zoom 1: crop around the object so it appears ZOOM times larger]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])  # CLIP's normalisation (the tiny model's preprocess)
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def zoomed(frame, state, zoom: float):
    """The ``96 / zoom`` px square around the object (clamped to the frame): the object ``zoom`` times larger."""
    if zoom == 1:
        return frame
    h = frame.shape[0]
    side = int(round(h / zoom))
    x0 = int(np.clip(state.x * h - side / 2, 0, h - side))
    y0 = int(np.clip(state.y * h - side / 2, 0, h - side))
    return frame[y0:y0 + side, x0:x0 + side]


def preprocessed(frame, state, zoom: float, size: int) -> np.ndarray:
    """A generator's BGR uint8 frame as the tiny model's (3, size, size) float32 input (``zoomed`` first)."""
    import cv2
    rgb = cv2.cvtColor(zoomed(frame, state, zoom), cv2.COLOR_BGR2RGB)
    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA) / 255.0
    return ((x - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def embeddings(model, classes, clips: int, size: int, rng, zoom: float = 1.0):
    """(N, D) normalised embeddings and the two factors of each frame."""
    import torch

    from clipfsar.train.synth import class_factors, render_class_clip
    pixels, first, second = [], [], []
    for name in classes:
        shape, other = class_factors(name)
        for _ in range(clips):
            frames, facts = render_class_clip(name, rng, 96, 8)
            for f, state in list(zip(frames, facts["frames"]))[::2]:
                pixels.append(preprocessed(f, state, zoom, size))
                first.append(shape)
                second.append(other)
    x = torch.tensor(np.stack(pixels), dtype=torch.float32)
    with torch.no_grad():
        e = torch.cat([model.encode_image(x[i:i + 256]) for i in range(0, len(x), 256)])
    return torch.nn.functional.normalize(e, dim=-1).numpy(), np.array(first), np.array(second)


def fit_probe(x: np.ndarray, labels: np.ndarray, weight_decay: float = 1e-3):
    """Multinomial logistic regression (L-BFGS, L2 ``weight_decay``) on (N, D) ``x``; returns ``score(x, labels)``,
    the accuracy of its predictions."""
    import torch
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(v) for v in labels])
    xt = torch.tensor(x, dtype=torch.float32)
    linear = torch.nn.Linear(x.shape[1], len(classes))
    optim = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optim.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xt), y) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optim.step(closure)

    def score(x_eval: np.ndarray, labels_eval: np.ndarray) -> float:
        with torch.no_grad():
            pred = linear(torch.tensor(x_eval, dtype=torch.float32)).argmax(1).numpy()
        return float(np.mean([classes[i] == v for i, v in zip(pred, labels_eval)]))
    return score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="synth", help="open_clip tag or file; 'none' = a seeded random init")
    ap.add_argument("--arch", default="tiny")
    ap.add_argument("--family", default="appearance", choices=["appearance", "motion"])
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--zoom", type=float, default=1.0, help="crop around the object: it appears this much larger")
    args = ap.parse_args()
    if args.clips < 1:
        ap.error(f"--clips must be >= 1, got {args.clips}")
    if args.zoom < 1:
        ap.error(f"--zoom must be >= 1 (the object drawn larger, never smaller), got {args.zoom}")
    import torch

    from clipfsar.train.backbone import create_clip
    from clipfsar.train.factory import preprocess_config_of
    from clipfsar.train.synth import split_classes
    torch.manual_seed(0)
    model = create_clip(args.arch, None if args.weights == "none" else args.weights).eval()
    size = preprocess_config_of(model).image_size
    splits = split_classes(0, args.family)
    rng = np.random.default_rng(0)
    x_tr, shape_tr, other_tr = embeddings(model, splits["train"], args.clips, size, rng, args.zoom)
    x_te, shape_te, other_te = embeddings(model, splits["val"] + splits["test"], args.clips, size, rng, args.zoom)
    other_name = "scene" if args.family == "appearance" else "motion"
    result = {"weights": args.weights, "arch": args.arch, "family": args.family, "zoom": args.zoom,
              "frames_train": len(x_tr), "frames_unseen": len(x_te)}
    for factor, y_tr, y_te in (("shape", shape_tr, shape_te), (other_name, other_tr, other_te)):
        score = fit_probe(x_tr, y_tr)
        result[factor] = {"unseen_combinations": round(score(x_te, y_te), 3),
                          "train": round(score(x_tr, y_tr), 3), "chance": round(1 / len(set(y_tr)), 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
