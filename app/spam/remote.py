"""One POST to a verifier (a captcha's siteverify, rspamd) with a deadline.

The captcha and rspamd layers both ask a service over HTTP and must tell
"the service said no" from "the service could not be asked". `post_json`
returns the decoded JSON reply, or raises `Unavailable` with a short,
content-free description (timeout, connection refused, HTTP 503, bad JSON)
that becomes a `<layer>_unavailable` reason.

The standard library's urllib is enough for one form-encoded or raw POST;
no HTTP client is added for it. Proxies from the environment (HTTPS_PROXY,
NO_PROXY) are honoured as urllib does.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

# A verifier's reply is a small JSON object; more than this is not one.
MAX_REPLY = 1 << 20


class Unavailable(Exception):
    """The service could not give an answer (not: it answered no)."""


def post_json(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> dict[str, object]:
    """POST `body` to `url` and return the JSON object it answers.

    `timeout` bounds the connection and every read; the whole exchange is
    also cut off once `timeout` has passed after the first byte, so a
    service that trickles its answer cannot hold a visitor's post.
    """
    request = urllib.request.Request(url, data=body, headers=dict(headers))
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            raw = _read(reply, started + 2 * timeout)
    except urllib.error.HTTPError as exc:
        raise Unavailable(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise Unavailable(_describe(exc.reason, timeout)) from None
    except http.client.HTTPException:
        raise Unavailable("bad HTTP reply") from None
    except OSError as exc:
        raise Unavailable(_describe(exc, timeout)) from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Unavailable("reply is not JSON") from None
    if not isinstance(data, dict):
        raise Unavailable("reply is not a JSON object")
    return data


def _read(reply, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    # read1 returns what has arrived, so the deadline is checked between
    # arrivals even when the service trickles its answer.
    while chunk := reply.read1(65536):
        size += len(chunk)
        if size > MAX_REPLY:
            raise Unavailable("reply too large")
        if time.monotonic() > deadline:
            raise Unavailable("reply too slow")
        chunks.append(chunk)
    if reply.length:
        # The connection closed before the promised Content-Length arrived.
        raise Unavailable("reply cut off")
    return b"".join(chunks)


def _describe(reason: object, timeout: float) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionError):
        return "connection lost"
    if isinstance(reason, socket.gaierror):
        return "host not found"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return "unreachable"
