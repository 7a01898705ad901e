"""The studio's front door (an ASGI middleware): who may call it and how much they may send.

* **Token:** when the studio is bound to an address other than loopback (``--host``), every request must carry the
  token printed at start: ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` (the page's first load; the answer
  sets an HttpOnly, SameSite=Strict cookie so the page's own requests carry it), or that cookie. Else 401.
* **Host:** bound to loopback, a request whose ``Host`` is not a loopback name is refused (400): a web page on the
  internet cannot reach the studio through DNS rebinding.
* **Origin:** a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` is not the studio itself is
  refused (403), and POST bodies must be JSON (415): another site open in the same browser cannot drive the studio
  (cross-site requests with a JSON body need a CORS preflight, which the studio never grants).
* **Size:** a request body above ``max_body`` bytes is refused (413) before it is read in full.
"""
from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie
from typing import Optional
from urllib.parse import parse_qs, urlsplit

COOKIE = "clipfsar_studio_token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def is_loopback(host: str) -> bool:
    """True for the loopback names a browser on this machine uses (127.0.0.1, localhost, ::1)."""
    return host.strip("[]") in {"127.0.0.1", "localhost", "::1"}


def _host_name(value: str) -> str:
    """``127.0.0.1:8080`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware enforcing the rules above.

    Args:
        app: the wrapped ASGI app.
        token: the token every request needs (None: none needed, the loopback default).
        loopback: the studio listens on loopback only (the Host check applies).
        max_body: the largest request body accepted, bytes.
    """

    def __init__(self, app, token: Optional[str], loopback: bool, max_body: int = 64 * 1024):
        self.app, self.token, self.loopback, self.max_body = app, token, loopback, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "GET")
        host = headers.get("host", "")
        if self.loopback and not is_loopback(_host_name(host)):
            return await _error(send, 400, f"Host {host!r} is not this studio (it listens on loopback only)")
        set_cookie = False
        if self.token is not None:
            given = self._token_of(scope, headers)
            if given is None or not secrets.compare_digest(given.encode(), self.token.encode()):
                return await _error(send, 401, "a token is needed: the one `clipfsar studio` printed at start "
                                               "(Authorization: Bearer TOKEN, or ?token=TOKEN)")
            set_cookie = "token=" in scope.get("query_string", b"").decode("latin-1")
        if method in UNSAFE:
            origin = headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != host:
                return await _error(send, 403, f"Origin {origin} is not this studio")
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return await _error(send, 413, f"request body of {length} bytes; at most {self.max_body} accepted")
            body = await _read_body(receive, self.max_body)
            if body is None:
                return await _error(send, 413, f"request body over {self.max_body} bytes")
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if method in ("POST", "PUT", "PATCH") and body and ctype != "application/json":
                return await _error(send, 415, "send the request body as JSON (Content-Type: application/json)")
            receive = _replay(body, receive)
        if set_cookie:
            send = _with_cookie(send, self.token)
        return await self.app(scope, receive, send)

    def _token_of(self, scope, headers) -> Optional[str]:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        q = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if q:
            return q[0]
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            return None
        return cookie[COOKIE].value if COOKIE in cookie else None


async def _read_body(receive, limit: int) -> Optional[bytes]:
    """The whole request body, or None as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then the real channel: the disconnect of a client that leaves
    return replay


def _with_cookie(send, token: str):
    async def sender(message):
        if message["type"] == "http.response.start":
            cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            message = dict(message, headers=list(message.get("headers", [])) + [(b"set-cookie", cookie.encode())])
        await send(message)
    return sender


async def _error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
