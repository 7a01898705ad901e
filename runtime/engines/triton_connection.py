"""The connection to a Triton server running ``clipfsar serve``: URL schemes, tritonclient (gRPC or HTTP), retries
with backoff, the server's ``bundle_info``, and the errors a client sees. Split from runtime/engines/triton_client.py
(which re-exports every public name here); see its docstring for the client as a whole.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Callable, Dict, Optional, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np

from clipfsar.runtime.base.errors import BundleError, ClipFsarError
from clipfsar.runtime.engines.triton_protocol import ENROLL_MODEL, INFO_MODEL

log = logging.getLogger(__name__)

SCHEMES = ("grpc", "triton", "http")
_DTYPES = {np.dtype(np.object_): "BYTES", np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32",
           np.dtype(np.int64): "INT64", np.dtype(np.uint8): "UINT8", np.dtype(np.float16): "FP16"}


class ServerUnavailableError(ClipFsarError):
    """The Triton server cannot be reached (down, too slow, or restarting) after every retry."""


class ServerRequestError(ClipFsarError):
    """The server rejected a request (Triton's message, with the model and tensors we sent)."""


class ServerMismatchError(BundleError):
    """The server serves graphs or classes that differ from this bundle's (refused)."""


def is_remote(backend: str) -> bool:
    """True for ``grpc://``, ``triton://`` and ``http://`` backends."""
    return isinstance(backend, str) and backend.split("://", 1)[0] in SCHEMES and "://" in backend


class TritonConnection:
    """One server: a tritonclient (gRPC or HTTP), retries with backoff, and the server's ``bundle_info``.

    Args:
        url: ``grpc://HOST:PORT``, ``triton://HOST:PORT`` or ``http://HOST:PORT`` [``?timeout=S&retries=N``].
        verify: called with the server's info dict on (re)connecting; raises to refuse the server.
    Raises:
        ClipFsarError: a malformed URL, or tritonclient missing (``pip install 'clip-fsar[serve]'``).
    """

    def __init__(self, url: str, verify: Optional[Callable[[Dict[str, Any]], None]] = None,
                 timeout: float = 30.0, retries: int = 5, backoff: float = 0.5, max_backoff: float = 8.0):
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname or not parts.port:
            raise ClipFsarError(f"server URL '{url}' is not grpc://HOST:PORT, triton://HOST:PORT or http://HOST:PORT")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"timeout", "retries"}
        if unknown:
            raise ClipFsarError(f"server URL '{url}': unknown option(s) {', '.join(sorted(unknown))} "
                                f"(known: timeout, retries)")
        try:
            self.timeout = float(query.get("timeout", timeout))
            self.retries = int(query.get("retries", retries))
        except ValueError as e:
            raise ClipFsarError(f"server URL '{url}': {e}") from e
        self.url, self.address = url.split("?", 1)[0], f"{parts.hostname}:{parts.port}"
        self.protocol = "http" if parts.scheme == "http" else "grpc"
        self.backoff, self.max_backoff = backoff, max_backoff
        self.verify = verify
        try:
            if self.protocol == "http":
                import tritonclient.http as tc
            else:
                import tritonclient.grpc as tc
            from tritonclient.utils import InferenceServerException
        except ImportError as e:
            raise ClipFsarError(f"backend {url} needs tritonclient: pip install 'clip-fsar[serve]'") from e
        self._tc, self._server_error = tc, InferenceServerException
        self._client = None
        self.info: Dict[str, Any] = {}
        self.reconnects = 0  # connections re-established after a transport error (each one re-checked the server)
        self._lost = False

    # ----- connection -----------------------------------------------------------------------------------------
    def _open(self) -> None:
        tc = self._tc
        if self.protocol == "http":
            client = tc.InferenceServerClient(self.address, connection_timeout=self.timeout,
                                              network_timeout=self.timeout)
        else:
            client = tc.InferenceServerClient(self.address)
        self._client = client
        self.info = self._ask_info()
        if self.verify is not None:
            self.verify(self.info)

    def _ask_info(self) -> Dict[str, Any]:
        tc = self._tc
        inp = tc.InferInput("client", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"clip-fsar client"]], dtype=np.object_))
        result = self._call(INFO_MODEL, [inp], [tc.InferRequestedOutput("info")])
        raw = result.as_numpy("info").ravel()[0]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def _call(self, model: str, inputs, outputs):
        if self.protocol == "http":
            return self._client.infer(model, inputs, outputs=outputs)
        return self._client.infer(model, inputs, outputs=outputs, client_timeout=self.timeout)

    def _is_transport_error(self, e: Exception) -> bool:
        """True for errors a retry can cure: no connection, a timeout, a server shutting down or loading."""
        if isinstance(e, (ConnectionError, TimeoutError, OSError)):
            return True
        if isinstance(e, self._server_error):
            status, msg = str(e.status() or ""), str(e.message() or "").lower()
            return (any(s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "503"))
                    or any(s in msg for s in ("failed to connect", "connection refused", "timed out",
                                              "deadline exceeded", "socket closed", "not ready", "unavailable",
                                              "is not found", "unknown model")))
        return type(e).__name__ in ("Timeout", "timeout")  # gevent's timeouts (HTTP client)

    def connect(self) -> Dict[str, Any]:
        """Connect (with the retries of :meth:`infer`), read and verify ``bundle_info``; returns it."""
        self._retrying(INFO_MODEL, {}, lambda: None)
        return self.info

    def infer(self, model: str, inputs: Dict[str, np.ndarray], outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        """Run ``model`` on the server; reconnects with backoff on transport errors (and re-verifies the server).

        Raises:
            ServerUnavailableError: still unreachable after ``retries`` retries. ServerRequestError: rejected.
            ServerMismatchError: after a reconnect the server serves another bundle.
        """
        tc = self._tc

        def call():
            req = []
            for name, array in inputs.items():
                array = np.asarray(array)
                dtype = _DTYPES.get(array.dtype)
                if dtype is None:
                    raise ServerRequestError(f"{model}: input '{name}' has dtype {array.dtype}; "
                                             f"send one of {', '.join(str(d) for d in _DTYPES)}")
                t = tc.InferInput(name, list(array.shape), dtype)
                t.set_data_from_numpy(np.ascontiguousarray(array))
                req.append(t)
            result = self._call(model, req, [tc.InferRequestedOutput(n) for n in outputs])
            return {n: result.as_numpy(n) for n in outputs}

        return self._retrying(model, inputs, call)

    def _retrying(self, model: str, inputs: Dict[str, np.ndarray], call: Callable[[], Any]) -> Any:
        wait, last = self.backoff, None
        for attempt in range(self.retries + 1):
            try:
                if self._client is None:
                    self._open()
                    if self._lost:  # a connection was lost before: this is a reconnect (the server re-checked)
                        self._lost = False
                        self.reconnects += 1
                        log.warning("reconnected to %s", self.url)
                return call()
            except ClipFsarError:
                raise
            except Exception as e:  # noqa: BLE001 - tritonclient and its transports raise many types
                if not self._is_transport_error(e):
                    shapes = ", ".join(f"{k} {tuple(np.shape(v))} {np.asarray(v).dtype}" for k, v in inputs.items())
                    raise ServerRequestError(f"server {self.url} rejected {model}({shapes}): {_reason(e)}") from e
                last = e
                self._lost = self._lost or self.info != {}
                self._close_client()
                if attempt < self.retries:
                    log.warning("server %s: %s; retrying in %.1f s (%d/%d)", self.url, _short(e), wait,
                                attempt + 1, self.retries)
                    time.sleep(wait)
                    wait = min(wait * 2, self.max_backoff)
        raise ServerUnavailableError(f"server {self.url} unreachable after {self.retries + 1} attempt(s) "
                                     f"({model}): {_short(last)}")

    def enroll(self, name: str, clips: Sequence[Sequence[np.ndarray]] = (), mode: str = "new") -> Dict[str, Any]:
        """Enrol class ``name`` on the server from clips given as uint8 BGR frames (decoded here; every frame of one
        call the same size; none: zero-shot). ``mode``: ``new``, ``add`` or ``replace`` (runtime/teaching/enroll.py).

        Returns the server's new ``bundle_info``. Clients whose bundle lacks the class are refused from then on
        (their store digest differs) until they use a bundle with the same store.
        Raises:
            ServerRequestError: the server refused (its reason: name taken, frames of different sizes, ...).
        """
        frames = [np.asarray(f, np.uint8) for clip in clips for f in clip]
        if len({f.shape for f in frames}) > 1:
            raise ServerRequestError(f"enroll '{name}': frames of different sizes "
                                     f"{sorted({f.shape for f in frames})}; resize them to one size first")
        stacked = np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)
        out = self.infer(ENROLL_MODEL, {"name": np.array([name.encode()], dtype=np.object_),
                                        "mode": np.array([mode.encode()], dtype=np.object_),
                                        "frames": stacked,
                                        "clip_lengths": np.array([len(c) for c in clips], np.int32)}, ["info"])
        raw = out["info"].ravel()[0]
        self.info = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        return self.info

    def _close_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken channel
                pass
        self._client = None

    def close(self) -> None:
        self._close_client()

    def statistics(self, model: str) -> Dict[str, Any]:
        """Triton's inference statistics of ``model`` (JSON form: ``model_stats[0].batch_stats`` etc.)."""
        if self._client is None:
            self._open()
        if self.protocol == "http":
            return self._client.get_inference_statistics(model)
        return self._client.get_inference_statistics(model, as_json=True)


def _reason(e: BaseException) -> str:
    """The server's reason, on one line: PyTriton wraps a model's exception in a traceback; keep its last line
    (``EnrollError: class 'x' is already enrolled``) after Triton's first."""
    msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    lines = [ln.strip() for ln in str(msg or type(e).__name__).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception): ", ln)]
    if "Traceback (most recent call last)" in (msg or "") and errors:
        return f"{lines[0].split(', message:')[0]}: {errors[-1]}"
    return " ".join(lines)[:2000]


def _short(e: Optional[BaseException]) -> str:
    if e is None:
        return "no error"
    msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    return (msg or type(e).__name__).splitlines()[0][:200]
