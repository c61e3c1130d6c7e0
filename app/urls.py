"""Origins and host names in canonical form. Pure; raises ValueError.

Used on every request (the posting page's Origin, a `_next` URL's host) and
by config.py, which turns a ValueError into a ConfigError naming the
variable. Imports nothing of ours.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str:
    """Return `scheme://host[:port]` in canonical form for an origin.

    Lower case, IDNA, no trailing dot, no default port, IPv6 in brackets.
    Raise ValueError for anything that is not an http(s) origin.
    """
    parts = urlsplit(value.strip())
    if (
        parts.scheme.lower() not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ValueError(
            f"{value!r} is not an origin like https://www.example.com "
            "(scheme and host, optional port, no path)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a bad port") from None
    scheme = parts.scheme.lower()
    host = normalize_host(parts.hostname)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}"


def normalize_host(value: str) -> str:
    """Return a host name (lower case, IDNA, no trailing dot) or an IP address.

    Raise ValueError for anything else, saying so when a port was given.
    """
    host = value.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if re.fullmatch(r".+:[0-9]*", host):
        raise ValueError(
            f"{value!r}: a port is not part of a host entry; "
            "write the host name alone (any port on it is allowed)"
        )
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{value!r} is not a host name") from None
    if not all(_LABEL.fullmatch(label) for label in ascii_host.split(".")):
        raise ValueError(f"{value!r} is not a host name")
    return ascii_host


def is_loopback(host: str) -> bool:
    """Tell whether `host` is a loopback name or address (no DNS lookup)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
