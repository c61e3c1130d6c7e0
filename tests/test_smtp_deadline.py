"""A relay that drips its replies cannot hold an attempt past its deadline.

DripRelay is a small real SMTP server on loopback that answers one stage
(the banner, EHLO, or the reply after DATA) with continuation lines (`220-`,
`250-`) a few seconds apart, or one byte at a time: every single read is
answered in time, so only a deadline on the whole attempt stops it. The
first tests drive the SMTP transport in-process; the slow ones run real
`flask --app wsgi worker` processes against it.
"""

from __future__ import annotations

import select
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from pathlib import Path

import pytest

from app.clock import SystemClock
from app.compose import Submission, compose, new_message_id
from app.errors import TransientError
from app.ledger import Ledger, make_engine, migrate
from app.message import Envelope
from app.smtp import SMTPSettings, SMTPTransport
from config import parse_mail_from

from .processes import flask_cmd, server_env, start, stop, wait_until

# How far past its deadline an attempt may end: scheduling on a busy machine.
MARGIN = 1.5


@dataclass
class Connection:
    """One TCP connection the relay accepted, as the relay saw it."""

    opened: float  # time.monotonic()
    closed: float | None = None
    data: list[tuple[float, bytes]] = field(default_factory=list)


class DripRelay:
    """An SMTP server on 127.0.0.1 that drips one stage's reply.

    stage: "banner", "ehlo", "data" (`250-` lines after the message's final
    dot) or "data-bytes" (the final reply one byte at a time). Each drip
    comes `every` seconds, `count` times, then the real final line. With
    `tls`, the connection is implicit TLS with that server context.
    """

    def __init__(
        self,
        stage: str | None,
        every: float,
        count: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.stage = stage
        self.every = every
        self.count = count
        self.tls = tls
        self.connections: list[Connection] = []
        self.lock = threading.Lock()
        self.data_event = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def start(self) -> DripRelay:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def messages(self) -> list[bytes]:
        """Every message whose final dot the relay read, in order."""
        with self.lock:
            return [body for c in self.connections for _, body in c.data]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            record = Connection(opened=time.monotonic())
            with self.lock:
                self.connections.append(record)
            thread = threading.Thread(
                target=self._serve, args=(conn, record), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, record: Connection) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(None)
            self._dialogue(conn, record)
        except OSError:
            pass  # the client hung up: that is what these tests provoke
        finally:
            if record.closed is None:
                record.closed = time.monotonic()
            conn.close()

    def _gone(self, conn: socket.socket, wait: float) -> bool:
        """Wait up to `wait` s; tell whether the client closed meanwhile."""
        if self._stop.wait(0) or not select.select([conn], [], [], wait)[0]:
            return self._stop.is_set()
        try:
            return not conn.recv(4096)
        except OSError:
            return True

    def _drip(self, conn: socket.socket, code: str, final: bytes) -> bool:
        """Say `count` continuation lines, then `final`; False if the client left."""
        for n in range(self.count):
            if self._gone(conn, self.every):
                return False
            conn.sendall(f"{code}-still working {n}\r\n".encode())
        conn.sendall(final)
        return True

    def _drip_bytes(self, conn: socket.socket, final: bytes) -> bool:
        for n in range(len(final)):
            if self._gone(conn, self.every):
                return False
            conn.sendall(final[n : n + 1])
        return True

    def _dialogue(self, conn: socket.socket, record: Connection) -> None:
        reader = conn.makefile("rb")
        if self.stage == "banner":
            if not self._drip(conn, "220", b"220 drip.test ready\r\n"):
                return
        else:
            conn.sendall(b"220 drip.test ready\r\n")
        while line := reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                final = b"250-drip.test\r\n250 8BITMIME\r\n"
                if self.stage == "ehlo":
                    if not self._drip(conn, "250", final):
                        return
                else:
                    conn.sendall(final)
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                body = b""
                while (chunk := reader.readline()) not in (b".\r\n", b""):
                    body += chunk
                with self.lock:
                    record.data.append((time.monotonic(), body))
                self.data_event.set()
                final = b"250 2.0.0 queued\r\n"
                if self.stage == "data":
                    if not self._drip(conn, "250", final):
                        return
                elif self.stage == "data-bytes":
                    if not self._drip_bytes(conn, final):
                        return
                else:
                    conn.sendall(final)
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                conn.sendall(b"250 OK\r\n")


@pytest.fixture
def make_drip():
    relays: list[DripRelay] = []

    def factory(*args, **kwargs) -> DripRelay:
        relay = DripRelay(*args, **kwargs).start()
        relays.append(relay)
        return relay

    yield factory
    for relay in relays:
        relay.close()


def envelope(n: int = 1) -> Envelope:
    message_id = f"<{n}@formpost.test>"
    data = (
        "From: forms@formpost.test\r\nTo: sales@example.com\r\n"
        f"Subject: drip\r\nMessage-ID: {message_id}\r\n\r\nbody\r\n"
    ).encode()
    return Envelope("forms@formpost.test", ("sales@example.com",), data, message_id)


def transport(port: int, security: str = "none", ca_file: str | None = None):
    settings = SMTPSettings(
        host="127.0.0.1", port=port, security=security, timeout=5.0, ca_file=ca_file
    )
    return SMTPTransport(settings)


def attempt(smtp: SMTPTransport, seconds: float) -> float:
    """Open and send once within `seconds`, as a worker does; return the time taken.

    Raises what the attempt raised, with the time taken in `.elapsed`.
    """
    started = time.monotonic()
    deadline = started + seconds
    try:
        session = smtp.open(deadline=deadline)
        try:
            session.send(envelope(), deadline=deadline)
        finally:
            session.close()
    except TransientError as exc:
        exc.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
        raise
    return time.monotonic() - started


@pytest.mark.parametrize("stage", ["banner", "ehlo", "data", "data-bytes"])
def test_a_dripping_relay_cannot_stretch_the_attempt(make_drip, stage):
    # Every drip comes well inside SMTP_TIMEOUT (5 s); only the deadline stops it.
    relay = make_drip(stage, every=0.4, count=50)
    with pytest.raises(TransientError, match="timed out") as caught:
        attempt(transport(relay.port), seconds=2.0)
    assert caught.value.elapsed < 2.0 + MARGIN  # not the 20 s the relay drips
    # A timeout is not a lost connection: the worker must not resend at once
    # over a new one (the relay may have taken the message).
    assert not caught.value.connection_lost
    (conn,) = relay.connections
    wait_until(lambda: conn.closed is not None, MARGIN, "the relay to see the close")
    assert conn.closed - conn.opened < 2.0 + MARGIN  # type: ignore[operator]
    assert len(relay.messages) == (1 if stage.startswith("data") else 0)


def test_a_dripped_banner_over_implicit_tls_is_cut_at_the_deadline(make_drip, pki):
    relay = make_drip("banner", every=0.4, count=50, tls=pki.server_context())
    smtp = transport(relay.port, security="tls", ca_file=pki.ca_file)
    with pytest.raises(TransientError, match="timed out during connect") as caught:
        attempt(smtp, seconds=2.0)
    assert caught.value.elapsed < 2.0 + MARGIN


@pytest.mark.parametrize("stage", ["banner", "ehlo", "data"])
def test_slow_multiline_replies_within_the_deadline_still_deliver(make_drip, stage):
    relay = make_drip(stage, every=0.1, count=5)
    elapsed = attempt(transport(relay.port), seconds=5.0)
    assert elapsed >= 0.4  # the drip (5 x 0.1 s) was really waited for
    assert len(relay.messages) == 1


def test_after_a_timed_out_reply_the_session_is_not_reused(make_drip):
    """A late 250 must not be read as the answer to the next message's MAIL."""
    relay = make_drip("data", every=0.4, count=50)
    smtp = transport(relay.port)
    deadline = time.monotonic() + 1.5
    session = smtp.open(deadline=deadline)
    with pytest.raises(TransientError, match="timed out during send"):
        session.send(envelope(1), deadline=deadline)
    with pytest.raises(TransientError) as again:
        session.send(envelope(2), deadline=time.monotonic() + 5)
    assert again.value.connection_lost  # the worker opens a new connection
    session.close()
    assert len(relay.connections) == 1 and len(relay.messages) == 1


# Real worker processes: SMTP_TIMEOUT=5 and OUTBOX_LEASE=20, as in issue 12.
TIMEOUT = 5.0
LEASE = 20.0


def worker_env(relay: DripRelay, tmp_path: Path) -> dict[str, str]:
    env = server_env(tmp_path / "instance")
    env.update(
        SECRET_KEY="test-secret-key-0123456789",
        DATABASE_URL=f"sqlite:///{tmp_path}/ledger.db",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(relay.port),
        SMTP_SECURITY="none",
        SMTP_TIMEOUT=f"{TIMEOUT:g}",
        OUTBOX_LEASE=f"{LEASE:g}",
        MAIL_FROM="Contact form <forms@formpost.test>",
        MAIL_RECIPIENTS="sales=sales@example.com",
    )
    return env


def queue_one(env: dict[str, str]) -> tuple[Ledger, str]:
    engine = make_engine(env["DATABASE_URL"])
    migrate(engine)
    ledger = Ledger(engine, SystemClock())
    mail_from = parse_mail_from(env["MAIL_FROM"])
    message = compose(
        Submission(
            recipient=Address(addr_spec="sales@example.com"),
            subject="drip",
            message="body",
        ),
        mail_from=mail_from,
        message_id=new_message_id(mail_from),
        date=datetime.now(UTC),
    )
    ledger.enqueue(message, form_id="hosted", alias="sales", subject="drip")
    return ledger, message.message_id


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return start(flask_cmd("worker"), env, log)


def assert_retried_for_timeout(ledger: Ledger) -> None:
    (row,) = ledger.rows()
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error_kind == "transient"
    assert "timed out" in row.last_reply


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["banner", "ehlo", "data"])
def test_worker_gives_a_dripping_relay_only_smtp_timeout(make_drip, tmp_path, stage):
    relay = make_drip(stage, every=2.0, count=40)  # 80 s unless cut short
    env = worker_env(relay, tmp_path)
    ledger, _ = queue_one(env)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_until(lambda: relay.connections, 20, "the worker to connect")
        conn = relay.connections[0]
        wait_until(
            lambda: conn.closed is not None,
            TIMEOUT + MARGIN + 1,
            "the worker to give up on the relay",
        )
        assert conn.closed - conn.opened < TIMEOUT + MARGIN  # type: ignore[operator]
        wait_until(
            lambda: ledger.rows()[0].state == "pending", 5, "the row to be released"
        )
        assert_retried_for_timeout(ledger)
    finally:
        stop(worker)
    assert worker.returncode == 0
    assert len(relay.connections) == 1  # the retry waits OUTBOX_RETRY_BASE


@pytest.mark.slow
def test_two_workers_send_a_dripped_message_once_within_the_lease(make_drip, tmp_path):
    relay = make_drip("data", every=2.0, count=40)
    env = worker_env(relay, tmp_path)
    ledger, message_id = queue_one(env)
    workers = [start_worker(env, tmp_path / f"worker{n}.log") for n in range(2)]
    try:
        assert relay.data_event.wait(20), "no worker sent DATA"
        first = relay.connections[0]
        first_data = first.data[0][0]
        # Watch the whole lease window after the first DATA (and a little more):
        # the one who sent it gave up, and nobody else may take the row.
        time.sleep(LEASE + 2 - (time.monotonic() - first_data))
        assert first.closed is not None
        assert first.closed - first.opened < TIMEOUT + MARGIN
        assert len(relay.messages) == 1
        assert message_id.encode() in relay.messages[0]
        assert_retried_for_timeout(ledger)
    finally:
        for w in workers:
            stop(w)
    assert [w.returncode for w in workers] == [0, 0]


@pytest.mark.slow
def test_sigterm_in_a_dripped_reply_ends_within_the_deadline(make_drip, tmp_path):
    relay = make_drip("data", every=2.0, count=40)
    env = worker_env(relay, tmp_path)
    ledger, _ = queue_one(env)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        assert relay.data_event.wait(20), "the worker never sent DATA"
    finally:
        worker.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            code = worker.wait(TIMEOUT + MARGIN)
        finally:
            stop(worker, signal.SIGKILL)
    conn = relay.connections[0]
    # The attempt in flight may finish, but only within its deadline.
    assert code == 0
    assert time.monotonic() - signalled < TIMEOUT + MARGIN
    assert conn.closed is not None and conn.closed - conn.opened < TIMEOUT + MARGIN
    assert_retried_for_timeout(ledger)
