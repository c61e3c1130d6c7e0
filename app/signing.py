"""DKIM: sign each message, at send time, over the exact bytes the relay gets.

Optional: on when DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY_FILE are
set. The key is read from a file (a Docker or systemd secret), never from an
environment literal. Canonicalisation relaxed/simple: headers survive the
usual re-folding, the body must arrive as sent (our bodies are 7-bit
quoted-printable, so no relay needs to touch them).
"""

from __future__ import annotations

import dataclasses

from .errors import ConfigurationError
from .message import Envelope, SendResult
from .transport import Session, Transport

SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Cc",
    b"Reply-To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
)
# A small message the key must sign at start-up, before anything is accepted.
SAMPLE = (
    b"From: Formpost <formpost@example.com>\r\nTo: <check@example.com>\r\n"
    b"Subject: DKIM key check\r\nMessage-ID: <check@example.com>\r\n\r\nok\r\n"
)


class SigningError(ValueError):
    """The key cannot sign: not an RSA private key in PEM that dkimpy reads."""


class Signer:
    """Adds a DKIM-Signature header to a message's bytes."""

    def __init__(self, domain: str, selector: str, private_key: bytes) -> None:
        self.domain = domain.encode("ascii")
        self.selector = selector.encode("ascii")
        self.private_key = private_key

    def sign(self, data: bytes) -> bytes:
        """Return `data` with a DKIM-Signature header in front.

        Raise SigningError when the key cannot sign (a malformed key file).
        """
        # Imported here: dkimpy (and the DNS library it loads) adds about
        # 2.5 MB to every process, and most installations sign nothing.
        import dkim

        try:
            signature = dkim.sign(
                data,
                self.selector,
                self.domain,
                self.private_key,
                canonicalize=(b"relaxed", b"simple"),
                include_headers=list(SIGNED_HEADERS),
                linesep=b"\r\n",
            )
        except (dkim.DKIMException, ValueError) as exc:
            # dkimpy's messages run over several lines; one is enough here.
            detail = " ".join(str(exc).split())
            raise SigningError(f"the DKIM key cannot sign: {detail}") from exc
        return signature + data


def check_key(domain: str, selector: str, private_key: bytes) -> None:
    """Sign a sample message with the key; raise SigningError if it cannot."""
    Signer(domain, selector, private_key).sign(SAMPLE)


class SigningTransport:
    """Wrap a transport so that every message is signed just before it goes."""

    def __init__(self, inner: Transport, signer: Signer) -> None:
        self.inner = inner
        self.signer = signer
        self.name = inner.name

    def describe(self) -> str:
        """Describe the inner transport, and the signing domain."""
        return (
            f"{self.inner.describe()}, DKIM {self.signer.selector.decode()}"
            f"._domainkey.{self.signer.domain.decode()}"
        )

    def open(self, deadline: float | None = None) -> Session:
        """Open the inner session and sign on the way through."""
        return _SigningSession(self.inner.open(deadline=deadline), self.signer)


class _SigningSession:
    def __init__(self, inner: Session, signer: Signer) -> None:
        self.inner = inner
        self.signer = signer

    def send(self, envelope: Envelope, deadline: float | None = None) -> SendResult:
        try:
            data = self.signer.sign(envelope.data)
        except SigningError as exc:
            # Our key, not the message: keep it pending and alert the operator.
            raise ConfigurationError(f"{exc} (check DKIM_PRIVATE_KEY_FILE)") from exc
        signed = dataclasses.replace(envelope, data=data)
        return self.inner.send(signed, deadline=deadline)

    def size_limit(self) -> int:
        """The inner session's size limit (SMTP's EHLO SIZE), 0 for none."""
        size_limit = getattr(self.inner, "size_limit", None)
        return size_limit() if callable(size_limit) else 0

    def alive(self) -> bool:
        return self.inner.alive()

    def close(self) -> None:
        self.inner.close()
