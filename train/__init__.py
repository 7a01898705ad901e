"""Training side of clip-fsar (PyTorch + open_clip): the CLIP-FSAR model, data, episodes, training, evaluation.

Example:
    >>> from clipfsar.train import create_model_and_transforms
    >>> model, preprocess = create_model_and_transforms("tiny")
"""
from typing import Any

__all__ = ["create_model_and_transforms", "CLIPFSAR", "ModelConfig", "save_checkpoint", "load_checkpoint"]


def __getattr__(name: str) -> Any:  # lazy: `clipfsar synth` must not pay for importing torch
    if name in ("create_model_and_transforms",):
        from .factory import create_model_and_transforms
        return create_model_and_transforms
    if name in ("CLIPFSAR", "ModelConfig"):
        from . import model
        return getattr(model, name)
    if name in ("save_checkpoint", "load_checkpoint"):
        from . import checkpoint
        return getattr(checkpoint, name)
    raise AttributeError(name)
