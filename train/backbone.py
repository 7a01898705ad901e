"""open_clip backbones: architecture names, the tiny test config, and weights from a tag or a local file."""
from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Dict, Optional

import open_clip
import torch

from clipfsar.runtime.base.errors import ClipFsarError, ConfigError

TINY_ARCH = "clipfsar-tiny"  # ViT, 64 px, patch 16, 2 layers, width 64: the fast test model, prior synth-v2
SMALL_ARCH = "clipfsar-small"  # CLIP's ModifiedResNet at 64 px (stages 1-1-1-1, width 16): the default, synth-v3
ARCH_ALIASES = {"tiny": TINY_ARCH, "small": SMALL_ARCH}
_CONFIG_DIR = Path(__file__).parent / "model_configs"
_PRETRAINED = Path(__file__).parent / "pretrained"
# The shipped priors' versions, by architecture: a file says ``clipfsar_prior = synth-v<N>`` in its safetensors
# metadata (docs/default-model.md).
PRIOR_VERSIONS = {TINY_ARCH: 2, SMALL_ARCH: 3}
PRIOR_FILES = {a: _PRETRAINED / f"{a}-synth-v{v}.safetensors" for a, v in PRIOR_VERSIONS.items()}
PRIOR_VERSION = PRIOR_VERSIONS[SMALL_ARCH]  # the default architecture's prior
PRIOR_FILE = PRIOR_FILES[SMALL_ARCH]
# Weights shipped with the package, by (open_clip model name, tag). ``synth``: the model contrastively pretrained
# on (frame, caption) and (clip, caption) pairs of both synthetic families' train splits (remade by
# benchmarks/pretrain_synth.py).
BUILTIN_WEIGHTS = {**{(a, "synth"): f for a, f in PRIOR_FILES.items()},
                   **{(a, f"synth-v{PRIOR_VERSIONS[a]}"): f for a, f in PRIOR_FILES.items()}}
# Tags and files of priors no longer shipped: refused with what replaced them. A checkpoint trained from one still
# loads (its weights are in the checkpoint; the tag in its config is only a record).
RETIRED_TAGS = {(TINY_ARCH, "synth-v1"): "the v1 synth prior (pretrained on mean-pooled clips, whose features keep "
                                         "no per-frame state) is no longer shipped; use 'synth' (= synth-v2)"}
RETIRED_FILES = {  # sha256 -> what it was
    "3b31c69f45568c1bf82bbedcaccd32f28dbec12683e5af171f5247006cbb7105": "the v1 synth prior (clip-level, 2026-12-04)",
}
_registered = False
_ALIAS_OF = {v: k for k, v in ARCH_ALIASES.items()}


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
    return list(ARCH_ALIASES) + [m for m in open_clip.list_models() if m not in ARCH_ALIASES.values()]


def weights_metadata(file: Path) -> Dict[str, str]:
    """The safetensors metadata of a weights file ({} for other formats or none).

    Raises:
        WeightsUnavailableError: a ``.safetensors`` file whose header cannot be read (truncated, not safetensors).
    """
    if Path(file).suffix.lower() != ".safetensors":
        return {}
    from safetensors import safe_open
    try:
        with safe_open(str(file), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own SafetensorError / OSError
        raise WeightsUnavailableError(f"weights file {file} is not a readable safetensors file: {e}") from e


def check_weights_file(file: Path, name: str) -> None:
    """Refuse, naming ``file``, weights made for another architecture than open_clip model ``name`` (the ``arch``
    metadata ``clipfsar pretrain`` writes) or an older version of the shipped prior (``clipfsar_prior`` metadata
    below ``name``'s version in ``PRIOR_VERSIONS``, or a retired shipped file recognised by its sha256).

    Raises:
        WeightsUnavailableError: as above.
    """
    meta = weights_metadata(file)
    made_for = meta.get("arch")
    if made_for and made_for != name:
        raise WeightsUnavailableError(f"weights file {file} was made for architecture '{made_for}', not '{name}'; "
                                      f"pass --arch {_ALIAS_OF.get(made_for, made_for)} or other weights")
    prior, current = meta.get("clipfsar_prior", ""), PRIOR_VERSIONS.get(name, PRIOR_VERSION)
    if prior.startswith("synth-v") and prior[7:].isdigit() and int(prior[7:]) < current:
        raise WeightsUnavailableError(f"weights file {file} is an older version of the shipped prior ({prior}); this "
                                      f"version of clip-fsar uses synth-v{current}: pass --weights synth")
    if os.path.getsize(file) < 64 * 2 ** 20:  # the shipped priors are small; big files are never hashed
        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        if digest in RETIRED_FILES:
            raise WeightsUnavailableError(f"weights file {file} is {RETIRED_FILES[digest]}, an older version of the "
                                          f"shipped prior; this version uses synth-v{PRIOR_VERSION}: pass "
                                          f"--weights synth")


def create_clip(arch: str, weights: Optional[str] = None, cache_dir: Optional[str] = None) -> torch.nn.Module:
    """Build the open_clip model for ``arch`` with ``weights``: None (random init), a tag, or a local file.

    Loading always goes through open_clip (``.safetensors`` files, or ``torch.load(weights_only=True)``).

    Raises:
        ConfigError: unknown architecture.
        WeightsUnavailableError: the tag is unknown or retired, the file is missing, made for another
            architecture or an older prior version (``check_weights_file``), or a download failed.
    """
    name = resolve_arch(arch)
    if weights is None:
        return open_clip.create_model(name, pretrained=None)
    if (name, weights) in RETIRED_TAGS:
        raise WeightsUnavailableError(f"pretrained tag '{weights}' for '{arch}': {RETIRED_TAGS[name, weights]}")
    if (name, weights) in BUILTIN_WEIGHTS:  # shipped with the package: an ordinary local weights file
        weights = str(BUILTIN_WEIGHTS[name, weights])
    if os.path.isfile(weights):
        check_weights_file(Path(weights), name)
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
