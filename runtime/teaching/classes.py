"""Managing a bundle's enrolled classes: list, remove, rename (atomic, under the bundle's writer lock).

A classifier that already loaded the bundle keeps the store it has; ``Classifier.load`` afterwards sees the change.

Example:
    >>> list_classes("bundle")                      # [ClassInfo(name='waving a hand', shots=5), ...]
    >>> remove_class("bundle", "waving a hand")
    >>> rename_class("bundle", "wave", "waving a hand")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

import numpy as np

from clipfsar.runtime.bundle.edit import replace_store
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.bundle.store import PrototypeStore
from clipfsar.runtime.teaching.enroll import Enroller, EnrollError, check_name


@dataclass(frozen=True)
class ClassInfo:
    """One enrolled class: its name and shot count (0 = zero-shot, scored by the video-text branch)."""
    name: str
    shots: int


def list_classes(bundle: Union[str, Path]) -> List[ClassInfo]:
    """The enrolled classes, in store order. Raises BundleError for an invalid bundle."""
    store = Bundle.open(Path(bundle)).store
    return [ClassInfo(n, int(k)) for n, k in zip(store.class_names, store.shots)]


def _subset(store: PrototypeStore, keep: List[int]) -> PrototypeStore:
    sf = None if store.support_features is None else store.support_features[keep]
    return PrototypeStore(tuple(store.class_names[i] for i in keep), store.prototypes[keep],
                          store.text_features[keep], store.shots[keep], sf)


def remove_class(bundle: Union[str, Path], name: str, timeout: float = 30.0) -> Bundle:
    """Remove class ``name``. Raises EnrollError if it is not enrolled or is the only class (nothing changed)."""
    def change(store: PrototypeStore) -> PrototypeStore:
        if name not in store.class_names:
            raise EnrollError(f"class '{name}' is not enrolled (enrolled: {', '.join(store.class_names) or 'none'})")
        if len(store.class_names) == 1:
            raise EnrollError(f"'{name}' is the bundle's only class; enrol another one before removing it")
        return _subset(store, [i for i, n in enumerate(store.class_names) if n != name])
    return replace_store(Path(bundle), change, timeout)


def rename_class(bundle: Union[str, Path], old: str, new: str, timeout: float = 30.0) -> Bundle:
    """Rename ``old`` to ``new``. The name is part of the model's input: the text feature is recomputed for the new
    name and, for a few-shot class, the prototype too (from its stored mean support features, through
    ``support_head``), exactly as enrolling the same clips under the new name.

    Raises:
        EnrollError: ``old`` not enrolled, ``new`` empty, taken or tokenised as another class; a few-shot class
            stored without support features (older bundle) or pooled after the Transformer (re-enrol it instead).
        TokenizerError: ``new`` does not fit the text context.
    """
    new = check_name(new)
    enroller = Enroller(Bundle.open(Path(bundle)))
    text = enroller.text_feature(new)

    def change(store: PrototypeStore) -> PrototypeStore:
        if old not in store.class_names:
            raise EnrollError(f"class '{old}' is not enrolled (enrolled: {', '.join(store.class_names) or 'none'})")
        if new != old and new in store.class_names:
            raise EnrollError(f"cannot rename '{old}' to '{new}': '{new}' is already enrolled")
        enroller._check_distinct(new, store, old)
        i = store.class_names.index(old)
        protos = store.prototypes.copy()
        if store.shots[i] > 0:
            sf = store.support_features
            if sf is None or np.isnan(sf[i]).any() or enroller.bundle.manifest.model.shot_pooling != "before":
                raise EnrollError(f"class '{old}' cannot be renamed in place (no stored mean support features, or "
                                  f"shots pooled after the Transformer): enrol its clips again under '{new}'")
            protos[i] = enroller.prototype(sf[i][None], text)
        texts = store.text_features.copy()
        texts[i] = text
        names = list(store.class_names)
        names[i] = new
        return PrototypeStore(tuple(names), protos, texts, store.shots, store.support_features)
    return replace_store(Path(bundle), change, timeout)
