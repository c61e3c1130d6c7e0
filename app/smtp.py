"""Deliver over SMTP, and map every smtplib/ssl/socket failure to one hierarchy."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from .message import PLAIN_ADDRESS, Envelope, SendResult
from .urls import is_loopback


class _DeadlineReader:
    """smtplib's reply file, reading each chunk within what is left of a deadline.

    smtplib reads replies with `file.readline()` on `sock.makefile()`, whose
    every read waits the socket timeout afresh: a relay that drips one line
    (or one byte) at a time, a `220-` banner or `250-` continuation lines,
    could hold the attempt for ever. Here the timeout is re-armed from the
    deadline before every read, so the whole reply ends by the deadline.
    """

    def __init__(self, sock: socket.socket, arm: Callable[[], None]) -> None:
        self._sock = sock
        self._arm = arm
        self._buffer = bytearray()

    def readline(self, limit: int = -1) -> bytes:
        """Return one line (up to `limit` bytes), or what came before EOF."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                size = end + 1
                break
            if 0 <= limit <= len(self._buffer):
                size = limit
                break
            self._arm()
            chunk = self._sock.recv(8192)
            if not chunk:
                size = len(self._buffer)
                break
            self._buffer += chunk
        if limit >= 0:
            size = min(size, limit)
        line = bytes(self._buffer[:size])
        del self._buffer[:size]
        return line

    def close(self) -> None:
        """Forget buffered bytes (smtplib closes the socket itself)."""
        self._buffer.clear()


class _DeadlineMixin:
    """Bound a whole SMTP exchange, not just each socket operation.

    smtplib's timeout applies per read or write, so a relay that answers
    slowly but steadily could hold a worker far beyond its lease. Every read
    and write, from the connection and banner on, waits at most what is left
    of `deadline` (a time.monotonic() value), and a timeout is reported as
    one (TimeoutError), not as a dropped connection: the relay may have
    accepted the message, so it must not be sent again on a new connection.
    """

    deadline: float | None = None
    timeout: float
    sock: socket.socket | None
    file: Any

    def __init__(self, *args: Any, deadline: float | None = None, **kwargs: Any):
        # Set before smtplib's constructor connects and reads the banner.
        self.deadline = deadline
        super().__init__(*args, **kwargs)

    def _budget(self) -> float:
        """Seconds the next socket operation may wait."""
        if self.deadline is None:
            return self.timeout
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("SMTP attempt deadline exceeded")
        return min(self.timeout, remaining)

    def _arm(self) -> None:
        if self.deadline is not None and self.sock is not None:
            self.sock.settimeout(self._budget())

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(host, port, self._budget())  # type: ignore[misc]

    def send(self, s: bytes | str) -> None:
        self._arm()
        try:
            super().send(s)  # type: ignore[misc]
        except smtplib.SMTPServerDisconnected as exc:
            _raise_timeout(exc)
            raise

    def getreply(self) -> tuple[int, bytes]:
        self._arm()
        if self.file is None and self.sock is not None:
            self.file = _DeadlineReader(self.sock, self._arm)
        try:
            return super().getreply()  # type: ignore[misc]
        except smtplib.SMTPServerDisconnected as exc:
            _raise_timeout(exc)
            raise


def _raise_timeout(exc: smtplib.SMTPServerDisconnected) -> None:
    """Undo smtplib's "Connection unexpectedly closed" for what was a timeout."""
    if isinstance(exc.__context__, TimeoutError):
        raise TimeoutError(str(exc.__context__) or "timed out") from exc


class _PlainAddressMixin:
    """Say MAIL FROM and RCPT TO without re-parsing plain addresses.

    smtplib runs every address through email.utils.parseaddr, which costs
    more than the rest of composing the command; the envelope's addresses
    come from checked configuration and are almost always plain
    (compose.PLAIN_ADDRESS: no display name, comment, quoting, route or
    space for parseaddr to rewrite). Anything else, and SMTPUTF8, still goes
    through smtplib.
    """

    does_esmtp: bool

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not PLAIN_ADDRESS.fullmatch(sender) or any(
            option.lower() == "smtputf8" for option in options
        ):
            return super().mail(sender, options)  # type: ignore[misc]
        optionlist = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("mail", f"FROM:<{sender}>{optionlist}")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined]

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not PLAIN_ADDRESS.fullmatch(recip):
            return super().rcpt(recip, options)  # type: ignore[misc]
        optionlist = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("rcpt", f"TO:<{recip}>{optionlist}")  # type: ignore[attr-defined]
        return self.getreply()  # type: ignore[attr-defined]


class _SMTP(_PlainAddressMixin, _DeadlineMixin, smtplib.SMTP):
    pass


class _SMTP_SSL(_PlainAddressMixin, _DeadlineMixin, smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib would give the TLS handshake the connect's whole timeout
        # again; here it gets what is left of the deadline after connecting.
        sock = smtplib.SMTP._get_socket(self, host, port, self._budget())
        sock.settimeout(self._budget())
        return self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]


# Seconds to wait for the answer to QUIT: a goodbye is not worth a long wait.
QUIT_WAIT = 5.0

# 552 on RCPT means "too many recipients" (RFC 5321 4.5.3.1.10): try again later.
_TRANSIENT_5XX_ON_RCPT = {552}


@dataclass(frozen=True)
class SMTPSettings:
    """Where and how to reach the relay. `password` never appears in repr()."""

    host: str
    port: int
    security: str = "starttls"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    ca_file: str | None = None

    def __repr__(self) -> str:
        return (
            f"SMTPSettings(host={self.host!r}, port={self.port}, "
            f"security={self.security!r}, username={self.username!r}, "
            f"password={'***' if self.password else None}, timeout={self.timeout})"
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SMTPSettings:
        """Take the SMTP_* values out of a parsed Flask config."""
        return cls(
            host=config["SMTP_HOST"],
            port=config["SMTP_PORT"],
            security=config["SMTP_SECURITY"],
            username=config.get("SMTP_USERNAME"),
            password=config.get("SMTP_PASSWORD"),
            timeout=config["SMTP_TIMEOUT"],
            ca_file=config.get("SMTP_CA_FILE"),
        )

    def tls_context(self) -> ssl.SSLContext:
        """Build a verifying TLS context (system CAs or SSL_CERT_FILE, or ca_file)."""
        # create_default_context always verifies the chain and the host name;
        # without cafile it honours SSL_CERT_FILE through OpenSSL's defaults.
        return ssl.create_default_context(cafile=self.ca_file)


class SMTPTransport:
    """Deliver through an SMTP relay with STARTTLS, implicit TLS or plain SMTP."""

    name = "smtp"

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self._context = settings.tls_context() if settings.security != "none" else None

    def describe(self) -> str:
        """Return host, port and security mode, never credentials."""
        s = self.settings
        auth = " with AUTH" if s.username else ""
        return f"SMTP relay {s.host}:{s.port} ({s.security}{auth})"

    def open(self, deadline: float | None = None) -> SMTPSession:
        """Connect, secure and authenticate; raise a DeliveryError on failure.

        `deadline` (time.monotonic()) bounds the whole exchange.
        """
        try:
            return SMTPSession(self._connect(deadline))
        except DeliveryError:
            raise
        except Exception as exc:  # noqa: BLE001 - classify() re-raises the unknown
            raise classify(exc, stage="connect") from exc

    def _connect(self, deadline: float | None) -> smtplib.SMTP:
        s = self.settings
        # The constructor connects and reads the banner, within `deadline`.
        smtp: _SMTP | _SMTP_SSL
        if s.security == "tls":
            smtp = _SMTP_SSL(
                s.host,
                s.port,
                timeout=s.timeout,
                context=self._context,
                deadline=deadline,
            )
        else:
            smtp = _SMTP(s.host, s.port, timeout=s.timeout, deadline=deadline)
        try:
            smtp.ehlo()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConfigurationError(
                        f"{s.host}:{s.port} does not offer STARTTLS; refusing to "
                        "continue in clear text (check SMTP_PORT and SMTP_SECURITY)"
                    )
                smtp.starttls(context=self._context)
                smtp.ehlo()
            if s.username:
                if s.security == "none" and not is_loopback(s.host):
                    raise ConfigurationError(
                        "refusing to send credentials over an unencrypted connection"
                    )
                try:
                    smtp.login(s.username, s.password or "")
                except smtplib.SMTPNotSupportedError as exc:
                    raise ConfigurationError(
                        "relay does not offer AUTH; unset SMTP_USERNAME or use the "
                        "submission port"
                    ) from exc
                except smtplib.SMTPAuthenticationError as exc:
                    raise classify(exc, stage="auth") from exc
                except smtplib.SMTPException as exc:
                    if isinstance(exc, smtplib.SMTPResponseException):
                        raise
                    # "No suitable authentication method found."
                    raise ConfigurationError(f"AUTH failed: {exc}") from exc
        except BaseException:
            _abandon(smtp)
            raise
        return smtp


class SMTPSession:
    """One authenticated connection; send several messages over it."""

    def __init__(self, smtp: _SMTP | _SMTP_SSL) -> None:
        self._smtp = smtp

    def send(self, envelope: Envelope, deadline: float | None = None) -> SendResult:
        """Send one message; raise a DeliveryError subclass if it was not accepted.

        `deadline` (time.monotonic()) bounds the whole exchange.
        """
        self._smtp.deadline = deadline
        try:
            refused = self._smtp.sendmail(
                envelope.mail_from, list(envelope.recipients), envelope.data
            )
        except Exception as exc:  # noqa: BLE001 - classify() re-raises the unknown
            if isinstance(exc, TimeoutError):
                # The dialogue is out of step (a late reply may still come):
                # the next message needs a new connection.
                _abandon(self._smtp)
            raise classify(exc, stage="send") from exc
        return SendResult(
            refused={
                addr: (code, _text(reply)) for addr, (code, reply) in refused.items()
            }
        )

    def size_limit(self) -> int:
        """The largest message the relay takes (EHLO SIZE), 0 when it says none."""
        value = self._smtp.esmtp_features.get("size", "")
        return int(value) if value.strip().isdigit() else 0

    def alive(self) -> bool:
        """Tell whether the connection still answers NOOP (within SMTP_TIMEOUT)."""
        self._smtp.deadline = time.monotonic() + self._smtp.timeout
        try:
            return self._smtp.noop()[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    def close(self) -> None:
        """Say QUIT, or just drop the socket if the relay is gone."""
        self._smtp.deadline = time.monotonic() + min(self._smtp.timeout, QUIT_WAIT)
        try:
            self._smtp.quit()
        except (smtplib.SMTPException, OSError):
            _abandon(self._smtp)


def classify(exc: BaseException, stage: str) -> DeliveryError:
    """Map an smtplib, ssl or socket exception to the delivery hierarchy.

    Unknown exception types are re-raised: a bug must not pass for a relay
    problem.
    """
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConfigurationError(f"TLS certificate not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        hint = ""
        if "WRONG_VERSION_NUMBER" in str(exc).upper():
            hint = " (the port may not speak implicit TLS: check SMTP_SECURITY)"
        return ConfigurationError(f"TLS handshake failed: {exc.reason}{hint}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _recipients_refused(exc.recipients)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            return TransientError(f"AUTH: {reply}", exc.smtp_code)
        return ConfigurationError(f"AUTH refused: {reply}", exc.smtp_code)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        reply = _reply(exc.smtp_code, exc.smtp_error)
        if 400 <= exc.smtp_code < 500:
            return TransientError(f"MAIL FROM: {reply}", exc.smtp_code)
        # The sender is the same for every message: this is ours to fix.
        return ConfigurationError(
            f"MAIL FROM <{exc.sender}> refused: {reply}", exc.smtp_code
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = _reply(exc.smtp_code, exc.smtp_error)
        where = "DATA" if isinstance(exc, smtplib.SMTPDataError) else stage
        if 500 <= exc.smtp_code < 600 and where in ("DATA", "send"):
            return PermanentError(f"{where}: {reply}", exc.smtp_code)
        if 500 <= exc.smtp_code < 600:
            # A 5xx banner or EHLO reply: the relay will not talk to us at all.
            return ConfigurationError(f"{where}: {reply}", exc.smtp_code)
        return TransientError(f"{where}: {reply}", exc.smtp_code)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientError(
            f"connection closed by relay: {exc}", connection_lost=True
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ConfigurationError(f"relay does not support a required feature: {exc}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransientError(f"timed out during {stage}")
    if isinstance(exc, socket.gaierror):
        return TransientError(f"cannot resolve relay host: {exc.strerror}")
    if isinstance(exc, OSError):
        return TransientError(f"network error during {stage}: {exc.strerror or exc}")
    if isinstance(exc, smtplib.SMTPException):
        return TransientError(f"SMTP error during {stage}: {exc}")
    raise exc


def _recipients_refused(
    recipients: Mapping[str, tuple[int, bytes | str]],
) -> DeliveryError:
    replies = "; ".join(
        f"<{addr}> {_reply(code, msg)}" for addr, (code, msg) in recipients.items()
    )
    codes = [code for code, _ in recipients.values()]
    if all(500 <= c < 600 and c not in _TRANSIENT_5XX_ON_RCPT for c in codes):
        return PermanentError(f"RCPT TO refused: {replies}", codes[0])
    return TransientError(f"RCPT TO deferred: {replies}", codes[0])


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply


def _reply(code: int, message: bytes | str) -> str:
    return f"{code} {_text(message)}".strip()


def _abandon(smtp: smtplib.SMTP) -> None:
    try:
        smtp.close()
    except OSError:
        pass
