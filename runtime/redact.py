"""Credentials never leave the process: ``rtsp://user:secret@host/...`` is shown as ``rtsp://user:***@host/...``.

Every name a source reports (logs, JSON decisions, errors, the annotated overlay) goes through :func:`redact`.
"""
from __future__ import annotations

import logging
import re

# scheme://user:password@  (the password is everything up to the last '@' before the host part)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")
# ?password=... / &pass=... / &token=... in a query string
_QUERY = re.compile(r"(?P<key>[?&;](?:password|passwd|pass|pwd|token|access_token|auth|key|secret)=)[^&;#\s]*",
                    re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the passwords of every URL in it (userinfo and password-like query values) masked.

    Example:
        >>> redact("rtsp://admin:hunter2@10.0.0.5:554/stream1?token=abc")
        'rtsp://admin:***@10.0.0.5:554/stream1?token=***'
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    return _QUERY.sub(lambda m: f"{m['key']}***", text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks URL passwords in every record (message and arguments formatted first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
