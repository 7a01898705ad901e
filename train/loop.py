"""Episodic training, top to bottom; runs unchanged under ``torchrun`` (DDP; gloo on CPU, nccl on GPU).

Run folder: ``config.json`` (resolved config), ``last/`` (resume point: model, optimizer, RNG, step),
``best/`` (best on val), ``log.csv``, ``tb/`` (TensorBoard), ``features.safetensors`` (frozen-backbone cache).
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from clipfsar.runtime.base.atomic import recover_folder
from clipfsar.runtime.base.errors import ClipFsarError, ConfigError
from clipfsar.runtime.base.jsonconfig import from_dict, read_json, to_dict, write_json_atomic

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import load_split
from .episode_batch import EpisodeBatchLoss
from .episodes import episode_rng, sample_episode
from .evaluate import evaluate_features
from .factory import create_model_and_transforms
from .features import ClipLoader, all_clips, cached_split_features, class_offsets, encode_clips, feature_fingerprint
from .model import ModelConfig

log = logging.getLogger(__name__)


def _setup_distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return 0, 1, device
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, f"cuda:{local}"
    return rank, world, "cpu"


def _optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    norm_types = (torch.nn.LayerNorm, torch.nn.BatchNorm2d, torch.nn.GroupNorm)
    no_decay = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters()}
    no_decay.add(id(model.vt_scale))
    params = model.trainable_parameters()
    groups = [{"params": [p for p in params if id(p) not in no_decay], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0}]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr_at(0))


def _amp_dtype(cfg: TrainConfig, device: str) -> Optional[torch.dtype]:
    if cfg.amp == "off" or (cfg.amp == "auto" and not device.startswith("cuda")):
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class Trainer:
    """One training run. ``Trainer(cfg).run()``; ``resume=True`` continues ``cfg.out/last``."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, stop_after: Optional[int] = None):
        self.cfg, self.resume, self.stop_after = cfg, resume, stop_after
        self.rank, self.world, self.device = _setup_distributed()
        self.out = Path(cfg.out)
        if cfg.episodes_per_step % self.world:
            raise ConfigError(f"episodes_per_step ({cfg.episodes_per_step}) must be a multiple of the number "
                              f"of processes ({self.world})")

    # ----- setup ----------------------------------------------------------------------------------------------
    def _prepare_run_folder(self) -> None:
        if self.resume:
            recover_folder(self.out / "last")  # a kill between the two renames of a checkpoint write
            if not (self.out / "last").is_dir():
                raise ClipFsarError(f"cannot resume: {self.out}/last does not exist (no checkpoint was saved yet)")
            if self.rank == 0:  # the paths it continues with (the folder or the data may have moved)
                write_json_atomic(self.out / "config.json", to_dict(self.cfg))
            return
        # a folder holding only config.json is a run that failed before its first step (bad data): not taken
        taken = self.out.exists() and any(p.name != "config.json" for p in self.out.iterdir())
        if self.world > 1:  # every rank looks before rank 0 creates the folder, so all agree
            dist.barrier()
        if taken:
            raise ClipFsarError(f"run folder {self.out} already exists; pass --resume to continue it or choose "
                                f"another --out")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out / "config.json", to_dict(self.cfg))

    def _build(self) -> None:
        cfg = self.cfg
        mcfg = from_dict(ModelConfig, {"arch": cfg.arch, "weights": cfg.weights, **cfg.model}, "model config")
        n_needed = cfg.shot + cfg.query
        cmap = cfg.class_names or None  # --class-names: numbered class folders -> names
        self.train_set = load_split(Path(cfg.data), "train", min_clips=n_needed, class_map=cmap)
        self.val_set = load_split(Path(cfg.data), "val", min_clips=cfg.shot + 1, class_map=cmap)
        for s in (self.train_set, self.val_set):
            if len(s.classes) < cfg.way:
                raise ClipFsarError(f"split '{s.split}' has {len(s.classes)} classes; a {cfg.way}-way episode "
                                    f"needs {cfg.way}")
        if self.resume:
            self.model, self.prep, _ = load_checkpoint(self.out / "last")
        else:
            torch.manual_seed(cfg.seed)  # the same seed gives the same initial heads and dropout masks
            self.model, self.prep = create_model_and_transforms(cfg=mcfg)
        self.model.to(self.device)
        if cfg.freeze_backbone:
            self.model.clip.visual.requires_grad_(False)
        self.loader = ClipLoader(self.prep, mcfg.frames, cfg.workers)
        self.train_clips = all_clips(self.train_set)
        self.offsets = class_offsets(self.train_set)
        self.vt_text = self.model.text_features(self.train_set.classes).to(self.device)  # (C, D), frozen
        self.optim = _optimizer(self.model, cfg)
        self.amp = _amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        # frozen backbone: all of a step's episodes in one pass over cached features (train/episode_batch.py)
        self.batch_loss = EpisodeBatchLoss(self.model) if cfg.freeze_backbone else None
        self.ddp = DistributedDataParallel(self.batch_loss or self.model) if self.world > 1 else None
        self.step, self.best = 0, -1.0
        if self.resume:
            self._load_resume_state()
        self.train_feats = self.val_feats = None
        if cfg.freeze_backbone:
            self.train_feats = self._cached(self.train_set, cfg.cache_samplings)  # (S, B, T, D)
            self.val_feats = self._cached(self.val_set, 1)[0]

    def _cached(self, clipset, samplings: int) -> torch.Tensor:
        file = self.out / f"features_{clipset.split}.safetensors"
        if self.cfg.feature_cache:  # shared by runs: one file per image tower, preprocessing, T and sampling seed
            file = Path(self.cfg.feature_cache) / (f"features_{clipset.split}_"
                                                   f"{feature_fingerprint(self.model, self.prep, self.cfg.seed)}"
                                                   ".safetensors")
            if self.rank == 0:
                file.parent.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            feats = cached_split_features(self.model, self.loader, clipset, file, samplings, self.cfg.seed,
                                          self.device)
        if self.world > 1:
            dist.barrier()
            if self.rank != 0:
                feats = cached_split_features(self.model, self.loader, clipset, file, samplings, self.cfg.seed,
                                              self.device)
        return feats.to(self.device)

    # ----- resume state ---------------------------------------------------------------------------------------
    def _write_resume_state(self, folder: Path) -> None:
        torch.save(self.optim.state_dict(), folder / "optimizer.pt")
        torch.save({"torch": torch.get_rng_state(), "scaler": self.scaler.state_dict()}, folder / "rng.pt")
        write_json_atomic(folder / "trainer_state.json", {"step": self.step, "best": self.best})

    def _load_resume_state(self) -> None:
        last = self.out / "last"
        self.optim.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True, map_location=self.device))
        rng = torch.load(last / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        self.scaler.load_state_dict(rng["scaler"])
        state = read_json(last / "trainer_state.json", "trainer state")
        self.step, self.best = int(state["step"]), float(state["best"])

    def _save(self, name: str) -> None:
        save_checkpoint(self.out / name, self.model, self.prep, to_dict(self.cfg),
                        self._write_resume_state if name == "last" else None)

    # ----- one optimizer step ---------------------------------------------------------------------------------
    def _episode_batch(self, rng: np.random.Generator):
        cfg = self.cfg
        ep = sample_episode(rng, self.train_set.counts(), cfg.way, cfg.shot, cfg.query)
        sup_idx = (self.offsets[ep.classes][:, None] + ep.support).reshape(-1)
        qry_idx = (self.offsets[ep.classes][:, None] + ep.query).reshape(-1)
        idx = np.concatenate([sup_idx, qry_idx])
        if self.train_feats is not None:
            samplings = rng.integers(0, self.train_feats.shape[0], len(idx))
            x = self.train_feats[torch.as_tensor(samplings), torch.as_tensor(idx)]  # (N*K+Q, T, D)
        else:
            clip_rngs = [np.random.default_rng(rng.integers(2 ** 63)) for _ in idx]
            x = self.loader.load([self.train_clips[i] for i in idx], "random", clip_rngs).to(self.device)
        n, k = cfg.way, cfg.shot
        support, query = x[:n * k].reshape(n, k, *x.shape[1:]), x[n * k:]
        labels = torch.arange(n, device=self.device).repeat_interleave(cfg.query)
        vt_labels = torch.as_tensor(np.concatenate([np.repeat(ep.classes, k), np.repeat(ep.classes, cfg.query)]),
                                    device=self.device)
        return support, query, labels, self.vt_text[torch.as_tensor(ep.classes)], vt_labels

    def _train_step(self) -> Dict[str, float]:
        cfg, module = self.cfg, self.ddp or self.model
        lr = cfg.lr_at(self.step)
        for g in self.optim.param_groups:
            g["lr"] = lr
        self.optim.zero_grad(set_to_none=True)
        mine = list(range(self.rank, cfg.episodes_per_step, self.world))
        if self.batch_loss is not None:
            return self._cached_step(mine, lr)
        totals = {"loss": 0.0, "loss_fewshot": 0.0, "loss_videotext": 0.0, "acc": 0.0}
        for j, i in enumerate(mine):
            support, query, labels, text, vt_labels = self._episode_batch(episode_rng(cfg.seed, self.step, i))
            sync = self.ddp is None or j == len(mine) - 1
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()):
                with torch.autocast(self.device.split(":")[0], dtype=self.amp, enabled=self.amp is not None):
                    out = module(support, query, labels, text, self.vt_text, vt_labels, cfg.alpha)
                self.scaler.scale(out["loss"] / len(mine)).backward()
            for key in ("loss", "loss_fewshot", "loss_videotext"):
                totals[key] += float(out[key].detach()) / len(mine)
            totals["acc"] += float((out["logits"].argmax(-1) == labels).float().mean()) / len(mine)
        self.scaler.step(self.optim)
        self.scaler.update()
        totals["lr"] = lr
        return totals

    def _cached_step(self, mine, lr: float) -> Dict[str, float]:
        """One optimizer step on this rank's episodes ``mine``, stacked into one forward and one backward."""
        cfg = self.cfg
        batches = [self._episode_batch(episode_rng(cfg.seed, self.step, i)) for i in mine]
        support, query, labels, text, vt_labels = (torch.stack(parts) for parts in zip(*batches))
        with torch.autocast(self.device.split(":")[0], dtype=self.amp, enabled=self.amp is not None):
            out = (self.ddp or self.batch_loss)(support, query, labels, text, self.vt_text, vt_labels, cfg.alpha)
        self.scaler.scale(out["loss"]).backward()
        self.scaler.step(self.optim)
        self.scaler.update()
        stats = {key: float(out[key].detach()) for key in ("loss", "loss_fewshot", "loss_videotext")}
        stats["acc"] = float((out["logits"].argmax(-1) == labels).float().mean())
        stats["lr"] = lr
        return stats

    # ----- validation -----------------------------------------------------------------------------------------
    def _validate(self) -> float:
        cfg, s = self.cfg, self.val_set
        feats = self.val_feats if self.val_feats is not None else encode_clips(
            self.model, self.loader, all_clips(s), device=self.device)
        acc = evaluate_features(self.model, feats.cpu() if self.device == "cpu" else feats.float(),
                                class_offsets(s), s.counts(), s.classes, cfg.way, cfg.shot, cfg.val_episodes,
                                seed=cfg.seed + 1, beta=0.0)
        self.model.train()
        return acc["fewshot"].accuracy

    # ----- the loop -------------------------------------------------------------------------------------------
    def run(self) -> Path:
        from tqdm import tqdm

        created = not self.resume and not self.out.exists()
        self._prepare_run_folder()
        try:
            self._build()
        except Exception:  # bad weights or data found while building: leave nothing behind (only config.json)
            if created and self.rank == 0:
                shutil.rmtree(self.out, ignore_errors=True)
            raise
        cfg = self.cfg
        writer = csv_file = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(self.out / "tb"))
            new_csv = not (self.out / "log.csv").exists()
            csv_file = open(self.out / "log.csv", "a", newline="")
            log_csv = csv.writer(csv_file)
            if new_csv:
                log_csv.writerow(["step", "lr", "loss", "loss_fewshot", "loss_videotext", "acc", "episodes_per_s",
                                  "val_acc"])
        self.model.train()
        end = cfg.steps if self.stop_after is None else min(cfg.steps, self.step + self.stop_after)
        save_every = cfg.save_every or cfg.val_every
        import sys
        bar = tqdm(total=cfg.steps, initial=self.step, disable=self.rank != 0, desc="train", unit="step",
                   mininterval=0.5 if sys.stderr.isatty() else 30)  # logs, not a screen: few updates
        try:
            while self.step < end:
                t0 = time.perf_counter()
                stats = self._train_step()
                self.step += 1
                stats["episodes_per_s"] = cfg.episodes_per_step / (time.perf_counter() - t0)
                val = None
                if self.rank == 0 and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                    val = self._validate()
                    if val > self.best:
                        self.best = val
                        self._save("best")
                if self.rank == 0 and (self.step % save_every == 0 or self.step == end):
                    self._save("last")
                if self.rank == 0:
                    log_csv.writerow([self.step, f"{stats['lr']:.3g}", f"{stats['loss']:.4f}",
                                      f"{stats['loss_fewshot']:.4f}", f"{stats['loss_videotext']:.4f}",
                                      f"{stats['acc']:.4f}", f"{stats['episodes_per_s']:.2f}",
                                      "" if val is None else f"{val:.2f}"])
                    csv_file.flush()
                    for k, v in stats.items():
                        writer.add_scalar(f"train/{k}", v, self.step)
                    if val is not None:
                        writer.add_scalar("val/fewshot_acc", val, self.step)
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['acc']:.2f}",
                                    eps=f"{stats['episodes_per_s']:.1f}",
                                    **({} if val is None else {"val": f"{val:.1f}"}), refresh=False)
                bar.update(1)
        finally:
            bar.close()
            self.loader.close()
            if writer is not None:
                writer.close()
                csv_file.close()
            if self.world > 1:
                dist.barrier()
                dist.destroy_process_group()
        return self.out


def resumed_config(out: Path, data: Optional[Path] = None) -> TrainConfig:
    """The config saved in a run folder (what ``--resume`` continues), continuing *this* folder.

    ``out`` replaces the saved run folder (the run may have moved, or be named from another directory); ``data``,
    when given, replaces the saved data folder (the data moved). Both are made absolute; the resumed run rewrites
    its config.json with them, so the next ``--resume`` needs no ``--data``.

    Raises:
        ClipFsarError: no readable config.json; the saved data folder is not found from here (moved, or a relative
            path saved by an older version) and no ``data`` was given.
    """
    import dataclasses
    cfg = from_dict(TrainConfig, read_json(Path(out) / "config.json", "run config"), f"{out}/config.json")
    if data is None and not Path(cfg.data).exists():
        raise ClipFsarError(f"cannot resume {out}: its data folder '{cfg.data}' is not found from here (moved? a "
                            f"relative path is read from the current directory); pass --data")
    return dataclasses.replace(cfg, out=str(Path(out).absolute()),
                               data=str(Path(data).absolute()) if data is not None else cfg.data)
