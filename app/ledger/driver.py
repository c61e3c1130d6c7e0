"""Engines, SQLite's locking, and the raw driver transaction.

This is the one module that goes around SQLAlchemy, and why: on the hot
paths (storing a post, claiming rows, recording outcomes) SQLAlchemy's
per-execution work (its Connection, begin/commit events, cache lookup,
parameter processing, result wrapping) cost more than the statements
themselves. So statements are still built and compiled by SQLAlchemy Core,
once per dialect (`dbapi_form`), and run on the driver's own cursor inside
`driver_transaction`, which spells out what the engine's events do: SQLite's
writer queue and BEGIN IMMEDIATE. Everything else in the package uses
SQLAlchemy Connections as usual.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from ..errors import StorageError

READ_ONLY = "formpost_read_only"


@functools.lru_cache(maxsize=64)
def dbapi_form(stmt: Any, dialect: Any) -> tuple[str, tuple[str, ...] | None, dict]:
    """Compile a statement once per dialect: SQL text, parameter order, constants.

    Every bound value here is a str, int, float, bytes or None, which the
    drivers take as they are.
    """
    compiled = stmt.compile(dialect=dialect)
    binds = compiled.bind_names.items()
    constants = {name: bind.value for bind, name in binds if not bind.required}
    order = tuple(compiled.positiontup) if compiled.positional else None
    return compiled.string, order, constants


def driver_args(stmt: Any, params: dict[str, Any], engine: Engine) -> tuple[str, Any]:
    """The SQL text and parameters for running `stmt` on the driver's cursor."""
    sql, order, constants = dbapi_form(stmt, engine.dialect)
    values = {**constants, **params}
    return sql, values if order is None else [values[k] for k in order]


def default_url(instance_path: str) -> str:
    """Return the embedded default: a SQLite file in the instance folder."""
    return f"sqlite:///{instance_path}/formpost.db"


def make_engine(url: str) -> Engine:
    """Create an engine; on SQLite set WAL, synchronous=FULL and a busy timeout.

    Raise StorageError for a URL SQLAlchemy cannot use or a SQLite file that
    cannot be created.
    """
    try:
        return _make_engine(url)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise StorageError(f"could not open the database: {exc}") from exc


def _make_engine(url: str) -> Engine:
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

    def close(self) -> None:
        """Close the lock file (reopened by the next writer, if any)."""
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# The writer queue of each SQLite file engine, for driver_transaction.
_WRITERS: weakref.WeakKeyDictionary[Engine, _WriterQueue] = weakref.WeakKeyDictionary()


def _tune_sqlite(engine: Engine, path: str | None) -> None:
    if path is not None:
        writers = _WRITERS[engine] = _WriterQueue(path)
        # The lock file's descriptor goes with the engine's connections: when
        # it is disposed, and when it is garbage.
        event.listen(engine, "engine_disposed", lambda _engine: writers.close())
        weakref.finalize(engine, writers.close)

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


@contextmanager
def driver_transaction(engine: Engine) -> Iterator[Any]:
    """A write transaction on the driver's own connection; yield a cursor.

    The pool still checks the connection out, and SQLite's file check runs;
    the rest is spelled out as the engine's events do it: the writer queue
    and BEGIN IMMEDIATE on SQLite. COMMIT on leaving, ROLLBACK on any error.
    """
    dialect = engine.dialect
    writers = _WRITERS.get(engine)
    if writers is not None:
        writers.acquire()
    try:
        fairy = engine.raw_connection()
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


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only: on SQLite it does not take the write lock.

    A database error inside leaves as StorageError.
    """
    try:
        with engine.connect() as conn:
            conn.execution_options(**{READ_ONLY: True})
            yield conn
    except SQLAlchemyError as exc:
        raise StorageError(f"could not read the ledger: {exc}") from exc


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction through SQLAlchemy, for the paths that are not hot.

    A database error inside leaves as StorageError; nothing is committed.
    """
    try:
        with engine.begin() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise StorageError(f"could not write to the ledger: {exc}") from exc
