"""Keeping secrets out of messages, dead letters and logs.

A webhook or Slack URL is itself a secret (its path or query carries the token), so any URL
shown to a person is cut to ``scheme://host/…``. Passwords are replaced as whole tokens
only: a short password inside an ordinary word is left alone rather than mangling the text.
"""

from __future__ import annotations

import re
import urllib.parse

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: no user info, path, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<url>"
    if ":" in host:
        host = f"[{host}]"
    tail = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else "/"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{tail}"


def redact_urls(text: str) -> str:
    """``text`` with every URL in it cut to ``scheme://host/…``."""
    return _URL.sub(lambda m: redact_url(m.group(0)), str(text))


def redact_secrets(text: str, secrets) -> str:
    """``text`` with each secret replaced by ``***`` where it stands as a whole token (not
    inside a longer run of letters and digits)."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])", "***", text)
    return text
