"""Signed webhooks (Standard Webhooks) and the guard against SSRF.

A webhook is POSTed to the address its host resolved to and was checked
against (`resolve_checked`), never to a second resolution, so a name that
answers a public address to the check and a private one to the connection
(DNS rebinding) gets nowhere. Host header and TLS SNI stay the name.
Redirects are not followed: the new location would escape both the check
and the receiver's expectations (a 3xx is retried like any other non-2xx).
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .errors import PermanentError, TransientError

EVENT_TYPE = "form.submission"
USER_AGENT = "Formpost-Webhooks/1"
# Cloud metadata services: refused even with WEBHOOK_ALLOW_PRIVATE, since no
# receiver lives there and a token leaking from one is a cloud account lost.
METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
REPLY_MAX = 200  # characters of a receiver's answer kept as last_error


class RefusedAddress(PermanentError):
    """The webhook's host resolves to an address it may not reach."""

    kind = "refused"


class Gone(PermanentError):
    """The receiver answered 410 Gone: disable the endpoint."""

    kind = "gone"


def refusal(address: str, allow_private: bool) -> str | None:
    """Say why a webhook may not connect to this address, or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    # 6to4 and Teredo addresses carry an IPv4 address that routes may reach.
    embedded = (
        getattr(ip, "sixtofour", None)
        or (getattr(ip, "teredo", None) or (None, None))[1]
    )
    if embedded is not None:
        inner = refusal(str(embedded), allow_private)
        if inner is not None:
            return f"{inner} inside an IPv6 address"
    if ip in METADATA:
        return "a cloud metadata address"
    if allow_private:
        return None
    checks = (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    )
    for attribute, why in checks:
        if getattr(ip, attribute):
            return why
    if not ip.is_global:
        # Shared (100.64/10), documentation and other special ranges.
        return "not a public address"
    return None


def resolve_checked(host: str, port: int, allow_private: bool) -> list[str]:
    """Resolve `host` and return its addresses, all of them allowed.

    Raise RefusedAddress if any address is refused (a name that mixes public
    and private answers is refused whole), TransientError if it does not
    resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransientError(f"could not resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        why = refusal(address, allow_private)
        if why is not None:
            raise RefusedAddress(
                f"{host} resolves to {address}, {why} "
                "(WEBHOOK_ALLOW_PRIVATE=true allows private receivers)"
            )
    return addresses


@dataclass(frozen=True)
class Request:
    """One webhook call: what is sent, byte for byte, and its headers."""

    url: str
    body: bytes
    headers: dict[str, str]


def build(
    url: str,
    secret: str,
    webhook_id: str,
    now: float,
    data: dict[str, Any],
) -> Request:
    """Sign the JSON body for `url` per Standard Webhooks.

    The id stays the same on every retry (receivers dedupe on it); the
    timestamp is the attempt's.
    """
    when = datetime.fromtimestamp(int(now), UTC)
    payload = {"type": EVENT_TYPE, "timestamp": when.isoformat(), "data": data}
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    # Imported here: only the worker signs, and only for forms with webhooks.
    from standardwebhooks.webhooks import Webhook as Signer

    signature = Signer(secret).sign(webhook_id, when, body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signature,
    }
    return Request(url, body.encode("utf-8"), headers)


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address already checked; Host stays the name."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to a checked address; SNI and the certificate: the name."""

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


@functools.lru_cache(maxsize=1)
def default_tls() -> ssl.SSLContext:
    """Return the system's TLS context, loaded once (not per webhook call)."""
    return ssl.create_default_context()


def send(
    request: Request,
    timeout: float,
    allow_private: bool,
    context: ssl.SSLContext | None = None,
) -> str:
    """POST the webhook; return the receiver's status line when it is 2xx.

    Raise Gone for 410, RefusedAddress for a forbidden address and
    TransientError for any other status, a timeout or a connection error.
    """
    parts = urlsplit(request.url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addresses = resolve_checked(host, port, allow_private)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last: Exception | None = None
    ctx = (context or default_tls()) if https else None
    # One deadline for the whole attempt, whatever the number of addresses
    # tried: the attempt must end within its lease.
    deadline = time.monotonic() + timeout
    for address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransientError(f"no answer within {timeout:g} s")
        conn: http.client.HTTPConnection
        if ctx is not None:
            conn = _PinnedHTTPS(host, port, address, left, ctx)
        else:
            conn = _PinnedHTTP(host, port, address, left)
        # The socket timeout bounds each read; this bounds the attempt, so a
        # receiver answering a byte at a time cannot outlast the lease.
        cut = threading.Event()
        timer = threading.Timer(left, _cut, args=(conn, cut))
        timer.start()
        try:
            conn.request("POST", path, body=request.body, headers=request.headers)
            response = conn.getresponse()
            reply = response.read(REPLY_MAX).decode("utf-8", "replace")
            status = response.status
        except TimeoutError as exc:
            raise TransientError(f"no answer within {timeout:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            if cut.is_set():
                raise TransientError(f"no answer within {timeout:g} s") from exc
            last = exc  # try the next address, if any
            continue
        finally:
            timer.cancel()
            conn.close()
        if cut.is_set():
            # Cut short, an answer can look whole: it is not one.
            raise TransientError(f"no answer within {timeout:g} s")
        line = f"HTTP {status}" + (f": {reply.strip()}" if reply.strip() else "")
        if 200 <= status < 300:
            return f"HTTP {status}"
        if status == 410:
            raise Gone(line[:REPLY_MAX], code=status)
        raise TransientError(line[:REPLY_MAX], code=status)
    raise TransientError(f"could not connect to {host}: {last}")


def _cut(conn: http.client.HTTPConnection, cut: threading.Event) -> None:
    """End an attempt that ran out of time: its blocked read returns."""
    cut.set()
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed
