"""The durability floor: bare Flask plus one durable SQLite commit per post.

The same route and body as bench/bare.py, and under the same gunicorn
settings; after parsing the form it stores one row shaped like Formpost's in
the ledger's own schema, the way the ledger does on SQLite (a writer lock
between threads and processes, BEGIN IMMEDIATE, synchronous=FULL, COMMIT)
with plain sqlite3 and no Formpost code on the path. No validation, no
composition, no group commit. Whatever any durable endpoint costs on this
machine and server, this costs at least.

With a postgresql+psycopg:// DATABASE_URL (bench/ceiling.py --postgres) the
row goes to PostgreSQL instead: one INSERT and one COMMIT per post through
psycopg, each thread on its own connection.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import sys
import threading
import time
from pathlib import Path

from flask import Flask, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from commit_floor import INSERT, row_values  # noqa: E402

from app.ledger import make_engine, migrate  # noqa: E402

URL = os.environ["DATABASE_URL"]
POSTGRES = URL.startswith("postgresql")
_engine = make_engine(URL)
migrate(_engine)
_engine.dispose()

app = Flask(__name__)
_local = threading.local()
if POSTGRES:
    import psycopg

    INSERT_PG = INSERT.replace("?", "%s")
else:
    PATH = URL.removeprefix("sqlite:///")
    _writer = threading.Lock()
    _writer_fd = os.open(f"{PATH}-writer", os.O_RDWR | os.O_CREAT, 0o600)


def _connection() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(PATH, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
    return conn


def _store_in_postgres(row: tuple) -> None:
    conn = getattr(_local, "pg", None)
    if conn is None:
        plain = URL.replace("postgresql+psycopg", "postgresql")
        conn = _local.pg = psycopg.connect(plain)
    conn.execute(INSERT_PG, row)
    conn.commit()


@app.post("/f/default")
def submit():
    fields = list(request.form.items(multi=True))
    row = row_values(secrets.token_hex(8), time.time())
    if POSTGRES:
        _store_in_postgres(row)
        return jsonify(ok=True, id=str(len(fields))), 200
    conn = _connection()
    with _writer:
        fcntl.flock(_writer_fd, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")
        finally:
            fcntl.flock(_writer_fd, fcntl.LOCK_UN)
    return jsonify(ok=True, id=str(len(fields))), 200
