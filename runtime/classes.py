"""``from clipfsar.runtime.classes import list_classes, remove_class, rename_class``: the path earlier READMEs
documented; the code lives in :mod:`clipfsar.runtime.teaching.classes`."""
from clipfsar.runtime.teaching.classes import list_classes, remove_class, rename_class

__all__ = ["list_classes", "remove_class", "rename_class"]
