"""Inference backends for a bundle's graphs: onnxruntime, TensorRT (engines, cache, profiles), precision choice,
and a Triton server as a remote backend (the client side; the server is in ``serving``).

May import: ``base``, ``video``, ``bundle``.
"""
