"""Why a network stream did not open: OpenCV only says "not opened", so after a failed open the URL's host is
probed with plain sockets to tell the user what happened (host not found, connection refused, no answer, HTTP 404,
HTTP 401/403 "unauthorised": the probe sends the URL's own credentials, never shown: :mod:`.redact`).

Run only after an open failed, so it never delays a working stream.
"""
from __future__ import annotations

import socket
from typing import Optional
from urllib.parse import urlsplit

from clipfsar.runtime.base.redact import redact

_DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "tcp": None, "udp": None}


def diagnose(url: str, timeout: float = 5.0) -> Optional[str]:
    """A short reason why ``url`` cannot be reached, or None when it is not a URL or the host answers normally.

    Example:
        >>> diagnose("http://127.0.0.1:9/x", 1.0)
        'connection refused by 127.0.0.1:9'
    """
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError as e:
        return f"malformed URL ({e})"
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    port = port or _DEFAULT_PORTS[scheme]
    if port is None:
        return None
    where = f"{host}:{port}"
    try:
        addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        return f"host {host!r} not found"
    try:
        sock = socket.create_connection(addr[4][:2], timeout=timeout)
    except ConnectionRefusedError:
        return f"connection refused by {where}"
    except socket.timeout:
        return f"no answer from {where}: timed out after {timeout:g} s"
    except OSError as e:
        return f"cannot reach {where} ({e.strerror or e})"
    with sock:
        if scheme != "http":
            return f"{where} accepted the connection but sent no stream OpenCV can decode"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        auth = ""
        if parts.username is not None:  # the credentials FFmpeg sent: a 401 then means they are wrong
            import base64
            from urllib.parse import unquote
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
            auth = f"Authorization: Basic {token}\r\n"
        try:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n".encode())
            status = sock.recv(256).split(b"\r\n", 1)[0].decode("latin-1", "replace")
        except socket.timeout:
            return f"{where} accepted the connection but did not answer: timed out after {timeout:g} s"
        except OSError as e:
            return f"{where} closed the connection ({e.strerror or e})"
    fields = status.split()
    if len(fields) >= 2 and fields[1].isdigit():
        code = int(fields[1])
        if code == 404:
            return f"not found (HTTP 404 from {redact(url)})"
        if code in (401, 403):  # retrying will not change it: the caller stops at once (live._definitive)
            given = "wrong" if parts.username is not None else "missing (none in the URL)"
            return (f"unauthorised (HTTP {code} {' '.join(fields[2:])} from {redact(url)}): the user name or "
                    f"password is {given}")
        if code >= 400:
            return f"HTTP {code} {' '.join(fields[2:])} from {where}"
        return f"{where} answered HTTP {code} but sent no stream OpenCV can decode"
    if not status:
        return f"{where} closed the connection without answering"
    return f"{where} did not answer like an HTTP server"
