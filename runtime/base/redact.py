"""Credentials never leave the process: ``rtsp://user:secret@host/...`` is shown as ``rtsp://user:***@host/...``.

Every name a source reports (logs, JSON decisions, errors, the annotated overlay) goes through :func:`redact`.
"""
from __future__ import annotations

import logging
import re

# scheme://user:password@  (the password is everything up to the last '@' before the host part); also the
# scheme:/user:password@ that pathlib makes of a URL
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*:/{1,2})(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")
# ?password=... / &api_key=... / &auth_token=... / &X-Amz-Signature=... in a query string: any key naming a secret.
# The value ends at & ; # whitespace or a quote, and at a ':' that ends the URL ("...?token=abc: refused")
_QUERY = re.compile(r"(?P<key>[?&;][\w.\-]*(?:password|passwd|pass|pwd|token|auth|key|secret|signature|sig|"
                    r"credential)[\w.\-]*=)(?:[^&;#\s:'\"]|:(?![\s'\"]|$))*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the passwords of every URL in it (userinfo and password-like query values) masked.

    Example:
        >>> redact("rtsp://admin:hunter2@10.0.0.5:554/stream1?token=abc")
        'rtsp://admin:***@10.0.0.5:554/stream1?token=***'
        >>> redact("cannot open http://cam/s?api_key=k1: connection refused")
        'cannot open http://cam/s?api_key=***: connection refused'
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    return _QUERY.sub(lambda m: f"{m['key']}***", text)


def refuse_url(value: str, what: str) -> str:
    """``value`` unchanged, unless it is a URL where a local path is expected: then a ClipFsarError naming it
    (masked), raised before ``pathlib`` mangles it (``rtsp://u:pw@h`` -> ``rtsp:/u:pw@h``)."""
    if "://" in str(value):
        from clipfsar.runtime.base.errors import ClipFsarError
        raise ClipFsarError(f"{what} must be a local file or folder, not the URL {redact(str(value))}")
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks URL passwords in every record (message and arguments formatted first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
