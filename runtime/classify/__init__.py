"""Classification: the ``Classifier`` API, its results, the paper's fusion, streaming windows, annotated video.

May import: ``base``, ``video``, ``bundle``, ``engines``, ``teaching``.
"""
