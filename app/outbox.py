"""Delivery workers: claim due rows, send them, record each outcome.

The ledger decides who holds a row (a lease), the transport sends, and this
module decides what an outcome means (see the table in docs/ and README):
sent, retry later with capped exponential backoff, dead-letter, or keep
pending and raise an alert when the configuration is at fault.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .errors import (
    ConfigurationError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from .ledger import Claimed, Ledger
from .transport import Session, Transport

log = logging.getLogger("formpost.outbox")

# Each delay is shortened by up to this fraction at random, so a crowd of
# messages deferred together does not return to the relay together.
JITTER = 0.2
EXPIRED = "delivery time expired"


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


class Worker:
    """One delivery loop. Run any number of them, on any number of machines."""

    def __init__(
        self,
        ledger: Ledger,
        transport: Transport,
        settings: OutboxSettings,
        clock: Clock,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.ledger = ledger
        self.transport = transport
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.stop = threading.Event()
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self) -> None:
        """Deliver until `stop` is set; then finish the current message and return.

        Rows claimed but not yet attempted when stopping are released.
        """
        log.info(
            "worker %s delivering through %s", self.name, self.transport.describe()
        )
        while not self.stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # noqa: BLE001 - keep the loop alive, say why
                log.exception("worker %s: delivery round failed", self.name)
                worked = 0
            if not worked:
                self.clock.wait(self.settings.poll_interval, self.stop)
        log.info("worker %s stopped", self.name)

    def run_once(self) -> int:
        """Claim one batch and deliver it; return how many rows were claimed."""
        rows = self.ledger.claim(self.settings.batch, self.settings.lease)
        if rows:
            self.deliver(rows)
        return len(rows)

    def deliver(self, rows: list[Claimed]) -> None:
        """Send claimed rows over one reused connection, recording each outcome."""
        waiting = list(rows)
        session: Session | None = None
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
                try:
                    session = self._usable(session, deadline)
                except DeliveryError as exc:
                    # Nothing can be sent until the relay answers: every row
                    # still held counts this as its attempt.
                    relay_error = exc
                    for row in waiting:
                        self._failed(row, exc)
                    waiting.clear()
                    break
                row = waiting.pop(0)
                try:
                    result = session.send(row.envelope, deadline=deadline)
                except DeliveryError as exc:
                    if not isinstance(exc, PermanentError):
                        relay_error = exc
                    self._failed(row, exc)
                    continue
                relay_ok = True
                relay_error = None
                self._sent(row, result.refused)
        finally:
            if waiting:
                self.ledger.release(waiting)
                log.info("worker %s released %d unsent rows", self.name, len(waiting))
            if session is not None:
                session.close()
            if relay_error is not None:
                self.ledger.record_relay(relay_error.kind, relay_error.reply)
            elif relay_ok:
                self.ledger.record_relay(None)

    def _usable(self, session: Session | None, deadline: float) -> Session:
        if session is not None:
            if session.alive():
                return session
            session.close()
        return self.transport.open(deadline=deadline)

    def _sent(self, row: Claimed, refused: Mapping[str, tuple[int, str]]) -> None:
        reply = "250 accepted"
        if refused:
            reply += "; refused: " + "; ".join(
                f"<{addr}> {code} {text}" for addr, (code, text) in refused.items()
            )
        if not self.ledger.mark_sent(row, reply):
            log.warning("receipt=%s: sent, but the lease was lost first", row.receipt)
        log.info(
            "delivered receipt=%s message_id=%s attempt=%d%s",
            row.receipt,
            row.envelope.message_id,
            row.attempts,
            f" ({reply})" if refused else "",
        )

    def _failed(self, row: Claimed, exc: DeliveryError) -> None:
        s = self.settings
        age = self.clock.now() - row.queued_at
        if isinstance(exc, PermanentError):
            self.ledger.mark_failed(row, exc.kind, exc.reply)
            log.warning(
                "failed receipt=%s attempt=%d: %s", row.receipt, row.attempts, exc
            )
            return
        if isinstance(exc, TransientError) and age >= s.give_up_after:
            self.ledger.mark_failed(row, "expired", f"{EXPIRED}: {exc.reply}")
            log.warning(
                "failed receipt=%s after %.0f s: %s: %s",
                row.receipt,
                age,
                EXPIRED,
                exc.reply,
            )
            return
        delay = retry_delay(row.attempts, s.retry_base, s.retry_max, self.rand)
        self.ledger.mark_retry(row, exc.kind, exc.reply, delay)
        level = logging.ERROR if isinstance(exc, ConfigurationError) else logging.INFO
        log.log(
            level,
            "retry receipt=%s attempt=%d in %.0f s: %s",
            row.receipt,
            row.attempts,
            delay,
            exc,
        )
