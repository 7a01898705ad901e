"""Torch-free runtime: video reading, preprocessing, bundles and classification (numpy, OpenCV, onnxruntime).

Nothing in this package imports torch, torchvision or open_clip (a test checks it).

Example:
    >>> from clipfsar.runtime import Classifier
    >>> clf = Classifier.load("bundle/")
    >>> clf.classify_clip(frames).label
"""
from typing import Any

__all__ = ["Classifier", "ClipResult", "Decision", "Bundle"]


def __getattr__(name: str) -> Any:  # lazy, so `import clipfsar.runtime.video` stays light
    if name in ("Classifier", "ClipResult", "Decision"):
        from . import classifier
        return getattr(classifier, name)
    if name == "Bundle":
        from .bundle import Bundle
        return Bundle
    raise AttributeError(name)
