"""The queue over the ledger: store a submission, claim, settle, list, purge.

`Ledger` is the package's face: the request path stores through it (with the
limits and group commit), workers claim and settle through it, operators
read and tidy through it. Every database failure leaves it as StorageError.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    bindparam,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..clock import Clock
from ..errors import StorageError
from ..message import Envelope
from .driver import READ_ONLY, driver_args, driver_transaction
from .groupcommit import GroupCommit, Pending
from .limits import Limits, insert_statement, which_limit
from .schema import RELAY_KEY, STATES, relay_health, submissions

RECEIPT_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud


@dataclass(frozen=True)
class Claimed:
    """A row a worker holds under lease: everything needed to send it."""

    id: int
    receipt: str
    claim_token: str
    envelope: Envelope
    attempts: int
    queued_at: float


@dataclass(frozen=True)
class Outcome:
    """What became of a claimed row: the columns to set when it is settled.

    `give_back` returns the attempt the claim counted: the row was claimed
    but never tried (a worker shutting down).
    """

    row: Claimed
    values: dict[str, Any]
    give_back: bool = False


@dataclass(frozen=True)
class Stats:
    """Counts by state and the age of the oldest due message."""

    counts: dict[str, int]
    oldest_pending_age: float | None
    relay: dict[str, Any] | None

    @property
    def backlog(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("sending", 0)


# What listings show of a submission: everything but the message bytes.
_LISTED = [c for c in submissions.c if c.name != "raw"]
_UPSERT = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}
_PG_LIMIT_LOCK = text("SELECT pg_advisory_xact_lock(7453102)")


@functools.lru_cache(maxsize=1)
def _claim_statement() -> Any:
    """Take due rows under a lease: one UPDATE ... RETURNING (built once)."""
    c = submissions.c
    now = bindparam("now", type_=Float)
    due = (
        select(c.id)
        .where(
            or_(
                (c.state == "pending") & (c.next_attempt_at <= now),
                (c.state == "sending") & (c.lease_until < now),
            )
        )
        .order_by(c.next_attempt_at)
        .limit(bindparam("batch", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        update(submissions)
        .where(c.id.in_(due.scalar_subquery()))
        .values(
            state="sending",
            lease_until=bindparam("lease_until", type_=Float),
            claim_token=bindparam("token", type_=String),
            attempts=c.attempts + 1,
            last_attempt_at=now,
        )
        .returning(
            c.id,
            c.receipt,
            c.mail_from,
            c.recipients,
            c.raw,
            c.message_id,
            c.attempts,
            c.queued_at,
        )
    )


@functools.lru_cache(maxsize=16)
def _settle_statement(columns: tuple[str, ...], give_back: bool) -> Any:
    """UPDATE one claimed row if this claim still holds it (cached per shape)."""
    c = submissions.c
    values: dict[str, Any] = {"lease_until": None, "claim_token": None}
    for column in columns:
        values[column] = bindparam(column)
    if give_back:
        values["attempts"] = c.attempts - 1
    return (
        update(submissions)
        .where(
            c.id == bindparam("b_id"),
            c.claim_token == bindparam("b_token"),
            c.state == "sending",
        )
        .values(**values)
    )


def new_receipt() -> str:
    """Return a short, unambiguous receipt id such as 'K7M2-Q9XD'."""
    # 32 letters divide 256 evenly, so each random byte picks one uniformly;
    # one call to the system's generator instead of one per character.
    chars = "".join(RECEIPT_ALPHABET[b % 32] for b in secrets.token_bytes(8))
    return f"{chars[:4]}-{chars[4:]}"


class Ledger:
    """Durable storage of submissions and the delivery queue's state changes."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._commits = GroupCommit(self._write)
        dbapi = engine.dialect.loaded_dbapi
        # Rows run on the driver's cursor raise the driver's own exceptions;
        # a failed COMMIT raises SQLAlchemy's.
        self._integrity_errors = (IntegrityError, dbapi.IntegrityError)
        self._storage_errors = (SQLAlchemyError, dbapi.Error)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads only: on SQLite it does not take the write lock.

        A database error inside leaves as StorageError.
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"could not read the ledger: {exc}") from exc

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction through SQLAlchemy, for the paths that are not hot.

        A database error inside leaves as StorageError; nothing is committed.
        """
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StorageError(f"could not write to the ledger: {exc}") from exc

    # -- request path ------------------------------------------------------

    def enqueue(
        self,
        envelope: Envelope,
        *,
        form_id: str,
        alias: str,
        subject: str,
        dedupe_key: str | None = None,
        client_ip: str | None = None,
        limits: Limits | None = None,
    ) -> str:
        """INSERT and COMMIT one submission; return its receipt.

        The limits are checked inside the same statement (INSERT ... SELECT
        ... WHERE counts are below them), so the request path stays one
        statement and one commit, and every process and machine sharing the
        database sees the same counts. A second post with the same dedupe_key
        stores nothing and returns the first one's receipt. Raise
        LimitExceeded when a limit refuses, StorageError if nothing was
        committed.
        """
        now = self.clock.now()
        receipt = new_receipt()
        row = {
            "receipt": receipt,
            "form_id": form_id,
            "recipient_alias": alias,
            "mail_from": envelope.mail_from,
            "recipients": ",".join(envelope.recipients),
            "subject": subject[:400],
            "message_id": envelope.message_id,
            "raw": envelope.data,
            "dedupe_key": dedupe_key,
            "state": "pending",
            "attempts": 0,
            "created_at": now,
            "queued_at": now,
            "next_attempt_at": now,
            "client_ip": client_ip,
        }
        stmt, params = insert_statement(row, limits, now)
        item = Pending(stmt, params, limited=len(params) > len(row))
        self._commits.run(item)
        if isinstance(item.error, self._integrity_errors):
            # Most likely the dedupe key: the same form posted again.
            existing = self._receipt_for(dedupe_key) if dedupe_key else None
            if existing is None:
                raise StorageError(f"could not store the submission: {item.error}")
            return existing
        if item.error is not None:
            raise StorageError(f"could not store the submission: {item.error}")
        if item.inserted is None:
            raise StorageError("could not store the submission: commit interrupted")
        if item.inserted:
            return receipt
        # Refused by a limit; but a repeat of an accepted post (same dedupe
        # key) still gets its first answer.
        existing = self._receipt_for(dedupe_key) if dedupe_key else None
        if existing is not None:
            return existing
        with self._reading() as conn:
            refusal = which_limit(
                conn, limits or Limits(), form_id, client_ip, alias, now
            )
        raise refusal

    def _write(self, batch: list[Pending]) -> None:
        """Store a batch in one transaction; after a conflict, row by row.

        A conflict (the same dedupe key twice, say) must cost only the row
        that caused it, so the others are written again, each on its own.
        """
        try:
            self._insert_together(batch)
        except self._integrity_errors as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for item in batch:
                self._write([item])
        except self._storage_errors as exc:
            for item in batch:
                item.error = exc

    def _insert_together(self, batch: list[Pending]) -> None:
        limited = any(item.limited for item in batch)
        with driver_transaction(self.engine) as cursor:
            if limited and self.engine.dialect.name == "postgresql":
                # Count and insert as one, like SQLite's BEGIN IMMEDIATE:
                # under READ COMMITTED, posts in flight together would each
                # count only what was committed before them.
                cursor.execute(str(_PG_LIMIT_LOCK))
            inserted = []
            for item in batch:
                cursor.execute(*driver_args(item.stmt, item.params, self.engine))
                # A row comes back, or none when a limit's condition was false
                # (rowcount is not reliable for INSERT ... SELECT on psycopg).
                inserted.append(cursor.fetchone() is not None)
        # Only now, after COMMIT returned, is any row of the batch stored.
        for item, stored in zip(batch, inserted, strict=True):
            item.inserted = stored

    def _receipt_for(self, dedupe_key: str) -> str | None:
        query = select(submissions.c.receipt).where(
            submissions.c.dedupe_key == dedupe_key
        )
        with self._reading() as conn:
            return conn.execute(query).scalar()

    # -- worker ------------------------------------------------------------

    def claim(self, batch: int, lease: float) -> list[Claimed]:
        """Take up to `batch` due rows under a lease, in one statement.

        Due: pending and next_attempt_at reached, or sending with an expired
        lease (its worker died). FOR UPDATE SKIP LOCKED lets concurrent
        workers on PostgreSQL take disjoint rows; SQLite renders it as nothing
        and serialises writers instead.
        """
        now = self.clock.now()
        token = secrets.token_hex(16)
        params = {
            "now": now,
            "lease_until": now + lease,
            "token": token,
            "batch": batch,
        }
        try:
            with driver_transaction(self.engine) as cursor:
                cursor.execute(*driver_args(_claim_statement(), params, self.engine))
                rows = cursor.fetchall()
        except self._storage_errors as exc:
            raise StorageError(f"could not claim rows: {exc}") from exc
        claimed = [
            Claimed(
                id=row_id,
                receipt=receipt,
                claim_token=token,
                envelope=Envelope(
                    mail_from=mail_from,
                    recipients=tuple(recipients.split(",")),
                    data=bytes(raw),
                    message_id=message_id,
                ),
                attempts=attempts,
                queued_at=queued_at,
            )
            for (
                row_id,
                receipt,
                mail_from,
                recipients,
                raw,
                message_id,
                attempts,
                queued_at,
            ) in rows
        ]
        claimed.sort(key=lambda c: c.id)
        return claimed

    def extend(self, rows: Sequence[Claimed], lease: float) -> None:
        """Push the lease of rows still held further into the future."""
        if not rows:
            return
        with self._writing() as conn:
            conn.execute(
                update(submissions)
                .where(
                    submissions.c.id.in_([r.id for r in rows]),
                    submissions.c.claim_token == rows[0].claim_token,
                    submissions.c.state == "sending",
                )
                .values(lease_until=self.clock.now() + lease)
            )

    def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record several outcomes in one transaction (one fsync); say which held.

        Only the holder of the current claim may record an outcome: after a
        lost lease another worker owns the row, and its result is False.
        """
        if not outcomes:
            return []
        held = []
        try:
            with driver_transaction(self.engine) as cursor:
                for outcome in outcomes:
                    stmt = _settle_statement(
                        tuple(sorted(outcome.values)), outcome.give_back
                    )
                    params = {
                        "b_id": outcome.row.id,
                        "b_token": outcome.row.claim_token,
                        **outcome.values,
                    }
                    cursor.execute(*driver_args(stmt, params, self.engine))
                    held.append(cursor.rowcount == 1)
        except self._storage_errors as exc:
            raise StorageError(f"could not record outcomes: {exc}") from exc
        return held

    def sent(self, row: Claimed, reply: str = "250 accepted") -> Outcome:
        """The relay accepted the message."""
        values = {
            "state": "sent",
            "sent_at": self.clock.now(),
            "last_reply": reply,
            "last_error_kind": None,
        }
        return Outcome(row, values)

    def retry(self, row: Claimed, kind: str, reply: str, delay: float) -> Outcome:
        """Back to the queue, due after `delay` seconds."""
        values = {
            "state": "pending",
            "next_attempt_at": self.clock.now() + delay,
            "last_error_kind": kind,
            "last_reply": reply,
        }
        return Outcome(row, values)

    def failed(self, row: Claimed, kind: str, reply: str) -> Outcome:
        """Dead-lettered, keeping the relay's reply."""
        values = {"state": "failed", "last_error_kind": kind, "last_reply": reply}
        return Outcome(row, values)

    def release(self, rows: Iterable[Claimed]) -> None:
        """Give back rows that were claimed but not attempted (shutdown)."""
        now = self.clock.now()
        self.settle(
            [
                Outcome(
                    row, {"state": "pending", "next_attempt_at": now}, give_back=True
                )
                for row in rows
            ]
        )

    def record_relay(self, error_kind: str | None, error: str | None = None) -> None:
        """Remember whether the relay works, for /readyz and alerts."""
        now = self.clock.now()
        if error_kind is None:
            changes: dict[str, Any] = {"failing_since": None, "last_success_at": now}
            first = changes
        else:
            first = {
                "last_error_at": now,
                "last_error_kind": error_kind,
                "last_error": error,
                "failing_since": now,
            }
            # A relay already failing keeps the time its failure began.
            since = func.coalesce(relay_health.c.failing_since, now)
            changes = {**first, "failing_since": since}
        # One statement: workers starting together must not both insert it.
        upsert = _UPSERT[self.engine.dialect.name](relay_health)
        upsert = upsert.values(key=RELAY_KEY, **first).on_conflict_do_update(
            index_elements=[relay_health.c.key], set_=changes
        )
        with self._writing() as conn:
            conn.execute(upsert)

    # -- operators ---------------------------------------------------------

    def stats(self) -> Stats:
        """Count rows by state; find the oldest pending one; read relay health."""
        now = self.clock.now()
        with self._reading() as conn:
            return self._stats(conn, now)

    def _stats(self, conn: Connection, now: float) -> Stats:
        counts = dict(
            conn.execute(
                select(submissions.c.state, func.count()).group_by(submissions.c.state)
            ).all()
        )
        oldest = conn.execute(
            select(func.min(submissions.c.queued_at)).where(
                submissions.c.state.in_(("pending", "sending"))
            )
        ).scalar()
        relay = conn.execute(
            select(relay_health).where(relay_health.c.key == RELAY_KEY)
        ).first()
        return Stats(
            counts={state: counts.get(state, 0) for state in STATES},
            oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
            relay=None if relay is None else dict(relay._mapping),
        )

    def rows(self, state: str | None = None, limit: int = 50) -> list[Any]:
        """List submissions, newest first, without their message bytes."""
        query = select(*_LISTED).order_by(submissions.c.id.desc()).limit(limit)
        if state:
            query = query.where(submissions.c.state == state)
        with self._reading() as conn:
            return list(conn.execute(query).all())

    def row(self, receipt: str) -> Any | None:
        """Return the submission with this receipt (no message bytes), or None."""
        with self._reading() as conn:
            query = select(*_LISTED).where(submissions.c.receipt == receipt)
            return conn.execute(query).one_or_none()

    def requeue(self, ids: Iterable[int] | None = None) -> int:
        """Move failed rows (the given ids, or all) back to pending, due now."""
        now = self.clock.now()
        stmt = update(submissions).where(submissions.c.state == "failed")
        if ids is not None:
            stmt = stmt.where(submissions.c.id.in_(list(ids)))
        with self._writing() as conn:
            result = conn.execute(
                stmt.values(state="pending", next_attempt_at=now, queued_at=now)
            )
        return result.rowcount

    def purge_sent(self, older_than: float) -> int:
        """Delete sent rows whose sent_at is more than `older_than` seconds ago."""
        cutoff = self.clock.now() - older_than
        with self._writing() as conn:
            result = conn.execute(
                submissions.delete().where(
                    submissions.c.state == "sent", submissions.c.sent_at < cutoff
                )
            )
        return result.rowcount

    def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        with self._reading() as conn:
            conn.execute(select(1))
