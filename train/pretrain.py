"""CLIP-style contrastive pretraining of an open_clip model's image and text towers on (frame or clip, caption) pairs.

What CLIP's pretraining gives CLIP-FSAR is an image model that knows what is in a frame and where, and a text
prior: names whose text features sit near the images they name. Here that prior is made the way CLIP's was: a
symmetric InfoNCE loss over a batch of pairs (``open_clip.loss.ClipLoss``) with CLIP's learnable logit scale
(clamped at 100, as open_clip does), on two kinds of pairs (``captions.py``):

* frame rows (``path<TAB>frame<TAB>caption``): one decoded frame and a caption of what it shows, encoded as an
  image, as CLIP's (image, alt-text) pairs. These give the image tower per-frame state (shape, colour, size,
  position, orientation, scene) that CLIP-FSAR's temporal head and OTAM then compare across frames;
* clip rows (``path<TAB>caption``): T frames (TSN sampling, random in training), encoded frame by frame and
  mean-pooled exactly as CLIP-FSAR's video-text branch pools them (DESIGN.md section 3), so what is aligned is also
  what that branch uses.

With both kinds in the file, each batch holds ``clip_fraction`` clip pairs and the rest frame pairs.

**Hard negatives** (``hard_fraction`` > 0). In a batch drawn at random, most negatives differ from a frame in
something easy to see (the scene, the background), and the loss can be met without the harder things (the object's
shape). So part of each batch's frame pairs is drawn from two *neighbourhoods* of the current image embedding: every
``mine_every`` steps, one frame of each clip is embedded, the clips are grouped by k-means (``mine_clusters``
groups, ``kmeans``), and those frame pairs come from the clips of two groups, half from each. Their negatives look
alike, so only what differs (the shape within a scene) separates them. Measured in docs/default-model.md.

The result is an ordinary open_clip state dict in safetensors: ``RUN/weights.safetensors``, loadable with
``open_clip.create_model(arch, pretrained=FILE)`` (for ``tiny``, whose config ships here:
``open_clip.create_model(resolve_arch("tiny"), pretrained=FILE)``, which registers it) and
``clipfsar train --weights FILE``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from clipfsar.runtime.base.atomic import staged_file
from clipfsar.runtime.base.errors import ClipFsarError, ConfigError, VideoError
from clipfsar.runtime.video.clips import count_frames, read_frames, sample_indices
from clipfsar.runtime.video.preprocess import PreprocessConfig, normalize, resize_and_crop

from .captions import CAPTIONS_FILE, group_by_item, is_image, read_captions, split_clip_filter

log = logging.getLogger(__name__)
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class PretrainConfig:
    """A pretraining run (saved as ``RUN/pretrain.json``).

    Attributes:
        data: dataset folder; ``captions`` (default ``DATA/captions.txt``) names its clips relative to it.
        split: only clips of ``DATA/splits/<split>.txt`` are used when the dataset has split lists.
        weights: initial weights (open_clip tag or file; None = random init).
        batch: (frame or clip, caption) pairs per step; frames: T frames per clip row, mean-pooled.
        clip_fraction: share of each batch drawn from clip rows when the captions file has frame rows too.
        lr, warmup_steps, weight_decay: AdamW with linear warm-up then cosine decay (no decay on gains, biases,
            embeddings and the logit scale, as open_clip's training).
        cache_mb: decoded, cropped uint8 frames kept in memory (clips beyond it are decoded at every use).
        hard_fraction: share of each batch's frame pairs drawn from two neighbourhoods of the image embedding (the
            module docstring); mine_every: steps between re-groupings; mine_clusters: k-means groups.
    """
    data: str = ""
    out: str = ""
    captions: Optional[str] = None
    split: str = "train"
    arch: str = "tiny"
    weights: Optional[str] = None
    steps: int = 1000
    batch: int = 64
    frames: int = 8
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    seed: int = 0
    workers: int = 2
    cache_mb: int = 4096
    clip_fraction: float = 0.25
    hard_fraction: float = 0.0
    mine_every: int = 100
    mine_clusters: int = 10

    def __post_init__(self) -> None:
        for key in ("steps", "batch", "frames", "workers", "mine_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1; got {getattr(self, key)}")
        if self.batch < 2:
            raise ConfigError(f"batch must be >= 2 (a contrastive loss needs negatives); got {self.batch}")
        if not 0 < self.lr < math.inf:  # NaN fails too
            raise ConfigError(f"lr must be a finite number > 0; got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight_decay must be a finite number >= 0; got {self.weight_decay}")
        for key in ("clip_fraction", "hard_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{key} must be in [0, 1]; got {getattr(self, key)}")
        if self.mine_clusters < 2:
            raise ConfigError(f"mine_clusters must be >= 2 (a hard batch draws from two groups); got "
                              f"{self.mine_clusters}")
        for key in ("warmup_steps", "cache_mb"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0; got {getattr(self, key)}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        return 0.5 * self.lr * (1 + math.cos(math.pi * (step - self.warmup_steps) / span))


def token_counter(tokenizer, context_length: int):
    """Tokens (start and end included) a caption needs under ``tokenizer``, counted without truncation."""
    def count(text: str) -> int:
        ids = tokenizer([text], context_length=context_length + 256)[0]
        return int((ids != 0).sum())
    return count


class FrameStore:
    """Clips as uint8 (n, S, S, 3) cropped frames, decoded once and kept in memory up to a budget.

    Images count as one-frame clips (their T sampled frames are the same image).
    """

    def __init__(self, paths: Sequence[Path], prep: PreprocessConfig, cache_mb: int, workers: int):
        self.paths, self.prep = list(paths), prep
        self.budget = cache_mb * 2 ** 20
        self.cache: Dict[int, np.ndarray] = {}
        self.used = 0
        self.pool = ThreadPoolExecutor(max_workers=workers)

    def _decode(self, i: int) -> np.ndarray:
        path = self.paths[i]
        if is_image(path):
            import cv2
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError(f"cannot read image {path}")
            frames = [img]
        else:
            n = count_frames(path)
            if n == 0:
                raise VideoError(f"clip {path} has no decodable frames")
            frames = read_frames(path, range(n))
        return np.stack([resize_and_crop(f, self.prep) for f in frames])

    def _get(self, i: int) -> np.ndarray:
        if i in self.cache:
            return self.cache[i]
        crops = self._decode(i)
        if self.used + crops.nbytes <= self.budget:
            self.cache[i] = crops
            self.used += crops.nbytes
        return crops

    def frame_count(self, i: int) -> int:
        """Frames of clip ``i`` (an image: 1)."""
        return len(self._get(i))

    def warm(self) -> None:
        """Decode every clip once (finds unreadable clips before training starts)."""
        list(self.pool.map(self._get, range(len(self.paths))))

    def batch(self, idx: Sequence[int], frames: int, rng: np.random.Generator) -> torch.Tensor:
        """Clips ``idx`` with T random TSN frames each -> float32 (B, T, 3, S, S), CLIP-normalised."""
        clips = list(self.pool.map(self._get, idx))
        picks = [c[sample_indices(len(c), frames, "random", rng)] for c in clips]  # (T, S, S, 3) each
        x = normalize(np.concatenate(picks), self.prep)  # (B*T, 3, S, S)
        return torch.from_numpy(x).reshape(len(idx), frames, *x.shape[1:])

    def frames_at(self, idx: Sequence[int], frame: Sequence[int]) -> torch.Tensor:
        """Frame ``frame[i]`` of clip ``idx[i]`` (an image: its one frame) -> float32 (B, 3, S, S), normalised."""
        clips = list(self.pool.map(self._get, idx))
        picks = np.stack([c[min(f, len(c) - 1)] for c, f in zip(clips, frame)])  # (B, S, S, 3)
        return torch.from_numpy(normalize(picks, self.prep))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 20) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii, 2007) on (N, D) ``x``: (N,) group ids.

    ``k`` is capped at N; a group left empty keeps its centre (its id is then unused)."""
    sq_dist = lambda c: ((x[:, None, :] - c[None]) ** 2).sum(-1)  # (N, K) squared distances to centres c
    k = min(k, len(x))
    centres = [x[int(rng.integers(len(x)))]]
    d2 = sq_dist(np.stack(centres))[:, 0]  # (N,) to the nearest centre so far
    for _ in range(k - 1):
        pick = int(rng.choice(len(x), p=d2 / d2.sum())) if d2.sum() > 0 else int(rng.integers(len(x)))
        centres.append(x[pick])
        d2 = np.minimum(d2, sq_dist(x[pick][None])[:, 0])
    c = np.stack(centres)
    for _ in range(iters):
        ids = sq_dist(c).argmin(1)
        for j in range(k):
            if (ids == j).any():
                c[j] = x[ids == j].mean(0)
    return sq_dist(c).argmin(1)


class HardNegativeSampler:
    """Frame items drawn from two neighbourhoods of the current image embedding (module docstring).

    ``regroup`` embeds the middle frame of each clip that has frame rows and groups the clips by ``kmeans``;
    ``draw(n)`` returns ``n`` frame items, half from the clips of each of two random groups with frame rows.
    """

    def __init__(self, frame_items: Sequence[int], items, where: Dict, store: "FrameStore", clusters: int):
        self.store, self.clusters = store, clusters
        self.by_clip: Dict[int, list] = {}
        for k in frame_items:
            self.by_clip.setdefault(where[items[k][0]], []).append(k)
        self.clips = sorted(self.by_clip)
        self.groups: list = []

    @torch.no_grad()
    def regroup(self, clip, device: str, rng: np.random.Generator) -> None:
        was_training = clip.training
        clip.eval()
        middle = [self.store.frame_count(c) // 2 for c in self.clips]
        feats = torch.cat([clip.encode_image(self.store.frames_at(self.clips[i:i + 256], middle[i:i + 256])
                                             .to(device)).float().cpu() for i in range(0, len(self.clips), 256)])
        clip.train(was_training)
        ids = kmeans(torch.nn.functional.normalize(feats, dim=-1).numpy(), self.clusters, rng)
        self.groups = [[k for c, g in zip(self.clips, ids) if g == j for k in self.by_clip[c]]
                       for j in sorted(set(ids.tolist()))]

    def draw(self, n: int, rng: np.random.Generator) -> list:
        if len(self.groups) < 2:  # every clip in one group: nothing harder than random to draw from
            pool = [k for g in self.groups for k in g]
            return [pool[i] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
        a, b = rng.choice(len(self.groups), 2, replace=False)
        half = [n - n // 2, n // 2]
        return [g[i] for g, m in zip((self.groups[a], self.groups[b]), half)
                for i in rng.choice(len(g), m, replace=len(g) < m)]


def encode_video(clip, frames: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, S, S) frames -> (B, D) mean-pooled frame features (unnormalised), CLIP-FSAR's video pooling."""
    b, t = frames.shape[:2]
    return clip.encode_image(frames.flatten(0, 1)).reshape(b, t, -1).mean(dim=1)  # (B, D)


def contrastive_loss(clip, loss_fn, frames: Optional[torch.Tensor], tokens: torch.Tensor,
                     images: Optional[torch.Tensor] = None) -> torch.Tensor:
    """open_clip's ClipLoss on L2-normalised visual and caption features with the model's logit scale.

    Args:
        frames: (Bc, T, 3, S, S) clips (mean-pooled frame features), or None.
        images: (Bf, 3, S, S) single frames, or None.
        tokens: (Bc + Bf, L) captions: the clips' first, then the frames'.
    """
    parts = ([encode_video(clip, frames)] if frames is not None and len(frames) else []) + \
        ([clip.encode_image(images)] if images is not None and len(images) else [])
    visual = torch.nn.functional.normalize(torch.cat(parts), dim=-1)  # (B, D)
    text = torch.nn.functional.normalize(clip.encode_text(tokens), dim=-1)  # (B, D)
    return loss_fn(visual, text, clip.logit_scale.exp())


def _optimizer(clip, cfg: PretrainConfig) -> torch.optim.Optimizer:
    # open_clip's rule: no weight decay on gains, biases, embeddings and the logit scale
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n \
        or "embedding" in n or "class_embedding" in n
    named = [(n, p) for n, p in clip.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not exclude(n, p)], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def save_weights(clip, file: Path, arch: Optional[str] = None, extra: Optional[Dict[str, str]] = None) -> Path:
    """Write an open_clip model's state dict as safetensors, atomically (a failure leaves no file).

    The metadata says the producer, the open_clip architecture (``arch``; ``backbone.create_clip`` refuses the file
    for another one by name) and ``extra`` (e.g. the shipped prior's ``clipfsar_prior`` version tag).
    """
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    meta = {"format": "pt", "producer": "clipfsar pretrain", **({"arch": arch} if arch else {}), **(extra or {})}
    with staged_file(Path(file)) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(file)


class Pretrainer:
    """``Pretrainer(cfg).run()`` -> the weights file. Every input is checked before ``RUN`` is created."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def _prepare(self):
        import open_clip

        from .backbone import create_clip, resolve_arch
        from .factory import preprocess_config_of
        cfg = self.cfg
        out = Path(cfg.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            interrupted = out.is_dir() and not (out / WEIGHTS_FILE).exists() and (out / "pretrain.json").exists()
            why = (" and holds an interrupted run (no weights.safetensors): delete it, or" if interrupted else ";")
            raise ClipFsarError(f"pretraining output {out} already exists{why} choose another --out")
        data = Path(cfg.data)
        if not data.is_dir():
            raise ClipFsarError(f"dataset folder not found: {data}")
        name = resolve_arch(cfg.arch)
        torch.manual_seed(cfg.seed)
        clip = create_clip(cfg.arch, cfg.weights)
        tokenizer = open_clip.get_tokenizer(name)
        ctx = int(getattr(clip, "context_length", 77))
        captions = Path(cfg.captions) if cfg.captions else data / CAPTIONS_FILE
        rows = read_captions(captions, data, token_counter(tokenizer, ctx), ctx, split_clip_filter(data, cfg.split))
        items, caps = group_by_item(rows)
        if len(items) < 2:
            raise ClipFsarError(f"captions file {captions}: {len(items)} clip(s) or frame(s) usable; contrastive "
                                f"pretraining needs at least 2")
        self.arch_name = name
        return clip, tokenizer, preprocess_config_of(clip), items, caps, captions

    def run(self) -> Path:
        import open_clip
        from tqdm import tqdm
        cfg = self.cfg
        clip, tokenizer, prep, items, caps, captions_file = self._prepare()
        paths = list(dict.fromkeys(p for p, _ in items))
        where = {p: i for i, p in enumerate(paths)}
        clip_items = [k for k, (_, f) in enumerate(items) if f is None]
        frame_items = [k for k, (_, f) in enumerate(items) if f is not None]
        self.clip, self.clip_paths = clip, paths  # the trained model stays available to the caller
        store = FrameStore(paths, prep, cfg.cache_mb, cfg.workers)
        try:
            t0 = time.perf_counter()
            store.warm()
            log.info("pretraining on %d clips (%d clip captions, %d frame captions; %s), decoded in %.1f s",
                     len(paths), sum(len(caps[k]) for k in clip_items), sum(len(caps[k]) for k in frame_items),
                     captions_file, time.perf_counter() - t0)
            batch = min(cfg.batch, len(items))
            n_clip = (min(len(clip_items), round(batch * cfg.clip_fraction)) if frame_items else batch)
            n_frame = min(len(frame_items), batch - n_clip)
            batch = n_clip + n_frame
            n_hard = round(n_frame * cfg.hard_fraction)
            hard = HardNegativeSampler(frame_items, items, where, store, cfg.mine_clusters) if n_hard else None
            out = Path(cfg.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "pretrain.json").write_text(json.dumps(
                {**asdict(cfg), "batch_used": batch, "clip_pairs_per_step": n_clip, "frame_pairs_per_step": n_frame,
                 "hard_frame_pairs_per_step": n_hard,
                 "clips": len(paths), "clip_rows_items": len(clip_items), "frame_items": len(frame_items)},
                indent=2) + "\n")
            clip.to(self.device).train()
            loss_fn, optim = open_clip.loss.ClipLoss(), _optimizer(clip, cfg)
            rng = np.random.default_rng(cfg.seed)
            if batch < cfg.batch:
                log.warning("--batch %d is more than the %d usable clips and frames: each step uses %d", cfg.batch,
                            len(items), batch)
            with open(out / "log.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["step", "lr", "loss", "logit_scale", "clips_per_s"])
                for step in tqdm(range(cfg.steps), desc="pretrain", unit="step", mininterval=30):
                    t = time.perf_counter()
                    for g in optim.param_groups:
                        g["lr"] = cfg.lr_at(step)
                    if hard is not None and step % cfg.mine_every == 0:
                        hard.regroup(clip, self.device, rng)
                    ci = [clip_items[i] for i in rng.choice(len(clip_items), n_clip, replace=False)] if n_clip else []
                    fi = [frame_items[i] for i in rng.choice(len(frame_items), n_frame - n_hard, replace=False)] \
                        if n_frame > n_hard else []
                    fi += hard.draw(n_hard, rng) if hard is not None else []
                    texts = [caps[k][int(rng.integers(len(caps[k])))] for k in ci + fi]
                    frames = store.batch([where[items[k][0]] for k in ci], cfg.frames, rng).to(self.device) \
                        if ci else None
                    images = store.frames_at([where[items[k][0]] for k in fi], [items[k][1] for k in fi]) \
                        .to(self.device) if fi else None
                    loss = contrastive_loss(clip, loss_fn, frames, tokenizer(texts).to(self.device), images)
                    if not torch.isfinite(loss):  # diverged: never write NaN weights
                        raise ClipFsarError(f"pretraining diverged at step {step + 1} (loss {float(loss.detach())}); "
                                            f"lower --lr (now {cfg.lr:g}); no weights were written")
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    optim.step()
                    with torch.no_grad():
                        clip.logit_scale.clamp_(0, math.log(100))
                    writer.writerow([step + 1, f"{cfg.lr_at(step):.3g}", f"{float(loss.detach()):.4f}",
                                     f"{float(clip.logit_scale.detach().exp()):.2f}",
                                     f"{batch / (time.perf_counter() - t):.1f}"])
                    if (step + 1) % 50 == 0:
                        f.flush()
        finally:
            store.close()
        return save_weights(clip, out / WEIGHTS_FILE, self.arch_name)


def pretrain(**kwargs) -> Path:
    """Run contrastive pretraining; keyword arguments are ``PretrainConfig`` fields. Returns the weights file.

    Example:
        >>> pretrain(data="synth", out="runs/pre", arch="tiny", steps=1500)
        PosixPath('runs/pre/weights.safetensors')
    """
    return Pretrainer(PretrainConfig(**kwargs)).run()


def ship_prior(weights: Path, dest: Path, version: int, made_with: str = "") -> Path:
    """Copy pretrained ``weights`` to ``dest`` as the shipped prior: the same tensors, with the metadata
    ``clipfsar_prior = synth-v<version>`` (what ``backbone.check_weights_file`` compares) and ``made_with`` (the
    command), written atomically.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(weights), "pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k).contiguous() for k in f.keys()}
    meta.update({"clipfsar_prior": f"synth-v{version}", **({"made_with": made_with} if made_with else {})})
    with staged_file(Path(dest)) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(dest)
