"""What every delivery backend offers, and how the app picks one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Envelope:
    """A composed message ready to hand over: SMTP envelope plus exact bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


@dataclass(frozen=True)
class SendResult:
    """What the relay accepted: `refused` maps addresses to (code, reply)."""

    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)


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


def make_transport(config: Mapping[str, Any], instance_path: str) -> Transport:
    """Build the SMTP transport, or the Maildir one when no SMTP_HOST is set.

    With DKIM configured, every message is signed on its way out.
    """
    transport: Transport
    if config.get("SMTP_HOST"):
        from .smtp import SMTPSettings, SMTPTransport

        transport = SMTPTransport(SMTPSettings.from_config(config))
    else:
        from .maildir import MaildirTransport, default_maildir

        path = config.get("MAILDIR_PATH") or default_maildir(instance_path)
        transport = MaildirTransport(path)
    if config.get("DKIM_DOMAIN"):
        from .signing import Signer, SigningTransport

        signer = Signer(
            config["DKIM_DOMAIN"], config["DKIM_SELECTOR"], config["DKIM_PRIVATE_KEY"]
        )
        transport = SigningTransport(transport, signer)
    return transport
