"""Where a post may send the browser next: `_next` checked against an allow-list.

Pure. Anything doubtful returns None, and the caller uses our own thank-you
page: a form endpoint must never become an open redirect.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit, urlunsplit

from .message import header_text_problem
from .urls import normalize_host


def safe_next(value: str, origin: str | None, hosts: Collection[str]) -> str | None:
    """Return an absolute URL to redirect to, or None.

    Allowed: a relative path ("/thanks.html") on the posting page's (already
    verified) origin, or an absolute http(s) URL whose host is exactly one of
    `hosts`. Refused: other hosts and look-alikes, scheme-relative "//x",
    backslashes, user-info ("a@b"), other schemes (javascript:, data:), and
    any control character, CR or LF.
    """
    value = value.strip()
    if not value or header_text_problem(value) or "\\" in value or " " in value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. NFKC look-alikes of "/", "#", "@" in the host
        return None
    if not parts.scheme and not parts.netloc:
        if origin is None or not value.startswith("/") or value.startswith("//"):
            return None
        return origin + value
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    try:
        host = normalize_host(parts.hostname or "")
        port = parts.port
    except ValueError:
        return None
    if host not in hosts:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit(
        (parts.scheme.lower(), netloc, parts.path or "/", parts.query, "")
    )
