"""What every delivery backend offers (SMTP relay, local Maildir, DKIM wrapper).

services.py picks one from the configuration; the worker only knows these.
"""

from __future__ import annotations

from typing import Protocol

from .message import Envelope, SendResult


class Session(Protocol):
    """An open connection that can send several messages in a row."""

    def send(self, envelope: Envelope, deadline: float | None = None) -> SendResult:
        """Send one message, within `deadline` (time.monotonic()) if given."""
        ...

    def alive(self) -> bool:
        """Tell whether the session can be reused (NOOP before reuse)."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """A way to deliver messages: SMTP relay or local Maildir."""

    name: str

    def describe(self) -> str:
        """Return a one-line, secret-free description for logs and pages."""
        ...

    def open(self, deadline: float | None = None) -> Session:
        """Open a session; raise a DeliveryError subclass if that fails."""
        ...


def send_one(transport: Transport, envelope: Envelope) -> SendResult:
    """Deliver one message over a fresh session and close it."""
    session = transport.open()
    try:
        return session.send(envelope)
    finally:
        session.close()
