"""The ledger: every accepted submission, durably stored, and the queue over it.

One table (`submissions`) is queue, archive, dead-letter store and dedupe
index. SQLAlchemy Core only; the same statements run on SQLite (embedded
default, WAL + synchronous=FULL) and PostgreSQL (several machines).
"""

from __future__ import annotations

import fcntl
import functools
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, SQLAlchemyError

from .clock import Clock
from .transport import Envelope

STATES = ("pending", "sending", "sent", "failed")
RECEIPT_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud
RELAY_KEY = "relay"
READ_ONLY = "formpost_read_only"


class StorageError(Exception):
    """The ledger could not store or read; the visitor must not be told "sent"."""


class LimitExceeded(Exception):
    """A rate limit, recipient quota or backlog cap refused the submission."""

    def __init__(self, reason: str, retry_after: float, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = max(1, int(retry_after + 0.999))
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What a submission must stay within; counted in the ledger itself.

    rate: (count, seconds) windows per form and client IP. recipient_daily:
    submissions per recipient alias in 24 h. backlog: undelivered rows in all.
    0 or () switches a limit off.
    """

    rate: tuple[tuple[int, int], ...] = ()
    recipient_daily: int = 0
    backlog: int = 0


metadata = MetaData()

# The current shape of the tables, used by the queries below. The DDL that
# creates and upgrades them lives in MIGRATIONS and is frozen per version.
submissions = Table(
    "submissions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("receipt", String(16), nullable=False, unique=True),
    Column("form_id", String(64), nullable=False),
    Column("recipient_alias", String(64), nullable=False),
    Column("mail_from", String(320), nullable=False),
    Column("recipients", Text, nullable=False),
    Column("subject", String(400), nullable=False),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("raw", LargeBinary, nullable=False),
    Column("dedupe_key", String(160), unique=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("queued_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("claim_token", String(32)),
    Column("last_attempt_at", Float),
    Column("last_error_kind", String(16)),
    Column("last_reply", Text),
    Column("sent_at", Float),
    Column("client_ip", String(64)),
)
relay_health = Table(
    "relay_health",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("failing_since", Float),
    Column("last_error_at", Float),
    Column("last_error_kind", String(16)),
    Column("last_error", Text),
    Column("last_success_at", Float),
)
schema_version = Table(
    "formpost_schema", metadata, Column("version", Integer, nullable=False)
)


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
    """What became of a claimed row: the columns to set when it is settled."""

    row: Claimed
    values: dict[str, Any]


@dataclass(frozen=True)
class Stats:
    """Counts by state and the age of the oldest due message."""

    counts: dict[str, int]
    oldest_pending_age: float | None
    relay: dict[str, Any] | None

    @property
    def backlog(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("sending", 0)


def _count_below(where: Any, limit: Any) -> Any:
    """`(count of rows matching where) < limit`, reading at most `limit` rows."""
    capped = select(literal(1).label("one")).where(where).limit(limit).subquery()
    return select(func.count()).select_from(capped).scalar_subquery() < limit


# What listings show of a submission: everything but the message bytes.
_LISTED = [c for c in submissions.c if c.name != "raw"]
_UPSERT = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}
_PG_LIMIT_LOCK = text("SELECT pg_advisory_xact_lock(7453102)")
_ROW_COLUMNS = (
    "receipt", "form_id", "recipient_alias", "mail_from", "recipients", "subject",
    "message_id", "raw", "dedupe_key", "state", "attempts", "created_at",
    "queued_at", "next_attempt_at", "client_ip",
)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _insert_for(rate_windows: int, per_ip: bool, quota: bool, backlog: bool) -> Any:
    """Build (once per shape) the INSERT that checks the limits in its WHERE.

    Everything that varies is a bound parameter, so SQLAlchemy compiles each
    shape once and the request path pays only for executing it.
    """
    if not (rate_windows and per_ip) and not quota and not backlog:
        return (
            insert(submissions)
            .values({k: bindparam(k) for k in _ROW_COLUMNS})
            .returning(submissions.c.id)
        )
    c = submissions.c
    conditions = []
    if per_ip:
        for i in range(rate_windows):
            window = (c.form_id == bindparam("form_id")) & (
                c.client_ip == bindparam("client_ip")
            )
            window &= c.created_at > bindparam(f"rate_since_{i}")
            conditions.append(_count_below(window, bindparam(f"rate_max_{i}")))
    if quota:
        day = (c.recipient_alias == bindparam("recipient_alias")) & (
            c.created_at > bindparam("quota_since")
        )
        conditions.append(_count_below(day, bindparam("quota_max")))
    if backlog:
        # Two comparisons rather than IN: an IN list would be expanded at
        # execution time, and _dbapi_form compiles the statement only once.
        undelivered = or_(c.state == "pending", c.state == "sending")
        conditions.append(_count_below(undelivered, bindparam("backlog_max")))
    values = select(
        *[bindparam(k, type_=submissions.c[k].type).label(k) for k in _ROW_COLUMNS]
    ).where(*conditions)
    return (
        insert(submissions)
        .from_select(list(_ROW_COLUMNS), values)
        .returning(submissions.c.id)
    )


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
def _settle_statement(columns: tuple[str, ...]) -> Any:
    """UPDATE one claimed row if this claim still holds it (cached per shape)."""
    c = submissions.c
    values: dict[str, Any] = {"lease_until": None, "claim_token": None}
    for column in columns:
        if column == "undo":  # a claimed but unattempted row gets its try back
            values["attempts"] = c.attempts - bindparam("undo")
        else:
            values[column] = bindparam(column)
    return (
        update(submissions)
        .where(
            c.id == bindparam("b_id"),
            c.claim_token == bindparam("b_token"),
            c.state == "sending",
        )
        .values(**values)
    )


def _insert_statement(
    row: dict[str, Any], limits: Limits | None, now: float
) -> tuple[Any, dict[str, Any]]:
    limits = limits or Limits()
    per_ip = row["client_ip"] is not None
    stmt = _insert_for(
        len(limits.rate), per_ip, bool(limits.recipient_daily), bool(limits.backlog)
    )
    params = dict(row)
    if per_ip:
        for i, (count, seconds) in enumerate(limits.rate):
            params[f"rate_since_{i}"] = now - seconds
            params[f"rate_max_{i}"] = count
    if limits.recipient_daily:
        params["quota_since"] = now - 86400
        params["quota_max"] = limits.recipient_daily
    if limits.backlog:
        params["backlog_max"] = limits.backlog
    return stmt, params


@functools.lru_cache(maxsize=64)
def _dbapi_form(stmt: Any, dialect: Any) -> tuple[str, tuple[str, ...] | None, dict]:
    """Compile an INSERT once per dialect: SQL text, parameter order, constants.

    The request path then runs it on the driver's cursor directly. SQLAlchemy
    builds and compiles the statement; its per-execution work (cache lookup,
    parameter processing, result wrapping) cost more than the insert itself.
    Every bound value here is a str, int, float, bytes or None, which the
    drivers take as they are.
    """
    compiled = stmt.compile(dialect=dialect)
    binds = compiled.bind_names.items()
    constants = {name: bind.value for bind, name in binds if not bind.required}
    order = tuple(compiled.positiontup) if compiled.positional else None
    return compiled.string, order, constants


def _driver_args(stmt: Any, params: dict[str, Any], engine: Engine) -> tuple[str, Any]:
    """The SQL text and parameters for running `stmt` on the driver's cursor."""
    sql, order, constants = _dbapi_form(stmt, engine.dialect)
    values = {**constants, **params}
    return sql, values if order is None else [values[k] for k in order]


def default_url(instance_path: str) -> str:
    """Return the embedded default: a SQLite file in the instance folder."""
    return f"sqlite:///{instance_path}/formpost.db"


def make_engine(url: str) -> Engine:
    """Create an engine; on SQLite set WAL, synchronous=FULL and a busy timeout."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        engine = create_engine(url, connect_args={"timeout": 30})
        _tune_sqlite(engine, None)
        return engine
    path = os.path.abspath(path)
    # Create the file once here; every later connection opens it with
    # mode=rw, so a database deleted under a running process is an error
    # (503) instead of a fresh empty file that nobody else reads.
    _create_in_wal_mode(path)
    uri = f"sqlite:///file:{quote(path)}?mode=rw&uri=true"
    engine = create_engine(uri, connect_args={"timeout": 30})
    _tune_sqlite(engine, path)
    return engine


def _create_in_wal_mode(path: str) -> None:
    """Create the file if needed and switch it to WAL (a setting it keeps).

    Several processes starting at once on a new file race for the lock this
    takes, and SQLite may answer "locked" without waiting: try again briefly.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = sqlite3.connect(path, timeout=30)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _WriterQueue:
    """Hand SQLite's write lock from one writer to the next without polling.

    SQLite makes a blocked writer sleep and retry (1, 2, 5, 10 ... ms), so
    under contention a writer can sleep long after the lock came free: the
    long tail of request latency. Writers here first take a thread lock and
    an flock() on `<database>-writer` (one machine, as SQLite itself needs),
    which wake the next writer the moment the last one commits.
    """

    def __init__(self, path: str) -> None:
        self._path = f"{path}-writer"
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


# The writer queue of each SQLite file engine, for the request path's group
# commit, which runs its transaction on the driver's connection (Ledger).
_WRITERS: weakref.WeakKeyDictionary[Engine, _WriterQueue] = weakref.WeakKeyDictionary()


def _tune_sqlite(engine: Engine, path: str | None) -> None:
    if path is not None:
        writers = _WRITERS[engine] = _WriterQueue(path)

        @event.listens_for(engine, "begin")
        def _queue_up(connection: Connection) -> None:
            if not connection.get_execution_options().get(READ_ONLY):
                writers.acquire()
                connection.info["formpost_writer"] = True

        @event.listens_for(engine, "checkin")
        def _done(_dbapi: Any, record: Any) -> None:
            # After COMMIT or ROLLBACK has run: the connection is back in the
            # pool, its transaction over. Let the next writer in.
            if record.info.pop("formpost_writer", False):
                writers.release()

        @event.listens_for(engine, "checkout")
        def _same_file(_dbapi: Any, record: Any, _proxy: Any) -> None:
            # A pooled connection keeps reading a deleted or replaced file;
            # make the pool reconnect instead (and fail if it is gone).
            if record.info.get("file") != _file_identity(path):
                raise DisconnectionError("the SQLite database file changed")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        if path is not None:
            record.info["file"] = _file_identity(path)
        # Let us issue BEGIN ourselves (below) instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if path is None:  # memory or URI databases: files got WAL at creation
            cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed submission survives power loss, not just a crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front. A deferred transaction that
        # reads first and then writes can fail with "database is locked"
        # without waiting for the busy timeout; this one waits its turn.
        # Read-only work (stats, lists, health) must not take that lock.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def new_receipt() -> str:
    """Return a short, unambiguous receipt id such as 'K7M2-Q9XD'."""
    # 32 letters divide 256 evenly, so each random byte picks one uniformly;
    # one call to the system's generator instead of one per character.
    chars = "".join(RECEIPT_ALPHABET[b % 32] for b in secrets.token_bytes(8))
    return f"{chars[:4]}-{chars[4:]}"


@dataclass(eq=False)
class _Pending:
    """One row waiting for a group commit, and what became of it."""

    stmt: Any
    params: dict[str, Any]
    limited: bool
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    inserted: bool | None = None  # None until its transaction committed
    error: Exception | None = None


class _GroupCommit:
    """Commit the rows of concurrent requests together: one COMMIT, one sync.

    The first request to arrive leads: it takes every row waiting, writes them
    in one transaction and wakes their requests once COMMIT has returned. Rows
    that arrive meanwhile wait for the next leader, chosen among them, so no
    request works on others' behalf for more than one batch. The disk sync
    (synchronous=FULL, or PostgreSQL's WAL flush) is the slow part of a
    commit; sharing it is what lets one process accept many posts per sync.
    """

    def __init__(self, write: Callable[[list[_Pending]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._busy = False

    def run(self, item: _Pending) -> None:
        """Return once `item` is committed, refused or failed."""
        with self._lock:
            self._waiting.append(item)
            follow = self._busy
            self._busy = True
        if follow:
            item.wake.wait()
            if not item.lead:
                return
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            self._write(batch)
        finally:
            for waiting in batch:
                waiting.wake.set()
            with self._lock:
                if self._waiting:
                    self._waiting[0].lead = True
                    self._waiting[0].wake.set()
                else:
                    self._busy = False


class Ledger:
    """Durable storage of submissions and the delivery queue's state changes."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._commits = _GroupCommit(self._write)
        dbapi = engine.dialect.loaded_dbapi
        # Rows run on the driver's cursor raise the driver's own exceptions;
        # a failed COMMIT raises SQLAlchemy's.
        self._integrity_errors = (IntegrityError, dbapi.IntegrityError)
        self._storage_errors = (SQLAlchemyError, dbapi.Error)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads only: on SQLite it does not take the write lock."""
        with self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            yield conn

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
        stmt, params = _insert_statement(row, limits, now)
        item = _Pending(stmt, params, limited=len(params) > len(row))
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
        try:
            refusal = self._which_limit(
                limits or Limits(), form_id, client_ip, alias, now
            )
        except SQLAlchemyError as exc:
            raise StorageError(f"could not read the ledger: {exc}") from exc
        raise refusal

    def _write(self, batch: list[_Pending]) -> None:
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

    def _insert_together(self, batch: list[_Pending]) -> None:
        limited = any(item.limited for item in batch)
        with self._driver_transaction() as cursor:
            if limited and self.engine.dialect.name == "postgresql":
                # Count and insert as one, like SQLite's BEGIN IMMEDIATE:
                # under READ COMMITTED, posts in flight together would each
                # count only what was committed before them.
                cursor.execute(str(_PG_LIMIT_LOCK))
            inserted = []
            for item in batch:
                cursor.execute(*_driver_args(item.stmt, item.params, self.engine))
                # A row comes back, or none when a limit's condition was false
                # (rowcount is not reliable for INSERT ... SELECT on psycopg).
                inserted.append(cursor.fetchone() is not None)
        # Only now, after COMMIT returned, is any row of the batch stored.
        for item, stored in zip(batch, inserted, strict=True):
            item.inserted = stored

    @contextmanager
    def _driver_transaction(self) -> Iterator[Any]:
        """A write transaction on the driver's own connection; yield a cursor.

        For the two hot paths (storing posts, recording delivery outcomes):
        there, SQLAlchemy's Connection (its begin and commit events, its
        statement execution) cost more than the statements themselves. The
        pool still checks the connection out, and SQLite's file check runs;
        the rest is spelled out as the engine's events do it: the writer
        queue and BEGIN IMMEDIATE on SQLite. COMMIT on leaving, ROLLBACK on
        any error.
        """
        dialect = self.engine.dialect
        writers = _WRITERS.get(self.engine)
        if writers is not None:
            writers.acquire()
        try:
            fairy = self.engine.raw_connection()
            try:
                connection = fairy.driver_connection
                cursor = connection.cursor()
                try:
                    if dialect.name == "sqlite":
                        cursor.execute("BEGIN IMMEDIATE")
                    yield cursor
                finally:
                    cursor.close()
                connection.commit()
            except BaseException:
                try:
                    connection.rollback()
                except dialect.loaded_dbapi.Error:
                    fairy.invalidate()  # unusable: the pool opens a new one
                raise
            finally:
                fairy.close()
        finally:
            if writers is not None:
                writers.release()

    def _which_limit(
        self,
        limits: Limits,
        form_id: str,
        client_ip: str | None,
        alias: str,
        now: float,
    ) -> LimitExceeded:
        """Say which limit refused and when trying again makes sense."""
        c = submissions.c
        with self._reading() as conn:

            def oldest_of_last(where: Any, count: int) -> float | None:
                recent = (
                    select(c.created_at)
                    .where(where)
                    .order_by(c.created_at.desc())
                    .limit(count)
                    .subquery()
                )
                found = conn.execute(
                    select(func.count(), func.min(recent.c.created_at))
                ).one()
                return found[1] if found[0] >= count else None

            if limits.backlog:
                undelivered = c.state.in_(("pending", "sending"))
                if oldest_of_last(undelivered, limits.backlog) is not None:
                    return LimitExceeded("backlog", 60, 503)
            for count, seconds in limits.rate:
                if client_ip is None:
                    break
                window = (c.form_id == form_id) & (c.client_ip == client_ip)
                window &= c.created_at > now - seconds
                oldest = oldest_of_last(window, count)
                if oldest is not None:
                    return LimitExceeded("rate", oldest + seconds - now, 429)
            if limits.recipient_daily:
                day = (c.recipient_alias == alias) & (c.created_at > now - 86400)
                oldest = oldest_of_last(day, limits.recipient_daily)
                if oldest is not None:
                    return LimitExceeded("quota", oldest + 86400 - now, 429)
        # Counts moved between the insert and this look: let the client retry.
        return LimitExceeded("rate", 1, 429)

    def _receipt_for(self, dedupe_key: str) -> str | None:
        try:
            with self._reading() as conn:
                return conn.execute(
                    select(submissions.c.receipt).where(
                        submissions.c.dedupe_key == dedupe_key
                    )
                ).scalar()
        except SQLAlchemyError as exc:
            raise StorageError(f"could not read the ledger: {exc}") from exc

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
            with self._driver_transaction() as cursor:
                cursor.execute(*_driver_args(_claim_statement(), params, self.engine))
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
        with self.engine.begin() as conn:
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
            with self._driver_transaction() as cursor:
                for outcome in outcomes:
                    stmt = _settle_statement(tuple(sorted(outcome.values)))
                    params = {
                        "b_id": outcome.row.id,
                        "b_token": outcome.row.claim_token,
                        **outcome.values,
                    }
                    cursor.execute(*_driver_args(stmt, params, self.engine))
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

    def mark_sent(self, row: Claimed, reply: str = "250 accepted") -> bool:
        """Record that the relay accepted the message."""
        return self.settle([self.sent(row, reply)])[0]

    def mark_retry(self, row: Claimed, kind: str, reply: str, delay: float) -> bool:
        """Put the row back in the queue, due after `delay` seconds."""
        return self.settle([self.retry(row, kind, reply, delay)])[0]

    def mark_failed(self, row: Claimed, kind: str, reply: str) -> bool:
        """Dead-letter the row, keeping the relay's reply."""
        return self.settle([self.failed(row, kind, reply)])[0]

    def release(self, rows: Iterable[Claimed]) -> None:
        """Give back rows that were claimed but not attempted (shutdown)."""
        now = self.clock.now()
        self.settle(
            [
                Outcome(row, {"state": "pending", "next_attempt_at": now, "undo": 1})
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
        with self.engine.begin() as conn:
            conn.execute(upsert)

    # -- operators ---------------------------------------------------------

    def stats(self) -> Stats:
        """Count rows by state; find the oldest pending one; read relay health."""
        now = self.clock.now()
        try:
            with self._reading() as conn:
                return self._stats(conn, now)
        except SQLAlchemyError as exc:
            raise StorageError(f"could not read the ledger: {exc}") from exc

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
        with self.engine.begin() as conn:
            result = conn.execute(
                stmt.values(state="pending", next_attempt_at=now, queued_at=now)
            )
        return result.rowcount

    def purge_sent(self, older_than: float) -> int:
        """Delete sent rows whose sent_at is more than `older_than` seconds ago."""
        cutoff = self.clock.now() - older_than
        with self.engine.begin() as conn:
            result = conn.execute(
                submissions.delete().where(
                    submissions.c.state == "sent", submissions.c.sent_at < cutoff
                )
            )
        return result.rowcount

    def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        try:
            with self._reading() as conn:
                conn.execute(select(1))
        except SQLAlchemyError as exc:
            raise StorageError(str(exc)) from exc


# -- schema versions ---------------------------------------------------------
#
# Each entry upgrades the schema by one version and is never edited once
# released: a database at version N runs entries N+1.. in one transaction, so
# every existing row is kept (ALTER/INSERT ... SELECT, never drop-and-create).


def _v1_initial(conn: Connection) -> None:
    v1 = MetaData()
    Table(
        "submissions",
        v1,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("receipt", String(16), nullable=False, unique=True),
        Column("form_id", String(64), nullable=False),
        Column("recipient_alias", String(64), nullable=False),
        Column("mail_from", String(320), nullable=False),
        Column("recipients", Text, nullable=False),
        Column("subject", String(400), nullable=False),
        Column("message_id", String(255), nullable=False, unique=True),
        Column("raw", LargeBinary, nullable=False),
        Column("dedupe_key", String(160), unique=True),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", Float, nullable=False),
        Column("queued_at", Float, nullable=False),
        Column("next_attempt_at", Float, nullable=False),
        Column("lease_until", Float),
        Column("claim_token", String(32)),
        Column("last_attempt_at", Float),
        Column("last_error_kind", String(16)),
        Column("last_reply", Text),
        Column("sent_at", Float),
        Index("ix_submissions_due", "state", "next_attempt_at"),
    )
    Table(
        "relay_health",
        v1,
        Column("key", String(32), primary_key=True),
        Column("failing_since", Float),
        Column("last_error_at", Float),
        Column("last_error_kind", String(16)),
        Column("last_error", Text),
        Column("last_success_at", Float),
    )
    v1.create_all(conn)


def _v2_client_ip(conn: Connection) -> None:
    # Rate limits and quotas are counted in the ledger: these make it cheap.
    conn.exec_driver_sql("ALTER TABLE submissions ADD COLUMN client_ip VARCHAR(64)")
    conn.exec_driver_sql(
        "CREATE INDEX ix_submissions_rate "
        "ON submissions (form_id, client_ip, created_at)"
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_submissions_recipient "
        "ON submissions (recipient_alias, created_at)"
    )


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_initial, _v2_client_ip]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(engine: Engine) -> int:
    """Bring the schema to SCHEMA_VERSION, keeping every row; return the version.

    Safe to run from several processes at once: PostgreSQL takes an advisory
    lock, SQLite's BEGIN IMMEDIATE serialises the upgrade.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7453101)")
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(select(func.max(schema_version.c.version))).scalar()
        current = current or 0
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"database schema is version {current}, newer than this Formpost "
                f"({SCHEMA_VERSION}); upgrade Formpost"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=version))
        return SCHEMA_VERSION


def current_version(engine: Engine) -> int:
    """Return the schema version stored in the database (0 when empty)."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "formpost_schema"):
            return 0
        return conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
