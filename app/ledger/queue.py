"""The queue over the ledger: store a submission, claim, settle, list, purge.

`Ledger` is the package's face: the request path stores through it (with the
limits and group commit), workers claim and settle through it, operators
read and tidy through it. Every database failure leaves it as StorageError.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
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
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..clock import Clock
from ..errors import StorageError
from ..message import Envelope
from . import actions, deliveries, index, proofs
from .content import Content, search_columns
from .deliveries import Channel, ClaimedDelivery
from .driver import driver_args, driver_transaction, reading, writing
from .files import (
    Attachment,
    StoredFile,
    delete_files,
    list_files,
    read_chunks,
    store_files,
)
from .groupcommit import GroupCommit, Pending
from .lease import claim_due
from .limits import (
    DAY,
    Admission,
    Bucket,
    LimitCheck,
    LimitExceeded,
    Limits,
    add_to_backlog,
    buckets_for,
    lock_backlog,
    peek,
    take_token,
)
from .release import release as release_rows
from .schema import (
    BACKLOG,
    BOUNDS,
    DELIVERY_STATES,
    RELAY_KEY,
    STATES,
    counters,
    daily_counts,
    dedupe_digest,
    delivery_attempts,
    limit_buckets,
    relay_health,
    submissions,
)
from .search import MAX_LIMIT, Filters, Page, decode_cursor, matching
from .timeline import Detail, attempt_params, read_detail, record_attempts

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
    files: int = 0  # attachments to read from the ledger when sending


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
ROW_COLUMNS = (
    "receipt", "form_id", "recipient_alias", "mail_from", "recipients", "subject",
    "message_id", "raw", "dedupe_key", "state", "attempts", "created_at",
    "queued_at", "next_attempt_at", "client_ip", "fingerprint", "name", "email",
    "message", "fields", "origin", "user_agent", "verdict", "body_digest",
    "file_count",
)  # fmt: skip
# What a spam verdict stores a post as (app/spam): accept, quarantine, drop.
VERDICT_STATES = {"accept": "pending", "quarantine": "spam", "drop": "dropped"}
UNDELIVERED = ("pending", "sending")
DELIVERY_RETRY = ("failed", "disabled", "pending")


@dataclass(frozen=True)
class _Store:
    """One post on its way into a group commit: the row and what it must pass."""

    row: dict[str, Any]
    limits: Limits | None
    buckets: list[Bucket]
    fingerprint_since: float | None  # None: no content dedupe for this post
    now: float
    search: dict[str, str]  # the full-text index's columns (index.py)
    channels: tuple[Channel, ...] = ()  # deliveries beyond the email
    files: tuple[StoredFile, ...] = ()  # written in the row's transaction


def _check_fits(row: dict[str, Any]) -> None:
    """Refuse, before any transaction, a value its column could not hold.

    Every value a post can fill is bounded where it is made (digests,
    truncation, validated ids); this guard keeps a mistake there from
    failing the other posts of a group commit.
    """
    for name, bound in BOUNDS.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > bound:
            raise StorageError(
                f"could not store the submission: {name} is longer than {bound}"
            )


def _lock_counters() -> Any:
    return select(counters.c.value).where(counters.c.name == BACKLOG).with_for_update()


@functools.lru_cache(maxsize=4)
def _insert_statement(dialect: str, returning: bool = False) -> Any:
    values: dict[str, Any] = {k: bindparam(k) for k in ROW_COLUMNS}
    if dialect == "postgresql":
        # The row's search vector in the INSERT itself: no second write.
        values["search"] = index.pg_search_value()
        stmt = insert(index.pg_submissions()).values(values)
        # The id only for a row with files, which point at it.
        return stmt.returning(submissions.c.id) if returning else stmt
    return insert(submissions).values(values)


@functools.lru_cache(maxsize=2)
def _count_statement(dialect: str) -> Any:
    """Add :count to the form's count for :day (the statement, built once)."""
    upsert = _UPSERT[dialect](daily_counts).values(
        form_id=bindparam("form_id", type_=String),
        day=bindparam("day", type_=Integer),
        count=bindparam("count", type_=Integer),
    )
    return upsert.on_conflict_do_update(
        index_elements=[daily_counts.c.form_id, daily_counts.c.day],
        set_={"count": daily_counts.c.count + upsert.excluded.count},
    )


@functools.lru_cache(maxsize=1)
def _by_dedupe_key() -> Any:
    return select(submissions.c.receipt).where(
        submissions.c.dedupe_key == bindparam("key", type_=String)
    )


@functools.lru_cache(maxsize=1)
def _by_fingerprint() -> Any:
    c = submissions.c
    return (
        select(c.receipt)
        .where(
            c.fingerprint == bindparam("fingerprint", type_=String),
            c.created_at > bindparam("since", type_=Float),
        )
        .order_by(c.created_at)
        .limit(1)
    )


@functools.lru_cache(maxsize=1)
def _body_count_statement() -> Any:
    # Built once: every scored post asks it, before it is stored.
    c = submissions.c
    found = (
        select(c.id)
        .where(
            c.body_digest == bindparam("digest", type_=String),
            c.created_at >= bindparam("since", type_=Float),
        )
        .limit(bindparam("cap", type_=Integer))
        .subquery()
    )
    return select(func.count()).select_from(found)


@functools.lru_cache(maxsize=1)
def _claim_statement() -> Any:
    """Take due rows under a lease: one UPDATE ... RETURNING (built once)."""
    c = submissions.c
    return claim_due(
        submissions,
        c.id,
        c.receipt,
        c.mail_from,
        c.recipients,
        c.raw,
        c.message_id,
        c.attempts,
        c.queued_at,
        c.file_count,
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
        # When spend_proof last deleted expired proofs (proofs.PURGE_EVERY).
        self._proofs_purged_at = float("-inf")
        self._storage_errors = (SQLAlchemyError, dbapi.Error)

    def _reading(self) -> AbstractContextManager[Connection]:
        return reading(self.engine)

    def _writing(self) -> AbstractContextManager[Connection]:
        return writing(self.engine)

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
        fingerprint: str | None = None,
        content: Content | None = None,
        verdict: str = "accept",
        verdict_json: str | None = None,
        body_digest: str | None = None,
        channels: Sequence[Channel] = (),
        files: Sequence[StoredFile] = (),
    ) -> str:
        """INSERT and COMMIT one submission; return its receipt.

        In the transaction that stores it: a post repeating an earlier one
        (the same dedupe_key, or the same `fingerprint` within the limits'
        dedupe_window) stores nothing and gets the first one's receipt; then
        the limits are checked against their counters (limits.py), a fixed
        number of rows however large the table. Posts in flight together
        share one COMMIT (group commit). Raise LimitExceeded when a limit
        refuses, StorageError if nothing was committed. `content` is what the
        visitor sent, stored as data and indexed for search; `files` are
        written in the same transaction as the row (files.py).

        `verdict` (accept, quarantine, drop) picks the state: `pending` for
        the workers, `spam` (kept, never claimed until released) or
        `dropped` (never claimed; hidden from the inbox). A dropped row keeps
        its message, so an owner can still release a real customer's post
        that a browser's autofill put into the honeypot; retention erases it
        like any other. The limits and dedupe apply the same to all three.
        `channels` get one delivery each in the same transaction, for an
        accepted (pending) row only (deliveries.py); a release creates them.
        """
        now = self.clock.now()
        state = VERDICT_STATES[verdict]
        content = content or Content()
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
            "dedupe_key": dedupe_digest(dedupe_key) if dedupe_key else None,
            "state": state,
            "attempts": 0,
            "created_at": now,
            "queued_at": now,
            "next_attempt_at": now,
            "client_ip": client_ip[:64] if client_ip else None,
            "fingerprint": fingerprint,
            **content.columns(),
            "verdict": verdict_json,
            "body_digest": body_digest,
            "file_count": len(files),
        }
        _check_fits(row)
        search = search_columns(
            row["subject"], content.name, content.email, content.message, content.fields
        )
        window = limits.dedupe_window if limits is not None else 0.0
        item = Pending(
            _Store(
                row=row,
                limits=limits,
                buckets=buckets_for(limits, form_id, row["client_ip"], alias),
                fingerprint_since=now - window if fingerprint and window else None,
                now=now,
                search=search,
                channels=tuple(channels),
                files=tuple(files),
            )
        )
        self._commits.run(item)
        if isinstance(item.error, self._integrity_errors) and row["dedupe_key"]:
            # The same key stored by a writer outside the counter lock.
            existing = self._receipt_for(row["dedupe_key"])
            if existing is not None:
                return existing
        if item.error is not None:
            raise StorageError(f"could not store the submission: {item.error}")
        if item.refusal is not None:
            raise item.refusal
        if item.receipt is None:
            raise StorageError("could not store the submission: commit interrupted")
        return item.receipt

    def _write(self, batch: list[Pending]) -> None:
        """Store a batch in one transaction; after any error, row by row.

        A row that fails (a conflict, a value the database refuses) must cost
        only that row, so the others are written again, each on its own.
        """
        try:
            self._insert_together(batch)
        except self._storage_errors as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for item in batch:
                self._write([item])

    def _insert_together(self, batch: list[Pending]) -> None:
        engine = self.engine
        dialect = engine.dialect.name
        insert_row = _insert_statement(dialect)
        index_row = index.index_row(dialect)
        answers: list[tuple[str | None, LimitExceeded | None]] = []
        with driver_transaction(engine) as cursor:
            admission = Admission(cursor, engine, lock_backlog(cursor, engine))
            queued = 0
            days: dict[tuple[str, int], int] = {}
            for item in batch:
                store: _Store = item.request
                first = self._repeat_of(cursor, store)
                if first is not None:
                    answers.append((first, None))
                    continue
                refusal, writes = admission.check(
                    store.limits, store.buckets, store.now
                )
                if refusal is not None:
                    answers.append((None, refusal))
                    continue
                row = store.row
                admission.charge(writes, queued=row["state"] == "pending")
                if dialect == "sqlite":
                    cursor.execute(*driver_args(insert_row, row, engine))
                    row_id = cursor.lastrowid
                    entry = {"id": row_id, **store.search}
                    cursor.execute(*driver_args(index_row, entry, engine))
                else:
                    params = {**row, "search_text": index.search_text(store.search)}
                    stmt = _insert_statement(dialect, bool(store.files))
                    cursor.execute(*driver_args(stmt, params, engine))
                    row_id = cursor.fetchone()[0] if store.files else None
                if store.files:
                    store_files(cursor, engine, row_id, store.files)
                # The backlog is what the workers have to send: quarantined
                # and dropped rows are not in it (a release adds to it).
                if row["state"] == "pending":
                    queued += 1
                if store.channels and row["state"] == "pending":
                    add = deliveries.insert_statement(dialect)
                    for channel in store.channels:
                        params = deliveries.params_for(
                            row["receipt"], channel, store.now
                        )
                        cursor.execute(*driver_args(add, params, engine))
                # Daily counts are messages the form got, not dropped posts.
                if row["state"] != "dropped":
                    key = (row["form_id"], int(store.now // DAY))
                    days[key] = days.get(key, 0) + 1
                answers.append((row["receipt"], None))
            if queued:
                add = driver_args(add_to_backlog(), {"delta": queued}, engine)
                cursor.execute(*add)
            if days:
                count = _count_statement(dialect)
                for (form_id, day), n in days.items():
                    params = {"form_id": form_id, "day": day, "count": n}
                    cursor.execute(*driver_args(count, params, engine))
        # Only now, after COMMIT returned, is any row of the batch stored.
        for item, (receipt, refusal) in zip(batch, answers, strict=True):
            item.receipt, item.refusal = receipt, refusal

    def _repeat_of(self, cursor: Any, store: _Store) -> str | None:
        """The receipt of the post this one repeats, if any (same transaction)."""
        engine = self.engine
        key = store.row["dedupe_key"]
        if key is not None:
            cursor.execute(*driver_args(_by_dedupe_key(), {"key": key}, engine))
            found = cursor.fetchone()
            if found is not None:
                return found[0]
        if store.fingerprint_since is not None:
            params = {
                "fingerprint": store.row["fingerprint"],
                "since": store.fingerprint_since,
            }
            cursor.execute(*driver_args(_by_fingerprint(), params, engine))
            found = cursor.fetchone()
            if found is not None:
                return found[0]
        return None

    def preview(
        self,
        *,
        form_id: str,
        alias: str,
        client_ip: str | None,
        limits: Limits | None,
        dedupe_key: str | None = None,
        fingerprint: str | None = None,
    ) -> tuple[list[LimitCheck], str | None]:
        """Say how a post would fare with the limits and dedupe; change nothing.

        Return each limit's standing and the receipt of the post it would
        repeat (None: not a repeat). For `explain`: no token is taken.
        """
        now = self.clock.now()
        buckets = buckets_for(limits, form_id, client_ip, alias)
        window = limits.dedupe_window if limits is not None else 0.0
        with self._reading() as conn:
            checks = peek(conn, limits, buckets, now)
            first = None
            if dedupe_key:
                first = conn.execute(
                    _by_dedupe_key(), {"key": dedupe_digest(dedupe_key)}
                ).scalar()
            if first is None and fingerprint and window:
                first = conn.execute(
                    _by_fingerprint(),
                    {"fingerprint": fingerprint, "since": now - window},
                ).scalar()
        return checks, first

    def body_count(self, digest: str, since: float, cap: int = 10) -> int:
        """Count rows of any form and state with this body digest since `since`.

        Read-only, on the (body_digest, created_at) index; counting stops at
        `cap`, which is all the repeat rule needs to know.
        """
        params = {"digest": digest, "since": since, "cap": cap}
        with self._reading() as conn:
            return int(conn.execute(_body_count_statement(), params).scalar())

    def _receipt_for(self, digest: str) -> str | None:
        query = select(submissions.c.receipt).where(submissions.c.dedupe_key == digest)
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
                files=file_count,
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
                file_count,
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
        Each attempt recorded joins the row's timeline (timeline.py).
        """
        if not outcomes:
            return []
        held = []
        now = self.clock.now()
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
                attempts = [
                    attempt_params(outcome, now)
                    for outcome, ok in zip(outcomes, held, strict=True)
                    if ok and not outcome.give_back
                ]
                if attempts:
                    record_attempts(cursor, self.engine, attempts)
                # Rows leaving sending for sent or failed leave the backlog.
                delivered = sum(
                    1
                    for outcome, ok in zip(outcomes, held, strict=True)
                    if ok and outcome.values.get("state") not in UNDELIVERED
                )
                if delivered:
                    params = {"delta": -delivered}
                    cursor.execute(*driver_args(add_to_backlog(), params, self.engine))
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

    def take_token(
        self, parts: Sequence[object], count: int, seconds: float
    ) -> float | None:
        """Take one token from the bucket named by `parts` (count per seconds).

        Return None, or the seconds until a token comes back. For limits
        outside the accept path, such as log-in attempts.
        """
        with self._writing() as conn:
            return take_token(conn, parts, count, seconds, self.clock.now())

    def spend_proof(self, digest: str, expires_at: float) -> bool:
        """Spend a proof of work; False when it was spent before (a replay).

        Atomic across processes and machines (proofs.py); now and then the
        same transaction deletes the proofs that have expired.
        """
        now = self.clock.now()
        purge = now - self._proofs_purged_at >= proofs.PURGE_EVERY
        with self._writing() as conn:
            fresh = proofs.spend(conn, digest, expires_at)
            if purge:
                proofs.purge_expired(conn, now)
        if purge:
            self._proofs_purged_at = now
        return fresh

    def proof_spent(self, digest: str) -> bool:
        """Say whether a proof of work was spent already, without spending it."""
        with self._reading() as conn:
            return proofs.is_spent(conn, digest)

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

    def count_in(self, states: Sequence[str]) -> dict[str, int]:
        """Count the rows in each of these states (through the state index)."""
        c = submissions.c
        query = (
            select(c.state, func.count())
            .where(c.state.in_(list(states)))
            .group_by(c.state)
        )
        with self._reading() as conn:
            found = dict(conn.execute(query).all())
        return {state: found.get(state, 0) for state in states}

    def rows(self, state: str | None = None, limit: int = 50) -> list[Any]:
        """List submissions, newest first, without their message bytes."""
        query = select(*_LISTED).order_by(submissions.c.id.desc()).limit(limit)
        if state:
            query = query.where(submissions.c.state == state)
        with self._reading() as conn:
            return list(conn.execute(query).all())

    def receipt_of(self, row_id: int) -> str | None:
        """Return the receipt of the row with this id, or None."""
        with self._reading() as conn:
            query = select(submissions.c.receipt).where(submissions.c.id == row_id)
            return conn.execute(query).scalar_one_or_none()

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
            # Lock the counter first, like every writer of new rows.
            conn.execute(_lock_counters())
            result = conn.execute(
                stmt.values(state="pending", next_attempt_at=now, queued_at=now)
            )
            if result.rowcount:
                conn.execute(add_to_backlog(), {"delta": result.rowcount})
        return result.rowcount

    def purge_sent(self, older_than: float) -> int:
        """Delete sent rows whose sent_at is more than `older_than` seconds ago.

        Idle limit buckets go too: one that is full again holds nothing its
        rows could not rebuild.
        """
        now = self.clock.now()
        cutoff = now - older_than
        with self._writing() as conn:
            # Lock the counter first, as storing posts does: then a post
            # charging a bucket and this purge never wait on each other's rows.
            conn.execute(_lock_counters())
            # Their timelines and search entries go with them.
            purged = select(submissions.c.id).where(
                submissions.c.state == "sent", submissions.c.sent_at < cutoff
            )
            conn.execute(
                delivery_attempts.delete().where(
                    delivery_attempts.c.submission_id.in_(purged)
                )
            )
            deliveries.purge_for(conn, purged)
            delete_files(conn, purged)
            if self.engine.dialect.name == "sqlite":
                conn.execute(index.unindex_purged(), {"cutoff": cutoff})
            result = conn.execute(
                submissions.delete().where(
                    submissions.c.state == "sent", submissions.c.sent_at < cutoff
                )
            )
            conn.execute(limit_buckets.delete().where(limit_buckets.c.tat < now))
        return result.rowcount

    # -- the owner's console ---------------------------------------------

    def search(
        self,
        query: str | None = None,
        form: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
        hide: tuple[str, ...] = (),
    ) -> Page:
        """Return one page of matching rows, newest first, and the next cursor.

        `query` is plain words, all of which must match (search.py). Raise
        BadCursor for a cursor this ledger did not hand out. Rows in a state
        named in `hide` are left out.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        filters = Filters(query, form, state, since, until, hide)
        below = decode_cursor(cursor)
        stmt = matching(_LISTED, filters, self.engine.dialect.name, below)
        if stmt is None:
            return Page([], None)
        with self._reading() as conn:
            rows = list(conn.execute(stmt.limit(limit + 1)).all())
        if len(rows) > limit:
            return Page(rows[:limit], str(rows[limit - 1].id))
        return Page(rows, None)

    def iterate(self, filters: Filters, batch: int = 500) -> Iterator[Any]:
        """Yield every matching row, newest first, fetched in keyset batches.

        Each batch is its own short read, so memory stays flat and no
        transaction stays open while the caller writes its export out.
        """
        below: int | None = None
        while True:
            stmt = matching(_LISTED, filters, self.engine.dialect.name, below)
            if stmt is None:
                return
            with self._reading() as conn:
                rows = conn.execute(stmt.limit(batch)).all()
            yield from rows
            if len(rows) < batch:
                return
            below = rows[-1].id

    def detail(self, receipt: str) -> Detail | None:
        """Return everything stored about a submission and its attempts in order."""
        with self._reading() as conn:
            return read_detail(conn, receipt, _LISTED)

    def files(self, submission_id: int) -> list[Attachment]:
        """Return a submission's files (without their bytes), in posted order."""
        try:
            with self._reading() as conn:
                return list_files(conn, submission_id)
        except self._storage_errors as exc:
            raise StorageError(f"could not read attachments: {exc}") from exc

    def file_bytes(self, attachment_id: int) -> Iterator[bytes]:
        """Yield a stored file's bytes, one chunk per short read."""
        try:
            yield from read_chunks(self.engine, attachment_id)
        except self._storage_errors as exc:
            raise StorageError(f"could not read an attachment: {exc}") from exc

    def retry_now(self, receipts: Sequence[str]) -> int:
        """Make these pending or failed rows due now; return how many."""
        return self._by_receipts(receipts, actions.retry_now)

    def erase(self, receipts: Sequence[str]) -> int:
        """Erase these rows to tombstones (actions.py); return how many."""
        return self._by_receipts(receipts, actions.erase)

    def release_spam(self, receipts: Sequence[str], by: str | None = None) -> int:
        """Deliver these spam or dropped rows after all; return how many moved.

        In one transaction: each named row in state spam or dropped (with
        its message) goes to pending, due now, its verdict kept and the
        release (by whom) in its timeline. Rows in any other state, and
        unknown receipts, are left alone and not counted.
        """
        receipts = list(receipts)
        now = self.clock.now()
        done = 0
        with self._writing() as conn:
            for start in range(0, len(receipts), actions.BATCH):
                chunk = receipts[start : start + actions.BATCH]
                query = select(submissions.c.id).where(submissions.c.receipt.in_(chunk))
                ids = list(conn.execute(query).scalars())
                done += release_rows(conn, ids, now, by)
        return done

    def release_matching(self, filters: Filters, by: str | None = None) -> int:
        """Release every spam or dropped row matching `filters`, in batches."""
        return self._by_filter(filters, functools.partial(release_rows, by=by))

    def retry_matching(self, filters: Filters) -> int:
        """Retry now every row matching `filters`, in bounded batches."""
        return self._by_filter(filters, actions.retry_now)

    def erase_matching(self, filters: Filters) -> int:
        """Erase every row matching `filters`, in bounded batches."""
        return self._by_filter(filters, actions.erase)

    def erase_delivered_before(self, cutoff: float) -> int:
        """Erase rows created before `cutoff` (retention); return how many.

        Sent rows, and the spam verdict's quarantined and dropped rows: a
        quarantined post nobody released within the retention goes too.
        """
        c = submissions.c
        done = 0
        while True:
            query = (
                select(c.id)
                .where(c.state.in_(("sent", "spam", "dropped")), c.created_at < cutoff)
                .order_by(c.id)
                .limit(actions.BATCH)
            )
            with self._reading() as conn:
                ids = list(conn.execute(query).scalars())
            if not ids:
                return done
            with self._writing() as conn:
                done += actions.erase(conn, ids, self.clock.now())

    def daily_counts(self, since_day: int) -> list[tuple[str, int, int]]:
        """Return (form, day, count) for each UTC day from `since_day` on.

        Days count from the epoch (created_at // 86400); erasure keeps them.
        """
        query = (
            select(daily_counts.c.form_id, daily_counts.c.day, daily_counts.c.count)
            .where(daily_counts.c.day >= since_day)
            .order_by(daily_counts.c.day, daily_counts.c.form_id)
        )
        with self._reading() as conn:
            return [tuple(row) for row in conn.execute(query).all()]

    def _by_receipts(self, receipts: Sequence[str], action: Any) -> int:
        done = 0
        receipts = list(receipts)
        for start in range(0, len(receipts), actions.BATCH):
            chunk = receipts[start : start + actions.BATCH]
            with self._writing() as conn:
                ids = list(
                    conn.execute(
                        select(submissions.c.id).where(submissions.c.receipt.in_(chunk))
                    ).scalars()
                )
                done += action(conn, ids, self.clock.now())
        return done

    def _by_filter(self, filters: Filters, action: Any) -> int:
        done = 0
        below: int | None = None
        dialect = self.engine.dialect.name
        while True:
            stmt = matching([submissions.c.id], filters, dialect, below)
            if stmt is None:
                return done
            with self._reading() as conn:
                ids = list(conn.execute(stmt.limit(actions.BATCH)).scalars())
            if not ids:
                return done
            with self._writing() as conn:
                done += action(conn, ids, self.clock.now())
            below = ids[-1]

    # -- deliveries beyond the email (deliveries.py) -----------------------

    def create_deliveries(self, receipt: str, channels: Sequence[Channel]) -> int:
        """Create the deliveries of an accepted submission (idempotent).

        For a quarantined post released to pending: call after the release.
        Nothing for spam, dropped or erased rows. Return how many are new.
        """
        with self._writing() as conn:
            return deliveries.create(conn, receipt, channels, self.clock.now())

    def claim_deliveries(self, batch: int, lease: float) -> list[ClaimedDelivery]:
        """Take up to `batch` due deliveries under a lease."""
        try:
            with self._writing() as conn:
                return deliveries.claim(conn, batch, lease, self.clock.now())
        except self._storage_errors as exc:
            raise StorageError(f"could not claim deliveries: {exc}") from exc

    def extend_deliveries(self, rows: Sequence[ClaimedDelivery], lease: float) -> None:
        """Push the lease of deliveries still held further into the future."""
        with self._writing() as conn:
            deliveries.extend(conn, rows, self.clock.now() + lease)

    def settle_delivery(
        self, row: ClaimedDelivery, values: dict[str, Any], give_back: bool = False
    ) -> bool:
        """Record a delivery's outcome if this claim still holds it."""
        try:
            with self._writing() as conn:
                return deliveries.settle(conn, row, values, give_back)
        except self._storage_errors as exc:
            raise StorageError(f"could not record a delivery: {exc}") from exc

    def delivery_source(self, submission_id: int) -> Any | None:
        """The submission a delivery is about (receipt, form, content)."""
        with self._reading() as conn:
            return deliveries.source(conn, submission_id)

    def deliveries(self, receipt: str) -> list[Any]:
        """Every delivery of one submission, with the endpoint's 410 reason."""
        with self._reading() as conn:
            return deliveries.listing(conn, receipt)

    def retry_deliveries(
        self,
        receipts: Sequence[str] | None = None,
        ids: Sequence[int] | None = None,
        delivery_ids: Sequence[int] | None = None,
        failed_only: bool = False,
    ) -> int:
        """Make failed, disabled or pending deliveries due now; return how many.

        Of these submissions (receipts, or row ids), these deliveries, or all;
        `failed_only` leaves pending ones as they are.
        """
        states = ("failed", "disabled") if failed_only else DELIVERY_RETRY
        with self._writing() as conn:
            if receipts is not None:
                ids = list(
                    conn.execute(
                        select(submissions.c.id).where(
                            submissions.c.receipt.in_(list(receipts))
                        )
                    ).scalars()
                )
            return deliveries.retry(conn, self.clock.now(), ids, delivery_ids, states)

    def delivery_counts(self) -> dict[str, int]:
        """Deliveries beyond the email by state (every state, 0 included)."""
        with self._reading() as conn:
            found = deliveries.counts(conn)
        return {state: found.get(state, 0) for state in DELIVERY_STATES}

    def disable_target(self, target: str, reason: str) -> None:
        """Remember that an endpoint answered 410 Gone."""
        with self._writing() as conn:
            deliveries.disable_target(conn, target, reason, self.clock.now())

    def disabled_reason(self, target: str) -> str | None:
        """Why an endpoint is disabled, or None."""
        with self._reading() as conn:
            return deliveries.disabled_reason(conn, target)

    def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        with self._reading() as conn:
            conn.execute(select(1))
