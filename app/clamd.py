"""Scan posted files with clamd (ClamAV's daemon) before they are stored.

A small client of clamd's INSTREAM command rather than the `clamd` package:
its last release (1.0.2) is from 2014, unmaintained, and imports
pkg_resources, gone from current setuptools; INSTREAM is a few lines
(`zINSTREAM\\0`, length-prefixed chunks, a zero length, one reply).

Each file is streamed from its temporary file in chunks. A hit is a Reason
(layer `clamd`, rule `virus`, the signature as its value) that quarantines
the post; a clamd that cannot be reached gives `clamd_unavailable`, which
quarantines or lets the post through as the form's spam `fail` setting says.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .spam import Reason

LAYER = "clamd"
CHUNK = 64 * 1024
MAX_REPLY = 4096


class ScanUnavailable(Exception):
    """clamd could not be reached or did not answer as expected."""


@dataclass(frozen=True)
class ClamdSettings:
    """Where clamd listens: a unix socket, or a host and port."""

    socket_path: str | None = None
    host: str | None = None
    port: int = 3310
    timeout: float = 30.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ClamdSettings | None:
        """Return the settings; None when neither CLAMD_SOCKET nor CLAMD_HOST is set."""
        if not config.get("CLAMD_SOCKET") and not config.get("CLAMD_HOST"):
            return None
        return cls(
            socket_path=config.get("CLAMD_SOCKET"),
            host=config.get("CLAMD_HOST"),
            port=config.get("CLAMD_PORT", 3310),
            timeout=config.get("CLAMD_TIMEOUT", 30.0),
        )

    def describe(self) -> str:
        return self.socket_path or f"{self.host}:{self.port}"

    def connect(self) -> socket.socket:
        if self.socket_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
            return sock
        return socket.create_connection(
            (self.host or "127.0.0.1", self.port), timeout=self.timeout
        )


def instream(settings: ClamdSettings, chunks: Iterable[bytes]) -> str | None:
    """Scan one stream; return the signature found, or None when clean.

    Raise ScanUnavailable when clamd cannot be reached, times out, or
    answers with an error (such as a stream over its StreamMaxLength).
    """
    try:
        with settings.connect() as sock:
            sock.sendall(b"zINSTREAM\0")
            for chunk in chunks:
                for start in range(0, len(chunk), CHUNK):
                    part = chunk[start : start + CHUNK]
                    sock.sendall(struct.pack("!L", len(part)) + part)
            sock.sendall(struct.pack("!L", 0))
            reply = b""
            while not reply.endswith(b"\0") and len(reply) < MAX_REPLY:
                got = sock.recv(MAX_REPLY)
                if not got:
                    break
                reply += got
    except OSError as exc:
        raise ScanUnavailable(f"clamd at {settings.describe()}: {exc}") from exc
    text = reply.rstrip(b"\0").decode("utf-8", "replace").strip()
    # "stream: OK", "stream: Eicar-Signature FOUND", "... ERROR"
    _, _, result = text.partition(": ")
    if result == "OK":
        return None
    if result.endswith(" FOUND"):
        return result[: -len(" FOUND")].strip() or "unknown"
    raise ScanUnavailable(f"clamd at {settings.describe()} answered {text[:200]!r}")


def scan_files(
    settings: ClamdSettings, files: Iterable[Any], fail: str = "open"
) -> list[Reason]:
    """Scan each file (an Upload: filename, chunks()); return the reasons found."""
    reasons = []
    for upload in files:
        try:
            found = instream(settings, upload.chunks(CHUNK))
        except ScanUnavailable as exc:
            closed = fail == "closed"
            reasons.append(
                Reason(
                    layer=LAYER,
                    rule="clamd_unavailable",
                    value=str(exc)[:200],
                    threshold="fail closed: quarantine"
                    if closed
                    else "fail open: let through",
                    action="quarantine" if closed else "score",
                )
            )
            # One outage answer is enough: the other files would wait as long.
            break
        if found is not None:
            reasons.append(
                Reason(
                    layer=LAYER,
                    rule="virus",
                    value=found[:200],
                    threshold=f"in {upload.filename}",
                    action="quarantine",
                )
            )
    return reasons
