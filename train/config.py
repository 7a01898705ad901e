"""The training configuration (JSON <-> dataclass) and the paper's per-dataset presets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from clipfsar.runtime.base.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``RUN/config.json`` and reused by ``--resume``."""
    data: str = ""
    out: str = ""
    arch: str = "tiny"
    weights: Optional[str] = None
    steps: int = 1000
    seed: int = 0
    way: int = 5
    shot: int = 1
    query: int = 5
    episodes_per_step: int = 4
    optimizer: str = "adam"
    lr: float = 5e-5
    warmup_lr: float = 1e-5
    warmup_steps: int = 0
    schedule: str = "step"
    milestones: List[int] = field(default_factory=list)
    gamma: float = 0.1
    weight_decay: float = 1e-3
    alpha: float = 1.5
    val_every: int = 100
    val_episodes: int = 500
    save_every: int = 0
    amp: str = "auto"
    freeze_backbone: bool = False
    cache_samplings: int = 4
    feature_cache: str = ""  # folder of frozen-backbone caches shared by runs (keyed by tower, seed); "" = run folder
    workers: int = 2
    model: Dict[str, Any] = field(default_factory=dict)
    class_names: Dict[str, str] = field(default_factory=dict)  # class folder or id -> name (--class-names)

    def __post_init__(self) -> None:
        choices = {"optimizer": ("adam", "adamw"), "schedule": ("step", "cosine"),
                   "amp": ("auto", "bf16", "fp16", "off")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got '{getattr(self, key)}'")
        for key in ("steps", "way", "shot", "query", "episodes_per_step", "val_episodes", "cache_samplings"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1; got {getattr(self, key)}")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then step or cosine decay."""
        import math
        if step < self.warmup_steps:
            return self.warmup_lr + (self.lr - self.warmup_lr) * step / self.warmup_steps
        if self.schedule == "cosine":
            span = max(1, self.steps - self.warmup_steps)
            return 0.5 * self.lr * (1 + math.cos(math.pi * (step - self.warmup_steps) / span))
        return self.lr * self.gamma ** sum(step >= m for m in self.milestones)


def _paper(alpha: float, lr: float, warm: float, stage: int, tasks: int, val: int, late: int = 3) -> Dict[str, Any]:
    # The official schedule: warm-up for S, full lr until 2S, x0.1 until 3S (K100: 5S), then x0.01.
    return {"arch": "RN50", "weights": "openai", "alpha": alpha, "lr": lr, "warmup_lr": warm,
            "warmup_steps": stage, "milestones": [2 * stage, late * stage], "schedule": "step",
            "steps": tasks // 16, "episodes_per_step": 16, "val_every": max(1, val // 16), "optimizer": "adam",
            "weight_decay": 1e-3, "way": 5, "shot": 1, "query": 5}


# From PAPER_SETTINGS.md (the released configs are CLIP-RN50; 16 episodes per optimizer step).
PRESETS: Dict[str, Dict[str, Any]] = {
    "ssv2-full": _paper(3.0, 5e-5, 1e-5, 4000 // 16, 30000, 1000),
    "ssv2-small": _paper(3.0, 5e-5, 2e-5, 2000 // 16, 30000, 1000),
    "k100": _paper(1.5, 1e-5, 5e-6, 250 // 16, 5000, 100, late=5),
    "ucf101": _paper(1.5, 2e-6, 1e-7, 600 // 16, 3000, 100),
    "hmdb51": _paper(1.2, 1e-5, 1e-6, 700 // 16, 5000, 300),
}


def preset(name: str) -> Dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
