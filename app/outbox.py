"""Delivery workers: claim due rows, send them, record each outcome.

The ledger decides who holds a row (a lease), the transport sends, and this
module decides what an outcome means (see the table in the README, "How it works"):
sent, retry later with capped exponential backoff, dead-letter, or keep
pending and raise an alert when the configuration is at fault.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import metrics
from .clock import Clock
from .compose import attached_size, with_attachments
from .errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    StorageError,
    TransientError,
)
from .filelinks import LINK_DAYS, make_token
from .i18n import catalogue, locale_number
from .languages import DEFAULT_LOCALE, exact_locale
from .ledger import Claimed, Ledger, Outcome
from .message import Envelope
from .transport import SendResult, Session, Transport

if TYPE_CHECKING:
    from .notifier import Notifier

log = logging.getLogger("formpost.outbox")

# Each delay is shortened by up to this fraction at random, so a crowd of
# messages deferred together does not return to the relay together.
JITTER = 0.2
EXPIRED = "delivery time expired"
# A connection idle for longer than this gets a NOOP before it is reused.
IDLE_CHECK = 1.0
# Seconds between records of a working relay (see Worker._record_relay_ok).
RELAY_OK_EVERY = 5.0
# Retention (RETENTION_DAYS) runs at most this often, in seconds: daily.
RETAIN_EVERY = 86400.0
# The recorder gathers outcomes for up to this long (or this many) before it
# commits them: one disk sync for a run of messages instead of one each.
RECORD_GATHER = 0.005
RECORD_BATCH = 8
# At most this many outcomes are waiting to be committed, counting the batch
# being committed; the sending thread waits for room. A crash loses at most
# these, plus the message the relay was accepting meanwhile: their rows are
# sent again after the lease (RESEND_BOUND, stated in the README).
RECORD_UNRECORDED = 8
RESEND_BOUND = RECORD_UNRECORDED + 1
# While the database refuses outcomes, try again after these many seconds
# (doubling); give up once the rows' lease is over: they are sent again.
RECORD_RETRY_FIRST = 0.05
RECORD_RETRY_MAX = 2.0


class _RelayUnavailable(Exception):
    """Opening a session failed: no row can be sent right now."""

    def __init__(self, error: DeliveryError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class OutboxSettings:
    """Timing of the queue, in seconds (OUTBOX_* settings)."""

    retry_base: float = 60.0
    retry_max: float = 3600.0
    give_up_after: float = 432_000.0
    lease: float = 300.0
    poll_interval: float = 1.0
    batch: int = 20
    attempt_timeout: float = 30.0
    retention_days: int = 0  # 0: keep delivered submissions' content
    # A message with files larger than this (or the relay's SIZE) carries a
    # link to them instead; 0: only the relay's SIZE.
    mail_max_size: int = 0
    # Where the console is (PUBLIC_URL) and the key that signs file links.
    public_url: str | None = None
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OutboxSettings:
        """Take the OUTBOX_* values (and SMTP_TIMEOUT) from a parsed config."""
        return cls(
            retry_base=config["OUTBOX_RETRY_BASE"],
            retry_max=config["OUTBOX_RETRY_MAX"],
            give_up_after=config["OUTBOX_GIVE_UP_AFTER"],
            lease=config["OUTBOX_LEASE"],
            poll_interval=config["OUTBOX_POLL_INTERVAL"],
            batch=config["OUTBOX_BATCH"],
            attempt_timeout=config["SMTP_TIMEOUT"],
            retention_days=config["RETENTION_DAYS"],
            mail_max_size=config.get("MAIL_MAX_SIZE", 0),
            public_url=config.get("PUBLIC_URL"),
            secret=config.get("SECRET_KEY"),
        )


def retry_delay(
    attempts: int, base: float, cap: float, rand: Callable[[], float]
) -> float:
    """Return the wait after the `attempts`-th failed attempt.

    base, 2*base, 4*base ... capped at `cap`, each shortened by up to JITTER.
    """
    exponent = min(max(attempts - 1, 0), 62)  # 2**62 seconds is cap enough
    delay = min(cap, base * (2**exponent))
    return delay * (1.0 - JITTER * rand())


class _Recorder:
    """Commits outcomes off the sending thread, several per transaction.

    While the relay handles the next messages, the outcomes of the last ones
    are committed (both wait on I/O, so the GIL is free), and only then are
    their "delivered" lines logged. Outcomes that arrive within RECORD_GATHER of
    each other share one transaction and one disk sync. At most
    RECORD_UNRECORDED outcomes wait uncommitted: put() blocks the sending
    thread until there is room, so a slow or unavailable database stops
    sending instead of piling up messages the relay accepted and the ledger
    does not know. Only those can be lost to a crash; their rows come back
    after the lease and are sent again with the same Message-ID, the window
    any mail system has between the relay's 250 and its own record.
    """

    _FLUSH = object()  # queued by flush(): commit what is gathered, now

    def __init__(self, ledger: Ledger, give_up_after: float = 300.0) -> None:
        self.ledger = ledger
        self.give_up_after = give_up_after
        self.queue: queue.Queue[Any] = queue.Queue()
        self._room = threading.BoundedSemaphore(RECORD_UNRECORDED)
        self._hurry = threading.Event()  # set by flush(): stop gathering
        self.thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.thread.start()

    def put(self, outcome: Outcome, then: Callable[[], None] | None = None) -> None:
        """Queue an outcome; `then` runs once it is committed (or lost).

        Wait while RECORD_UNRECORDED outcomes are not yet committed.
        """
        if not self._room.acquire(blocking=False):
            # The sender waits: commit what is there now. put() and flush()
            # both run on the sending thread, so clearing here is safe.
            self._hurry.set()
            self._room.acquire()
            self._hurry.clear()
        self.queue.put((outcome, then))

    def flush(self) -> None:
        """Wait until everything put so far is committed (or logged as lost)."""
        self.queue.put(self._FLUSH)
        self._hurry.set()
        self.queue.join()
        self._hurry.clear()

    def _gather(self) -> list[Any]:
        batch = [self.queue.get()]
        if batch[0] is not self._FLUSH:
            # Wait out the window without taking from the queue meanwhile: a
            # put that finds no thread waiting on the queue wakes nobody, so
            # the sending thread does not pay for a wake-up per message.
            self._hurry.wait(RECORD_GATHER)
        while batch[-1] is not self._FLUSH and len(batch) < RECORD_BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _settle(self, outcomes: list[Outcome]) -> list[bool]:
        """Commit the outcomes, trying again while the database refuses.

        Until the lease is over: then the rows are another worker's to send,
        and the record no longer matters.
        """
        deadline = time.monotonic() + self.give_up_after
        delay = RECORD_RETRY_FIRST
        while True:
            try:
                return self.ledger.settle(outcomes)
            except StorageError as exc:
                if time.monotonic() + delay > deadline:
                    log.error(
                        "could not record %d outcomes, giving up (their rows are "
                        "sent again after the lease): %s",
                        len(outcomes),
                        exc,
                    )
                    return [True] * len(outcomes)
                log.warning(
                    "could not record %d outcomes, trying again in %.2f s: %s",
                    len(outcomes),
                    delay,
                    exc,
                )
                time.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX)

    def _run(self) -> None:
        while True:
            batch = self._gather()
            items = [item for item in batch if item is not self._FLUSH]
            try:
                held = self._settle([o for o, _ in items]) if items else []
            except Exception:  # noqa: BLE001 - a bug must not stop the worker
                log.exception("could not record %d outcomes", len(items))
                held = [True] * len(items)
            for _ in items:
                self._room.release()
            for (outcome, then), ok in zip(items, held, strict=True):
                if not ok:
                    log.warning(
                        "receipt=%s: outcome not recorded, the lease was lost first",
                        outcome.row.receipt,
                    )
                if then is not None:
                    try:
                        then()
                    except Exception:  # noqa: BLE001 - never stop recording
                        receipt = outcome.row.receipt
                        log.exception("receipt=%s: after recording", receipt)
            for _ in batch:
                self.queue.task_done()


class Worker:
    """One delivery loop. Run any number of them, on any number of machines."""

    def __init__(
        self,
        ledger: Ledger,
        transport: Transport,
        settings: OutboxSettings,
        clock: Clock,
        rand: Callable[[], float] = random.random,
        notifier: Notifier | None = None,
    ) -> None:
        self.ledger = ledger
        # Webhooks, Apprise and autoresponses: their own loop (notifier.py).
        self.notifier = notifier
        self.transport = transport
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.stop = threading.Event()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._session: Session | None = None
        self._last_used = 0.0
        self._recorder: _Recorder | None = None
        self._relay_ok_recorded: float | None = None  # time.monotonic()
        self._retained_at: float | None = None  # clock time of the last retention

    def run(self) -> None:
        """Deliver until `stop` is set; then finish the current message and return.

        Rows claimed but not yet attempted when stopping are released.
        """
        log.info(
            "worker %s delivering through %s", self.name, self.transport.describe()
        )
        notifying = None
        if self.notifier is not None:
            # Its own thread: a slow webhook never holds back the email.
            notifying = threading.Thread(
                target=self.notifier.run, args=(self.stop,), name="notify", daemon=True
            )
            notifying.start()
        while not self.stop.is_set():
            try:
                worked = self.run_once()
                self.retain()
            except Exception:  # noqa: BLE001 - keep the loop alive, say why
                log.exception("worker %s: delivery round failed", self.name)
                worked = 0
            if not worked:
                self.clock.wait(self.settings.poll_interval, self.stop)
        self._close_session()
        if notifying is not None:
            notifying.join()
        log.info("worker %s stopped", self.name)

    def run_once(self) -> int:
        """Claim one batch and deliver it; return how many rows were claimed."""
        rows = self.ledger.claim(self.settings.batch, self.settings.lease)
        if rows:
            self.deliver(rows)
        else:
            self._close_session()  # idle: do not hold the relay's connection
        return len(rows)

    def retain(self) -> int:
        """Apply RETENTION_DAYS at most once a day; return how many were erased.

        Every worker does it; erasing is idempotent, so two at once only
        repeat each other's work.
        """
        days = self.settings.retention_days
        now = self.clock.now()
        if not days or (
            self._retained_at is not None and now - self._retained_at < RETAIN_EVERY
        ):
            return 0
        self._retained_at = now
        erased = self.ledger.erase_delivered_before(now - days * RETAIN_EVERY)
        if erased:
            log.info(
                "retention: erased %d submissions older than %d days", erased, days
            )
        return erased

    def deliver(self, rows: list[Claimed]) -> None:
        """Send claimed rows over one reused connection, recording each outcome."""
        if self._recorder is None:
            self._recorder = _Recorder(self.ledger, self.settings.lease)
        waiting = list(rows)
        lease_end = self.clock.now() + self.settings.lease
        relay_error: DeliveryError | None = None
        relay_ok = False
        try:
            while waiting and not self.stop.is_set():
                # Keep the lease ahead of the next attempt, which is bounded by
                # the attempt deadline: no other worker may take these rows.
                if lease_end - self.clock.now() < self.settings.attempt_timeout + 5:
                    self.ledger.extend(waiting, self.settings.lease)
                    lease_end = self.clock.now() + self.settings.lease
                deadline = time.monotonic() + self.settings.attempt_timeout
                row = waiting[0]
                try:
                    result = self._send(row, deadline)
                except _RelayUnavailable as unavailable:
                    # Nothing can be sent until the relay answers: every row
                    # still held counts this as its attempt.
                    relay_error = unavailable.error
                    for held in waiting:
                        self._failed(held, unavailable.error)
                    waiting.clear()
                    break
                except DeliveryError as exc:
                    waiting.pop(0)
                    if not isinstance(exc, PermanentError):
                        relay_error = exc
                    self._failed(row, exc)
                    continue
                waiting.pop(0)
                relay_ok = True
                relay_error = None
                self._sent(row, result.refused)
        finally:
            if waiting:
                self.ledger.release(waiting)
                log.info("worker %s released %d unsent rows", self.name, len(waiting))
            self._recorder.flush()
            if relay_error is not None:
                self._close_session()
                self.ledger.record_relay(relay_error.kind, relay_error.reply)
                self._relay_ok_recorded = None
            elif relay_ok:
                self._record_relay_ok()

    def _record_relay_ok(self) -> None:
        """Say the relay works: after a failure at once, else every few seconds.

        A busy worker finishes a batch many times a second; one write (and
        disk sync) per batch would slow delivery for no reader's benefit.
        Another worker's failure record is cleared within RELAY_OK_EVERY.
        """
        now = time.monotonic()
        last = self._relay_ok_recorded
        if last is None or now - last >= RELAY_OK_EVERY:
            self.ledger.record_relay(None)
            self._relay_ok_recorded = now

    def _send(self, row: Claimed, deadline: float) -> SendResult:
        """Send over the open session; open one, or a new one if it was dropped.

        A connection is checked with NOOP before it is reused after a pause.
        One that the relay closed between messages is noticed by the next
        command and replaced once; the message then goes over the new one.
        """
        session = self._session
        if session is not None and time.monotonic() - self._last_used > IDLE_CHECK:
            if not session.alive():
                self._close_session()
                session = None
        reconnected = False
        while True:
            if session is None:
                try:
                    session = self._session = self.transport.open(deadline=deadline)
                except DeliveryError as exc:
                    raise _RelayUnavailable(exc) from exc
            try:
                envelope = self._with_files(row, session)
                result = session.send(envelope, deadline=deadline)
            except DeliveryError as exc:
                if exc.connection_lost:
                    self._close_session()
                    session = None
                    if not reconnected:
                        reconnected = True
                        continue
                raise
            self._last_used = time.monotonic()
            return result

    def _with_files(self, row: Claimed, session: Session) -> Envelope:
        """The row's message with its files, or with a link when too large.

        Files are read from the ledger for this message only, chunk by
        chunk, when it is sent: a batch never holds more than one message.
        """
        if not row.files:
            return row.envelope
        stored = self.ledger.files(row.id)
        limits = [self.settings.mail_max_size, _relay_size(session)]
        limit = min((n for n in limits if n), default=0)
        # Room for the DKIM signature and the relay's own Received header.
        size = len(row.envelope.data) + 4096
        size += sum(attached_size(f.size) for f in stored)
        if not limit or size <= limit:
            return with_attachments(
                row.envelope,
                (
                    (f.filename, f.content_type, self.ledger.file_bytes(f.id))
                    for f in stored
                ),
            )
        log.info(
            "receipt=%s: %d file(s) sent as a link (message %d bytes > %d)",
            row.receipt,
            len(stored),
            size,
            limit,
        )
        return with_attachments(row.envelope, [], notice=self._link_notice(row, stored))

    def _link_notice(self, row: Claimed, stored: list[Any]) -> str:
        # In the language of the email's own labels (its Content-Language).
        locale = _mail_locale(row.envelope)
        words = catalogue(locale)
        names = "\n".join(f"  - {f.filename} ({_size(f.size)})" for f in stored)
        settings = self.settings
        if settings.public_url and settings.secret:
            token = make_token(settings.secret, row.receipt)
            where = (
                words.ngettext(
                    "Download them from the console (log in as an owner; the "
                    "link works for %(num)s day):",
                    "Download them from the console (log in as an owner; the "
                    "link works for %(num)s days):",
                    LINK_DAYS,
                )
                % {"num": locale_number(LINK_DAYS, locale)}
                + f"\n{settings.public_url.rstrip('/')}/admin/files/{token}"
            )
        else:
            where = words.gettext(
                "Find them in the console under submission %(receipt)s."
            ) % {"receipt": row.receipt}
        intro = words.gettext(
            "Files attached to this submission were too large to send by email "
            "together, so they are not attached:"
        )
        return f"{intro}\n{names}\n\n{where}\n"

    def _close_session(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _sent(self, row: Claimed, refused: Mapping[str, tuple[int, str]]) -> None:
        reply = "250 accepted"
        if refused:
            reply += "; refused: " + "; ".join(
                f"<{addr}> {code} {text}" for addr, (code, text) in refused.items()
            )
        outcome = self.ledger.sent(row, reply)
        latency = self.clock.now() - row.queued_at

        def recorded() -> None:
            metrics.delivery("sent", latency=latency)
            log.info(
                "delivered receipt=%s message_id=%s attempt=%d%s",
                row.receipt,
                row.envelope.message_id,
                row.attempts,
                f" ({reply})" if refused else "",
                extra=self._fields(row, "sent"),
            )

        # The line is written by the recorder, while this thread waits on the
        # relay for the next message: it is not on the sending path.
        self._recorder.put(outcome, recorded)  # type: ignore[union-attr]

    def _failed(self, row: Claimed, exc: DeliveryError) -> None:
        s = self.settings
        age = self.clock.now() - row.queued_at
        record = self._recorder.put  # type: ignore[union-attr]
        if isinstance(exc, PermanentError):
            record(self.ledger.failed(row, exc.kind, exc.reply))
            metrics.delivery("failed")
            log.warning(
                "failed receipt=%s attempt=%d: %s",
                row.receipt,
                row.attempts,
                exc,
                extra=self._fields(row, "failed"),
            )
            return
        if isinstance(exc, TransientError) and age >= s.give_up_after:
            record(self.ledger.failed(row, "expired", f"{EXPIRED}: {exc.reply}"))
            metrics.delivery("expired")
            log.warning(
                "failed receipt=%s after %.0f s: %s: %s",
                row.receipt,
                age,
                EXPIRED,
                exc.reply,
                extra=self._fields(row, "expired"),
            )
            return
        delay = retry_delay(row.attempts, s.retry_base, s.retry_max, self.rand)
        record(self.ledger.retry(row, exc.kind, exc.reply, delay))
        metrics.delivery("retry")
        level = logging.ERROR if isinstance(exc, ConfigurationError) else logging.INFO
        log.log(
            level,
            "retry receipt=%s attempt=%d in %.0f s: %s",
            row.receipt,
            row.attempts,
            delay,
            exc,
            extra={**self._fields(row, "retry"), "delay_s": round(delay, 1)},
        )

    def _fields(self, row: Claimed, outcome: str) -> dict[str, object]:
        """The structured fields of one delivery attempt's log line."""
        return {
            "receipt": row.receipt,
            "message_id": row.envelope.message_id,
            "attempt": row.attempts,
            "outcome": outcome,
            "worker": self.name,
        }


def _relay_size(session: Session) -> int:
    """The relay's advertised SIZE (EHLO), 0 when it says none."""
    size_limit = getattr(session, "size_limit", None)
    return size_limit() if callable(size_limit) else 0


def _mail_locale(envelope: Envelope) -> str:
    """The shipped locale of a composed email's Content-Language, else English."""
    head = envelope.data.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-language":
            found = exact_locale(value.decode("ascii", "replace").strip())
            return found or DEFAULT_LOCALE
    return DEFAULT_LOCALE


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{max(1, size // 1024)} kB"
