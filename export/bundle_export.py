"""``clipfsar export``: checkpoint + support clips -> bundle (graphs, prototypes, manifest with parity)."""
from __future__ import annotations

import logging
import statistics
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

import clipfsar
from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.base.output_folder import check_output_folder
from clipfsar.runtime.bundle.reader import MANIFEST, Bundle, PrototypeStore, write_bundle
from clipfsar.runtime.engines.backends import OnnxGraph
from clipfsar.runtime.video.clips import read_clip, video_fps
from clipfsar.runtime.video.preprocess import preprocess_frames
from clipfsar.train.checkpoint import best_checkpoint, load_checkpoint
from clipfsar.train.episodes import episode_rng

from .onnx_export import PARITY_TOL, export_all
from .runtime_assets import fit_and_store_calibration, write_tokenizer
from .support import read_support

log = logging.getLogger(__name__)


class ParityError(ClipFsarError):
    """The exported graphs do not reproduce the checkpoint."""


def _clip_inputs(support: Dict[str, List], frames: int, prep) -> np.ndarray:
    """Preprocessed support clips, class-major: (N, K, T, 3, S, S)."""
    return np.stack([np.stack([preprocess_frames(read_clip(p, frames, "center", n_frames=n), prep)
                               for p, n in clips]) for clips in support.values()])


def _parity_episodes(model, graphs: Dict[str, OnnxGraph], pixels: np.ndarray, text: np.ndarray, seed: int,
                     episodes: int) -> Dict:
    """Seeded episodes over the support clips, classified by the checkpoint and through the graphs."""
    n, k, t = pixels.shape[:3]
    flat = pixels.reshape(n * k * t, *pixels.shape[3:])
    with torch.no_grad():
        feats_t = model.clip.encode_image(torch.from_numpy(flat)).numpy()
    feats_o = np.concatenate([graphs["image_encoder"].run(images=flat[i:i + 64])["features"]
                              for i in range(0, len(flat), 64)])
    feats_t, feats_o = feats_t.reshape(n, k, t, -1), feats_o.reshape(n, k, t, -1)
    way = min(5, n)
    same, max_diff = 0, 0.0
    for e in range(episodes):
        rng = episode_rng(seed, e)
        cls = rng.choice(n, way, replace=False)
        shot_idx = rng.integers(0, k, way)
        query_idx = rng.integers(0, k, way)  # with K = 1 the query is the support clip itself
        sup = [f[cls, shot_idx][:, None] for f in (feats_t, feats_o)]  # (W, 1, T, D)
        qry = [f[cls, query_idx] for f in (feats_t, feats_o)]  # (W, T, D)
        tx = text[cls]
        with torch.no_grad():
            out_t = model.classify(torch.from_numpy(sup[0]), torch.from_numpy(qry[0]), torch.from_numpy(tx))
        protos = graphs["support_head"].run(support=sup[1], text=tx)["prototypes"]
        out_o = graphs["query_head"].run(query=qry[1], prototypes=protos, text=tx)
        same += int(np.array_equal(out_t["p"].numpy().argmax(-1), out_o["probs"].argmax(-1)))
        max_diff = max(max_diff, float(np.abs(out_t["p"].numpy() - out_o["probs"]).max()))
    return {"episodes": episodes, "seed": seed, "way": way, "same_predictions": same,
            "max_abs_diff_probs": max_diff, "image_features_max_abs_diff": float(np.abs(feats_t - feats_o).max())}


def export_bundle(checkpoint: Path, support_dir: Path, out: Path, shots: int = 1,
                  classes_file: Optional[Path] = None, force: bool = False, parity_episodes: int = 50,
                  window_seconds: Optional[float] = None, val_data: Optional[Path] = None,
                  val_episodes: int = 300, class_map: Optional[Dict[str, str]] = None,
                  external_data: Optional[bool] = None) -> Bundle:
    """Export a checkpoint and a support folder into a bundle at ``out``.

    ``class_map`` (folder or id -> class name, ``--class-names``) names numbered support folders; by default the
    map stored with the checkpoint is used. Graphs over 2 GB are written with ONNX external data
    (``external_data`` forces it on or off), listed with their hashes in the manifest.

    The bundle also gets the runtime tokenizer file (on-device enrolment) and, when ``val_data`` (default: the
    support folder, if it has ``splits/val.txt``) has a val split, the temperature of the calibrated probabilities
    fitted on ``val_episodes`` val episodes (runtime/teaching/calibration.py).

    Example:
        >>> export_bundle(Path("runs/a"), Path("support/"), Path("bundle"), shots=5)
    Raises:
        CheckpointError, DatasetError, ParityError; ClipFsarError: ``out`` exists without ``force``, is an input
        (or holds one), is not a bundle, or is under a file.
    """
    out = Path(out)
    check_output_folder(out, force, [checkpoint, support_dir, classes_file, val_data], "bundle",
                        lambda p: (p / MANIFEST).is_file())  # never the run folder, the support clips, ...
    ckpt = best_checkpoint(Path(checkpoint))
    model, prep, meta = load_checkpoint(ckpt)
    model = model.float().eval()
    if class_map is None:
        class_map = dict((meta.get("train") or {}).get("class_names") or {}) or None
    support = read_support(Path(support_dir), shots, classes_file, class_map)
    names = list(support)
    log.info("support: %d classes x %d shots", len(names), shots)
    pixels = _clip_inputs(support, model.cfg.frames, prep)  # (N, K, T, 3, S, S)
    with torch.no_grad():
        text = model.text_features(names).float()  # (N, D)
        feats = model.encode_frames(torch.from_numpy(pixels.reshape(-1, *pixels.shape[2:])))  # (N*K, T, D)
        protos = model.prototypes(feats.reshape(len(names), shots, *feats.shape[1:]), text)  # (N, T, D)
    support_mean = feats.reshape(len(names), shots, *feats.shape[1:]).mean(dim=1)  # (N, T, D), for `enroll --add`
    store = PrototypeStore(tuple(names), protos.numpy().astype(np.float32), text.numpy().astype(np.float32),
                           np.full(len(names), shots, np.int32), support_mean.numpy().astype(np.float32))
    if window_seconds is None:
        durations = [n / video_fps(p) for clips in support.values() for p, n in clips]
        window_seconds = round(float(statistics.median(durations)), 3)
    with tempfile.TemporaryDirectory(prefix="clipfsar-export-") as work:
        graphs_info = export_all(model, prep.image_size, Path(work), external_data)
        sessions = {g: OnnxGraph(Path(work) / info["file"], backend="cpu") for g, info in graphs_info.items()}
        episodes = _parity_episodes(model, sessions, pixels, store.text_features, 0, parity_episodes)
        # the stored prototypes through the support graph, too
        feats_np = feats.numpy().reshape(len(names), shots, *feats.shape[1:])
        proto_diff = float(np.abs(sessions["support_head"].run(support=feats_np, text=store.text_features)
                                  ["prototypes"] - store.prototypes).max())
        parity = {"tolerance": PARITY_TOL, "backend": "onnxruntime " + sessions["image_encoder"].providers[0],
                  "graphs": {g: info["max_abs_diff"] for g, info in graphs_info.items()},
                  "prototypes_max_abs_diff": proto_diff, "episodes": episodes}
        bad = {g: d for g, d in parity["graphs"].items() if d > PARITY_TOL}
        if proto_diff > PARITY_TOL:
            bad["prototypes"] = proto_diff
        if bad or episodes["same_predictions"] != episodes["episodes"]:
            raise ParityError(f"exported graphs do not reproduce the checkpoint: {bad or ''} "
                              f"{episodes['same_predictions']}/{episodes['episodes']} episodes agree")
        mcfg = model.cfg
        manifest = {
            "package_version": clipfsar.__version__,
            "model": {"arch": mcfg.arch, "embed_dim": model.embed_dim, "frames": mcfg.frames,
                      "image_size": prep.image_size, "resize_short": prep.resize_short, "mean": list(prep.mean),
                      "std": list(prep.std), "prompt": mcfg.prompt, "otam_lambda": mcfg.otam_lambda,
                      "beta": mcfg.beta, "vt_scale": float(model.vt_scale.detach()), "window_seconds": window_seconds,
                      "context_length": int(model.tokenizer.context_length), "shot_pooling": mcfg.shot_pooling,
                      "text_in_prototype": mcfg.text_in_prototype, "cos_eps": mcfg.cos_eps,
                      "cos_mode": mcfg.cos_mode},
            "graphs": {g: {"file": info["file"], "inputs": info["inputs"], "outputs": info["outputs"],
                           "precision": "fp32", **({"data": [{"file": d} for d in info["data"]]} if info["data"]
                                                   else {})}
                       for g, info in graphs_info.items()},
            "parity": {**parity, "checkpoint": str(ckpt)},
        }
        if class_map:  # folder -> name of the bundle's classes: where its names came from
            manifest["class_map"] = {clips[0][0].parent.name: n for n, clips in support.items()}
        files = {f: Path(work) / f for info in graphs_info.values() for f in [info["file"], *info["data"]]}
        tok = write_tokenizer(model.tokenizer, Path(work))  # the runtime tokenizer (on-device enrolment)
        if tok is not None:
            files[tok[1]["file"]], manifest["tokenizer"] = tok
        bundle = write_bundle(out, manifest, files, store, force=force)
    if val_data is None and (Path(support_dir) / "splits" / "val.txt").is_file():
        val_data = Path(support_dir)
    if val_data is not None and val_episodes > 0:  # temperature of the calibrated probabilities (val)
        fit_and_store_calibration(bundle, Path(val_data), "val", shots, val_episodes)
        bundle = Bundle.open(out)
    log.info("bundle written: %s", out)
    return bundle
