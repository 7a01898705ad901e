"""Client backend: a bundle's ``image_encoder`` and ``query_head`` run on a Triton server (``clipfsar serve``).

``Classifier.load(bundle, backend="grpc://HOST:8001")`` keeps decoding, sampling, preprocessing, the ring buffer,
calibration and smoothing here and sends only the encoder and head calls to the server (``tritonclient``):

* ``grpc://HOST:PORT`` or ``triton://HOST:PORT``: gRPC (Triton's port 8001 by default); ``http://HOST:PORT``: HTTP
  (port 8000). Options as a query string: ``?timeout=30&retries=5`` (seconds per request; reconnect attempts).
* On connecting (and after every reconnect) the client reads the server's ``bundle_info`` and refuses a server
  whose graphs' sha256 are not in this bundle's manifest, or whose frames/dims differ; on the first head call
  (and when the classifier's store changes) it compares the server's prototype-store digest with its own.
* Server down, slow or restarted: the request is retried with backoff 0.5 s doubling to 8 s, ``retries`` times,
  then :class:`ServerUnavailableError` (no decision is made without the server's answer). A request the server
  rejects (wrong shape or dtype) raises :class:`ServerRequestError` with Triton's message.

Example:
    >>> from clipfsar.runtime import Classifier
    >>> clf = Classifier.load("bundle/", backend="grpc://gpu-server:8001")
    >>> for d in clf.stream("rtsp://cam1/stream"):
    ...     print(d.label, d.score)
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.engines.triton_connection import (  # noqa: F401 (re-exported)
    SCHEMES,
    ServerMismatchError,
    ServerRequestError,
    ServerUnavailableError,
    TritonConnection,
    is_remote,
)
from clipfsar.runtime.engines.triton_protocol import HEAD_OUTPUTS, SERVED_INPUTS, store_digest

log = logging.getLogger(__name__)


class BundleCheck:
    """Refuses a server whose ``bundle_info`` does not match ``spec`` (this bundle's manifest entry of the graph).

    The served graph's sha256 must be one of the manifest's (the fp32 graph or a precision variant) and the model
    facts must agree; the prototype-store digest is checked by :class:`TritonGraph` against the tensors the
    classifier would have used.
    """

    def __init__(self, url: str, name: str, spec, facts=None):
        self.url, self.name, self.spec, self.facts = url, name, spec, facts

    def __call__(self, info: Dict[str, Any]) -> None:
        served = info.get("graphs", {}).get(self.name)
        if served is None:
            raise ServerMismatchError(f"server {self.url} does not serve '{self.name}' (serves "
                                      f"{', '.join(info.get('graphs', {})) or 'nothing of ours'})")
        if self.spec is not None:
            ours = {self.spec.sha256} | {v.sha256 for v in getattr(self.spec, "variants", {}).values()}
            if served.get("sha256") not in ours:
                raise ServerMismatchError(
                    f"server {self.url} serves a different '{self.name}' (sha256 {str(served.get('sha256'))[:12]}…, "
                    f"this bundle has {', '.join(sorted(s[:12] + '…' for s in ours))}): refusing it; serve this "
                    f"bundle or use the server's")
        if self.facts is not None:
            for key in ("frames", "embed_dim", "image_size"):
                if key in info and info[key] != getattr(self.facts, key):
                    raise ServerMismatchError(f"server {self.url}: {key} {info[key]} differs from this bundle's "
                                              f"{getattr(self.facts, key)}")


class TritonGraph:
    """``image_encoder`` or ``query_head`` on a Triton server, with the interface of the local graphs
    (``run(**inputs) -> dict``, ``backend``, ``providers``, ``input_names``, ``output_names``).

    ``query_head.run`` sends only ``query`` (B, T, D): the server holds the prototype store; the ``prototypes``
    and ``text`` passed in are used to check (once per distinct store) that the server's store is the same.

    Raises (from ``run``):
        ServerUnavailableError, ServerRequestError, ServerMismatchError (see :class:`TritonConnection`).
    """

    def __init__(self, url: str, name: str, spec=None, facts=None):
        if name not in SERVED_INPUTS:
            raise ClipFsarError(f"backend {url}: graph '{name}' is not served (served: {', '.join(SERVED_INPUTS)})")
        self.name, self.url = name, url
        self.input_names = list(SERVED_INPUTS[name])
        self.output_names = ["features"] if name == "image_encoder" else list(HEAD_OUTPUTS)
        self.connection = TritonConnection(url, verify=BundleCheck(url, name, spec, facts))
        self.connection.connect()
        served = self.connection.info["graphs"][name]
        self.served_precision = served.get("precision", "fp32")
        self.backend = url
        self.providers = [f"triton {url} ({served.get('provider', '?')})"]
        self._checked_store: Optional[tuple] = None

    def run(self, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ClipFsarError(f"{self.name} on {self.url}: missing inputs {sorted(missing)}")
        if self.name == "query_head" and "prototypes" in inputs and "text" in inputs:
            self._check_store(inputs["prototypes"], inputs["text"])
        return self.connection.infer(self.name, {k: inputs[k] for k in self.input_names}, self.output_names)

    def _check_store(self, prototypes: np.ndarray, text: np.ndarray) -> None:
        key = (id(prototypes), id(text), prototypes.shape, text.shape, self.connection.reconnects)
        if self._checked_store == key:
            return
        ours = store_digest(prototypes, text)
        if self.connection.info.get("store_digest") != ours:
            self.connection.info = self.connection._ask_info()  # the server may have enrolled since we connected
            if self.connection.info.get("store_digest") != ours:
                raise ServerMismatchError(
                    f"server {self.url} holds other classes than this bundle (store digest "
                    f"{str(self.connection.info.get('store_digest'))[:12]}… vs {ours[:12]}…; server classes: "
                    f"{', '.join(self.connection.info.get('classes', []))}): refusing it")
        self._checked_store = key


def remote_graph(url: str, path, spec=None, facts=None) -> TritonGraph:
    """The create_graph hook: graph ``path``'s name (``image_encoder``/``query_head``) on the server at ``url``."""
    from pathlib import Path
    return TritonGraph(url, Path(path).name.split(".", 1)[0], spec, facts)
