"""Serving a bundle from NVIDIA Triton (PyTriton): the server side and its environment checks.

May import: ``base``, ``video``, ``bundle``, ``engines``, ``teaching``, ``classify``.
"""
