"""``clipfsar serve``: a bundle's graphs behind NVIDIA Triton Inference Server, through PyTriton.

We never write a server or a scheduler of our own: PyTriton starts the real ``tritonserver`` binary (shipped in the
``nvidia-pytriton`` wheel, extra ``clip-fsar[serve]``) and binds Python callables that run the bundle's graphs in
this torch-free runtime. Triton's dynamic batcher merges the requests of every client into one encoder call.

Served models (tensor shapes without Triton's batch axis; B = the batch Triton forms):

==================  ==============================================  ===============================================
model               inputs                                          outputs
==================  ==============================================  ===============================================
``image_encoder``   ``images`` FP32 (3, H, W), preprocessed          ``features`` FP32 (D,)
``query_head``      ``query`` FP32 (T, D), a window's frame features  ``probs``, ``p_fewshot``, ``p_videotext``,
                                                                    ``distances``: FP32 (N,), N = classes
``bundle_info``     ``client`` BYTES (1,), any text (logged)          ``info`` BYTES (1,): JSON (graph sha256s and
                                                                    precisions, store digest, classes, T, D, H)
``enroll``          ``name``, ``mode`` BYTES (1,); ``frames`` UINT8    ``info`` (after the store was rewritten)
                    (F, H, W, 3); ``clip_lengths`` INT32 (K,)
                    (not batched; see :meth:`BundleServer._enroll`)
==================  ==============================================  ===============================================

``query_head`` uses the server's prototype store: clients send only their window's features. Clients check
``bundle_info`` against their own bundle and refuse a mismatch (runtime/engines/triton_client.py).

The server's process environment (libpython, the stub's numpy) is prepared by runtime/serving/env.py.

Example:
    >>> from clipfsar.runtime.serving.server import BundleServer
    >>> with BundleServer("bundle/", grpc_port=8001, http_port=8000) as server:
    ...     server.wait()                      # until Ctrl-C
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.engines.backends import create_graph
from clipfsar.runtime.engines.cache_dir import engine_cache_dir
from clipfsar.runtime.engines.precision import choose_precisions
from clipfsar.runtime.engines.triton_protocol import ENROLL_MODEL, HEAD_OUTPUTS, INFO_MODEL, SERVED_INPUTS, store_digest
from clipfsar.runtime.serving.env import (  # noqa: F401 (public)
    DEFAULT_STUB_ENV,
    STUB_ENV_VAR,
    ServeError,
    fix_libpython_path,
    port_free,
    stub_python_env,
    use_stub_env,
)

log = logging.getLogger(__name__)

SERVED_GRAPHS = tuple(SERVED_INPUTS)


class BundleServer:
    """A bundle served by a real Triton server (PyTriton): ``image_encoder``, ``query_head``, ``bundle_info``.

    Args:
        bundle: the bundle folder (validated, every hash checked, before anything starts).
        host: address to listen on (``127.0.0.1`` local only, ``0.0.0.0`` every interface).
        http_port, grpc_port, metrics_port: Triton's endpoints (health: ``/v2/health/live`` and ``/ready`` on
            HTTP; metrics: Prometheus text on ``http://HOST:METRICS_PORT/metrics``).
        max_batch: the largest batch Triton forms for one encoder or head call.
        queue_delay_us: how long Triton may hold a request to batch it with others (microseconds).
        instances: model instances per graph (each runs its own calls concurrently; the sessions are shared).
        backend, precision, threads: as ``Classifier.load`` (which graph variant runs, on what).
        stub_env: the stub's Python environment when this one has numpy >= 2 (see :func:`stub_python_env`).
        cache_dir: engine cache folder (``--cache-dir``; None: runtime/engines/cache_dir.py's default).
    Raises:
        BundleError: the bundle fails validation. ServeError: pytriton missing, a port in use, a bad stub env,
        Triton failing to start (its log tail is in the message).
    """

    def __init__(self, bundle, host: str = "0.0.0.0", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, max_batch: int = 64, queue_delay_us: int = 2000, instances: int = 1,
                 backend: str = "auto", precision: str = "auto", threads: int = 0,
                 stub_env: Optional[Path] = None, log_verbose: int = 0, cache_dir: Optional[Path] = None):
        if max_batch < 1 or instances < 1 or queue_delay_us < 0:
            raise ServeError(f"max_batch ({max_batch}) and instances ({instances}) must be >= 1, "
                             f"queue_delay_us ({queue_delay_us}) >= 0")
        self.bundle = Bundle.open(Path(bundle))
        self.host, self.ports = host, {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.max_batch, self.queue_delay_us, self.instances = max_batch, queue_delay_us, instances
        self.log_verbose = log_verbose
        for what, port in self.ports.items():
            if not port_free(host if host != "0.0.0.0" else "", port):
                raise ServeError(f"{what} port {port} on {host} is in use (pass another --{what}-port)")
        try:
            import pytriton  # noqa: F401
        except ImportError as e:
            raise ServeError("serving needs PyTriton: pip install 'clip-fsar[serve]' (nvidia-pytriton)") from e
        self.stub_env = stub_python_env(stub_env)
        chosen = choose_precisions(self.bundle, precision, backend, SERVED_GRAPHS)
        self.precisions = {g: chosen[g] for g in SERVED_GRAPHS}
        graphs = self.bundle.manifest.graphs
        cache = engine_cache_dir(self.bundle.root, cache_dir)  # runtime/engines/cache_dir.py
        self.graphs = {g: create_graph(self.bundle.graph_path(g, self.precisions[g]), backend,
                                       cache, threads, precision=self.precisions[g],
                                       spec=graphs[g], graph_sha256=self.bundle.graph_sha256(g, self.precisions[g]))
                       for g in SERVED_GRAPHS}
        self._store_lock = threading.Lock()
        self._enroller = None
        self._triton = None

    # ----- what is served ---------------------------------------------------------------------------------------
    def info(self) -> Dict[str, Any]:
        """The JSON ``bundle_info`` returns: what a client checks against its own bundle."""
        from clipfsar import __version__
        facts, store = self.bundle.manifest.model, self.bundle.store
        return {
            "package_version": __version__,
            "bundle": self.bundle.root.name,
            "graphs": {g: {"precision": self.precisions[g], "sha256": self.bundle.graph_sha256(g, self.precisions[g]),
                           "provider": self.graphs[g].providers[0]} for g in SERVED_GRAPHS},
            "store_digest": store_digest(store.prototypes, store.text_features),
            "classes": list(store.class_names),
            "frames": facts.frames, "embed_dim": facts.embed_dim, "image_size": facts.image_size,
            "max_batch": self.max_batch,
        }

    def _encode(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        return {"features": self.graphs["image_encoder"].run(images=np.ascontiguousarray(images, np.float32))
                ["features"]}

    def _head(self, query: np.ndarray) -> Dict[str, np.ndarray]:
        with self._store_lock:
            store = self.bundle.store
        out = self.graphs["query_head"].run(query=np.ascontiguousarray(query, np.float32),
                                            prototypes=store.prototypes, text=store.text_features)
        return {k: out[k] for k in HEAD_OUTPUTS}

    def _enroll(self, requests) -> List[Dict[str, np.ndarray]]:
        """``enroll``: name BYTES (1,), mode BYTES (1,) (new/add/replace), frames UINT8 (F, H, W, 3) (every clip's
        BGR frames, one after another), clip_lengths INT32 (K,) (frames per clip; K = 0: zero-shot) -> info.
        The store is rewritten atomically (runtime/teaching/enroll.py) and the head uses it from the next call."""
        from clipfsar.runtime.teaching.enroll import Enroller
        out = []
        for r in requests:
            name = r["name"].ravel()[0].decode()
            mode = r["mode"].ravel()[0].decode()
            frames, lengths = r["frames"], [int(n) for n in r["clip_lengths"].ravel()]
            if sum(lengths) != len(frames) or any(n < 1 for n in lengths):
                raise ClipFsarError(f"enroll '{name}': clip_lengths {lengths} do not split {len(frames)} frames")
            starts = np.cumsum([0] + lengths)
            clips = [list(frames[a:b]) for a, b in zip(starts[:-1], starts[1:])]
            with self._store_lock:
                if self._enroller is None:
                    self._enroller = Enroller(self.bundle, backend="cpu")
                self._enroller.bundle = self.bundle
                self.bundle = self._enroller.enroll(name, clips, mode)
            log.info("enrolled '%s' (%s, %d clips): %d classes", name, mode, len(clips),
                     len(self.bundle.store.class_names))
            out.append({"info": np.array([json.dumps(self.info()).encode()], dtype=np.bytes_)})
        return out

    def _info(self, client: np.ndarray) -> Dict[str, np.ndarray]:
        log.debug("bundle_info asked by %s", client.ravel()[:1])
        return {"info": np.array([[json.dumps(self.info()).encode()]] * len(client), dtype=np.bytes_)}

    # ----- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> "BundleServer":
        """Launch tritonserver and load the models; returns once they are ready."""
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

        fix_libpython_path()  # before tritonserver (and so the stub) starts
        if self.stub_env is not None:
            use_stub_env(self.stub_env)
        facts = self.bundle.manifest.model
        H, T, D = facts.image_size, facts.frames, facts.embed_dim
        config = TritonConfig(http_address=self.host, http_port=self.ports["http"], grpc_address=self.host,
                              grpc_port=self.ports["grpc"], metrics_address=self.host,
                              metrics_port=self.ports["metrics"], exit_timeout_secs=5, log_verbose=self.log_verbose)
        batched = ModelConfig(max_batch_size=self.max_batch,
                              batcher=DynamicBatcher(max_queue_delay_microseconds=self.queue_delay_us))
        # PyTriton protects these endpoints with a random token; statistics (read-only: batch sizes, queue times)
        # stay open so operators and clients can see the batching; the repository, shared memory, trace and
        # logging controls stay protected.
        security = TritonSecurityConfig(restricted_endpoints=["shared-memory", "model-repository", "trace",
                                                              "logging"])
        self._triton = triton = Triton(config=config, security_config=security)
        try:
            triton.bind("image_encoder", [batch(self._encode)] * self.instances,
                        inputs=[Tensor(name="images", dtype=np.float32, shape=(3, H, H))],
                        outputs=[Tensor(name="features", dtype=np.float32, shape=(D,))], config=batched, strict=True)
            triton.bind("query_head", [batch(self._head)] * self.instances,
                        inputs=[Tensor(name="query", dtype=np.float32, shape=(T, D))],
                        outputs=[Tensor(name=n, dtype=np.float32, shape=(-1,)) for n in HEAD_OUTPUTS],
                        config=batched, strict=True)
            triton.bind(ENROLL_MODEL, self._enroll, inputs=[
                Tensor(name="name", dtype=np.bytes_, shape=(1,)), Tensor(name="mode", dtype=np.bytes_, shape=(1,)),
                Tensor(name="frames", dtype=np.uint8, shape=(-1, -1, -1, 3)),
                Tensor(name="clip_lengths", dtype=np.int32, shape=(-1,))],
                outputs=[Tensor(name="info", dtype=np.bytes_, shape=(1,))], config=ModelConfig(batching=False))
            triton.bind(INFO_MODEL, batch(self._info), inputs=[Tensor(name="client", dtype=np.bytes_, shape=(1,))],
                        outputs=[Tensor(name="info", dtype=np.bytes_, shape=(1,))],
                        config=ModelConfig(max_batch_size=8))
            triton.run()
        except Exception as e:
            self.stop()
            if isinstance(e, ClipFsarError):
                raise
            raise ServeError(f"Triton did not start for {self.bundle.root}: {e}") from e
        log.info("serving %s on %s: grpc %d, http %d, metrics %d; image_encoder %s (%s), query_head %s (%s)",
                 self.bundle.root, self.host, self.ports["grpc"], self.ports["http"], self.ports["metrics"],
                 self.graphs["image_encoder"].providers[0], self.precisions["image_encoder"],
                 self.graphs["query_head"].providers[0], self.precisions["query_head"])
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C, SIGTERM) or fails."""
        self._triton.serve()

    def stop(self) -> None:
        """Stop tritonserver and the model proxies (idempotent)."""
        if self._triton is not None:
            try:
                self._triton.stop()
            finally:
                self._triton = None

    def __enter__(self) -> "BundleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def served_models() -> List[str]:
    """The model names a server of a bundle exposes."""
    return [*SERVED_GRAPHS, ENROLL_MODEL, INFO_MODEL]
