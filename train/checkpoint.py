"""Checkpoints are folders: ``config.json`` (model, preprocessing, training config, format version) +
``model.safetensors``. Nothing is unpickled. Writes are atomic (a temporary folder, then a rename)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clipfsar.runtime.base.atomic import recover_folder, staged_folder
from clipfsar.runtime.base.errors import CheckpointError, ConfigError
from clipfsar.runtime.base.jsonconfig import from_dict, read_json, to_dict, write_json_atomic
from clipfsar.runtime.video.preprocess import PreprocessConfig

from .model import CLIPFSAR, LEGACY_COSINE, ModelConfig

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_checkpoint(path: Path, model: CLIPFSAR, preprocess: PreprocessConfig,
                    train_config: Optional[Dict[str, Any]] = None,
                    write_extra: Optional[Callable[[Path], None]] = None) -> Path:
    """Write ``model`` as a checkpoint folder at ``path`` (replacing it atomically if it exists).

    ``write_extra(folder)`` may add files (optimizer state for resume) before the folder is renamed into place.

    Example:
        >>> save_checkpoint(Path("runs/a/best"), model, preprocess)
    """
    path = Path(path)
    with staged_folder(path) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        if write_extra is not None:
            write_extra(tmp)
        write_json_atomic(tmp / CONFIG_FILE, {
            "format_version": FORMAT_VERSION,
            "model": to_dict(model.cfg),
            "preprocess": to_dict(preprocess),
            "train": train_config or {},
        })
    return path


def read_checkpoint_config(path: Path) -> Dict[str, Any]:
    """Read and check a checkpoint's ``config.json`` (format version, required sections)."""
    path = Path(path)
    recover_folder(path)  # a writer killed between its two renames left the previous version aside
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    try:
        meta = read_json(path / CONFIG_FILE, "checkpoint config")
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt: {e}") from e
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"checkpoint {path}: config.json has no integer format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}, newer than this clip-fsar "
                              f"understands ({FORMAT_VERSION}); upgrade clip-fsar")
    for key in ("model", "preprocess"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path}: config.json lacks the '{key}' section")
    return meta


def model_config_with_legacy(model: Dict[str, Any]) -> Dict[str, Any]:
    """A stored model config with the keys added since format 1 filled in as the code that wrote it behaved:
    a config without ``cos_eps``/``cos_mode`` was trained with eps 1e-8 on each norm (``LEGACY_COSINE``), so it
    keeps that, not the new default."""
    model = dict(model)
    if "cos_eps" not in model and "cos_mode" not in model:
        model.update(LEGACY_COSINE)
    return model


def load_checkpoint(path: Path, map_location: str = "cpu") -> Tuple[CLIPFSAR, PreprocessConfig, Dict[str, Any]]:
    """Rebuild the model from a checkpoint folder alone.

    Returns:
        (model in eval mode, preprocess config, the whole config.json).
    Raises:
        CheckpointError: the folder is missing, incomplete, corrupt, or of a newer format version.
    Example:
        >>> model, prep, meta = load_checkpoint("runs/a/best")
    """
    from .factory import create_model_and_transforms

    path = Path(path)
    meta = read_checkpoint_config(path)
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {WEIGHTS_FILE} is missing")
    cfg = from_dict(ModelConfig, model_config_with_legacy(meta["model"]), where=f"{path / CONFIG_FILE} [model]")
    prep = from_dict(PreprocessConfig, meta["preprocess"], where=f"{path / CONFIG_FILE} [preprocess]")
    # weights come from the file, not from the backbone tag: build with random init
    model, _ = create_model_and_transforms(cfg=dataclasses.replace(cfg, weights=None))
    try:
        state = load_file(str(weights_file), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: {WEIGHTS_FILE} is corrupt: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not match the config: {e}") from e
    model.cfg = cfg
    return model.eval(), prep, meta


def best_checkpoint(run: Path) -> Path:
    """A run folder's best checkpoint (``best/``, else ``last/``), or the folder itself if it is a checkpoint."""
    run = Path(run)
    if (run / "model.safetensors").is_file():
        return run
    for name in ("best", "last"):
        if (run / name / "model.safetensors").is_file():
            return run / name
    raise CheckpointError(f"{run} is neither a checkpoint folder nor a run folder with best/ or last/")
