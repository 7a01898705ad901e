"""open_clip backbones: architecture names, the tiny test config, and weights from a tag or a local file."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Optional

import open_clip
import torch

from clipfsar.runtime.base.errors import ClipFsarError, ConfigError

TINY_ARCH = "clipfsar-tiny"
ARCH_ALIASES = {"tiny": TINY_ARCH}
_CONFIG_DIR = Path(__file__).parent / "model_configs"
# Weights shipped with the package, by (open_clip model name, tag). ``synth``: the tiny model contrastively
# pretrained on captioned synthetic clips (README "Pretraining"; remade by benchmarks/pretrain_synth.py).
BUILTIN_WEIGHTS = {(TINY_ARCH, "synth"): Path(__file__).parent / "pretrained" / "clipfsar-tiny-synth.safetensors"}
_registered = False


class WeightsUnavailableError(ClipFsarError):
    """Pretrained weights cannot be obtained (unknown tag, missing file, or a download with no network)."""


def _register_configs() -> None:
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)  # open_clip's own config mechanism
        _registered = True


def resolve_arch(arch: str) -> str:
    """Map a user's architecture name (``tiny``, ``ViT-B-16``, ``RN50`` ...) to an open_clip model name."""
    _register_configs()
    name = ARCH_ALIASES.get(arch, arch)
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(arch, known + list(ARCH_ALIASES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `clipfsar archs` lists them"
        raise ConfigError(f"unknown architecture '{arch}'{hint}")
    return name


def list_archs() -> list:
    _register_configs()
    return ["tiny"] + [m for m in open_clip.list_models() if m != TINY_ARCH]


def create_clip(arch: str, weights: Optional[str] = None, cache_dir: Optional[str] = None) -> torch.nn.Module:
    """Build the open_clip model for ``arch`` with ``weights``: None (random init), a tag, or a local file.

    Loading always goes through open_clip (``.safetensors`` files, or ``torch.load(weights_only=True)``).

    Raises:
        ConfigError: unknown architecture.
        WeightsUnavailableError: the tag is unknown, the file is missing, or a download failed.
    """
    name = resolve_arch(arch)
    if weights is None:
        return open_clip.create_model(name, pretrained=None)
    if (name, weights) in BUILTIN_WEIGHTS:  # shipped with the package: an ordinary local weights file
        weights = str(BUILTIN_WEIGHTS[name, weights])
    if os.path.isfile(weights):
        try:
            return open_clip.create_model(name, pretrained=str(weights))
        except Exception as e:  # open_clip raises plain RuntimeError/KeyError on a mismatched file
            raise WeightsUnavailableError(f"weights file {weights} does not fit architecture '{arch}': {e}") from e
    tags = open_clip.list_pretrained_tags_by_model(name) + [t for n, t in BUILTIN_WEIGHTS if n == name]
    if weights not in tags:
        looks_like_path = os.sep in weights or weights.endswith((".safetensors", ".bin", ".pt", ".pth"))
        what = "weights file not found" if looks_like_path else "unknown pretrained tag"
        raise WeightsUnavailableError(
            f"{what}: '{weights}' for architecture '{arch}' (known tags: {', '.join(tags) or 'none'})")
    try:
        return open_clip.create_model(name, pretrained=weights, cache_dir=cache_dir)
    except Exception as e:
        raise WeightsUnavailableError(
            f"pretrained tag '{weights}' for '{arch}' needs a download that failed (no network, or not in the "
            f"cache). Download it on a connected machine and pass the file with --weights FILE. Cause: {e}") from e
