"""A real SMTP relay for tests: aiosmtpd on loopback, TLS, AUTH, scripted replies.

Every delivery test talks to one of these over a socket; nothing in the sender
is mocked. Replies can be scripted per SMTP stage ("MAIL", "RCPT", "DATA") to
play a relay that defers (4xx) or refuses (5xx).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd warns about its own deprecated login_data on every AUTH; not ours.
logging.getLogger("mail.log").setLevel(logging.ERROR)

USERNAME = "formpost"
PASSWORD = "correct horse battery staple"


@dataclass
class Received:
    """One message the relay accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None

    @property
    def message(self) -> EmailMessage:
        """Parse as a local mail store would: wire CRLF becomes LF."""
        local = self.data.replace(b"\r\n", b"\n")
        return message_from_bytes(local, policy=policy.default)  # type: ignore[return-value]


@dataclass
class PKI:
    """A private CA the client trusts, and one it does not."""

    ca: trustme.CA
    ca_file: str
    untrusted_ca: trustme.CA

    @classmethod
    def create(cls, folder: Path) -> PKI:
        ca = trustme.CA()
        ca_file = folder / "relay-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca=ca, ca_file=str(ca_file), untrusted_ca=trustme.CA())

    def server_context(self, trusted: bool = True) -> ssl.SSLContext:
        ca = self.ca if trusted else self.untrusted_ca
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        return ctx


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    script: dict[str, deque[str]] = field(
        default_factory=lambda: {"MAIL": deque(), "RCPT": deque(), "DATA": deque()}
    )
    refuse: dict[str, str] = field(default_factory=dict)
    data_delay: float = 0.0
    drop_after_data: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    sessions: list = field(default_factory=list)
    data_started: threading.Event = field(default_factory=threading.Event)

    def _scripted(self, stage: str) -> str | None:
        with self.lock:
            queue = self.script[stage]
            return queue.popleft() if queue else None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            # One SMTP protocol object per TCP connection (STARTTLS keeps it).
            if not any(s is server for s in self.sessions):
                self.sessions.append(server)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self._scripted("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        reply = self._scripted("RCPT")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_started.set()
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
            if server.transport is None or server.transport.is_closing():
                # The client is gone (killed mid-transaction): it never saw a
                # 250, so, like a real MTA, do not deliver.
                return "451 4.4.2 Connection lost"
        reply = self._scripted("DATA")
        if reply:
            return reply
        auth = session.auth_data if session.authenticated else None
        login = auth.login if isinstance(auth, LoginPassword) else None
        with self.lock:
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=envelope.original_content,
                    tls=server.transport.get_extra_info("ssl_object") is not None,
                    login=login.decode() if isinstance(login, bytes) else login,
                )
            )
        if self.drop_after_data > 0:
            # Hang up just after answering: the sender finds out on reuse.
            self.drop_after_data -= 1
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 2.0.0 Ok: queued"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USERNAME.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """An aiosmtpd relay on 127.0.0.1 in one of the three security modes.

    mode: "starttls" (STARTTLS offered and required before MAIL/AUTH),
    "tls" (implicit TLS), "none" (plain SMTP; STARTTLS not offered).
    auth: require AUTH with USERNAME and PASSWORD. trusted: whether the
    certificate chains to the CA the client trusts.
    """

    def __init__(
        self,
        pki: PKI,
        mode: str = "starttls",
        auth: bool = True,
        trusted: bool = True,
        port: int | None = None,
        data_size_limit: int | None = None,
    ) -> None:
        self.mode = mode
        self.auth = auth
        self.pki = pki
        self.handler = _Handler()
        self.port = port or free_port()
        kwargs: dict = {
            "authenticator": _authenticator,
            "auth_required": auth,
            # Only STARTTLS needs aiosmtpd's own check: implicit TLS is encrypted
            # from the first byte (aiosmtpd would not offer AUTH there at all),
            # and plain mode exists to test loopback-only AUTH without TLS.
            "auth_require_tls": mode == "starttls",
            "decode_data": False,
        }
        if data_size_limit is not None:
            # Advertised in EHLO as SIZE; a larger DATA gets 552.
            kwargs["data_size_limit"] = data_size_limit
        context = pki.server_context(trusted)
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif mode == "tls":
            kwargs.update(ssl_context=context)
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, **kwargs
        )

    def start(self) -> Relay:
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop listening (idempotent): later connections are refused."""
        if self.controller.server is not None:
            self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def connections(self) -> int:
        """How many SMTP sessions (connections) have said EHLO."""
        with self.handler.lock:
            return len(self.handler.sessions)

    def reply_next(self, stage: str, reply: str, times: int = 1) -> None:
        """Answer the next `times` commands of `stage` with `reply`."""
        with self.handler.lock:
            self.handler.script[stage].extend([reply] * times)

    def refuse_recipient(self, address: str, reply: str) -> None:
        """Answer RCPT TO for `address` with `reply` every time."""
        self.handler.refuse[address] = reply

    def env(self, **overrides: str) -> dict[str, str]:
        """Settings for create_app() that point Formpost at this relay."""
        env = {
            "SECRET_KEY": "test-secret-key-0123456789",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.port),
            "SMTP_SECURITY": self.mode,
            "SMTP_CA_FILE": self.pki.ca_file,
            "SMTP_TIMEOUT": "5",
            "MAIL_FROM": "Contact form <forms@formpost.test>",
            "MAIL_RECIPIENTS": "sales=sales@example.com,support=help@example.org",
            # Off unless a test is about them: suites post fast and often.
            "RATE_LIMIT": "off",
            "MIN_FILL_SECONDS": "0",
            "DEDUPE_WINDOW": "0",
        }
        if self.auth:
            env.update(SMTP_USERNAME=USERNAME, SMTP_PASSWORD=PASSWORD)
        env.update(overrides)
        return env
