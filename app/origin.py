"""Where a post comes from: the page's origin and the client's address, canonical.

Canonical so that one client or site is always counted and compared as one:
`0:0:0:0:0:0:0:1` is `::1`, `HTTPS://Example.COM:443` is `https://example.com`.
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit

from flask import g, request

from .formdefs import FormDef
from .urls import normalize_origin


def request_origin() -> str | None:
    """Return the canonical origin of the posting page, from Origin or Referer."""
    if "formpost_origin" not in g:
        raw = request.headers.get("Origin")
        if not raw:
            referer = urlsplit(request.headers.get("Referer", ""))
            raw = f"{referer.scheme}://{referer.netloc}" if referer.netloc else ""
        g.formpost_origin = _canonical(raw) if raw else None
    return g.formpost_origin


@functools.lru_cache(maxsize=512)
def _canonical(raw: str) -> str | None:
    try:
        return normalize_origin(raw)
    except ValueError:
        return None  # "null" (sandboxed frames, file://) and garbage


def origin_allowed(form: FormDef, origin: str | None) -> bool:
    """Allowed: one of the form's origins, or our own."""
    if origin is None:
        return False
    return origin in form.allowed_origins or origin == request.host_url.rstrip("/")


def client_ip() -> str | None:
    """Return the client's address (after ProxyFix) in canonical form.

    IPv6 compressed and lower case; an IPv4-mapped IPv6 address as IPv4.
    """
    return _canonical_ip(request.remote_addr)


@functools.lru_cache(maxsize=1024)
def _canonical_ip(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        address = ipaddress.ip_address(raw.strip().strip("[]"))
    except ValueError:
        return raw[:64]  # not an address (a Unix socket's peer): kept as given
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)
