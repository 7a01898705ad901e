"""What server (serving/server.py) and client (engines/triton_client.py) agree on: model and tensor names, and the
digest of a prototype store."""
from __future__ import annotations

import hashlib

import numpy as np

SERVED_INPUTS = {"image_encoder": ("images",), "query_head": ("query",)}  # graph -> inputs a client sends
HEAD_OUTPUTS = ("probs", "p_fewshot", "p_videotext", "distances")
INFO_MODEL = "bundle_info"
ENROLL_MODEL = "enroll"


def store_digest(prototypes: np.ndarray, text: np.ndarray) -> str:
    """sha256 over the store tensors a query head uses: the shape and float32 bytes of prototypes (N, T, D), then
    of text features (N, D). Server and client compute it alike, so a client refuses a server with other classes.
    """
    h = hashlib.sha256()
    for a in (prototypes, text):
        a = np.ascontiguousarray(a, np.float32)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
