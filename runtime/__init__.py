"""Torch-free runtime: video reading, preprocessing, bundles and classification (numpy, OpenCV, onnxruntime).

Nothing in this package imports torch, torchvision or open_clip (a test checks it). Its subpackages, lowest layer
first; each may import only those before it (tests/test_layers.py checks it):

    base -> video -> bundle -> engines -> teaching -> classify -> serving -> studio -> cli

Example:
    >>> from clipfsar.runtime import Classifier
    >>> clf = Classifier.load("bundle/")
    >>> clf.classify_clip(frames).label
"""
import importlib
from typing import Any

# public name -> the module that defines it (imported on first use, so `import clipfsar.runtime.video` stays light)
_PUBLIC = {
    "Classifier": "clipfsar.runtime.classify.classifier",
    "ClipResult": "clipfsar.runtime.classify.results",
    "Decision": "clipfsar.runtime.classify.results",
    "StreamStats": "clipfsar.runtime.classify.results",
    "Bundle": "clipfsar.runtime.bundle.reader",
    "list_classes": "clipfsar.runtime.teaching.classes",
    "remove_class": "clipfsar.runtime.teaching.classes",
    "rename_class": "clipfsar.runtime.teaching.classes",
    "LiveSource": "clipfsar.runtime.video.live",
    "open_source": "clipfsar.runtime.video.sources",
    "ClipFsarError": "clipfsar.runtime.base.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
