"""A durable endpoint with cross-process group commit, for bench/ceiling.py.

    python bench/committer.py DATABASE SOCKET    # the committer process
    gunicorn --pythonpath bench committer:app    # the endpoint (COMMITTER_SOCKET)

The endpoint is bench/bare.py's, plus one row sent to a committer process over
a Unix socket; it answers once the committer says the row is committed. The
committer owns the SQLite file (the ledger's schema, synchronous=FULL) and
writes every row that arrived since its last commit in one transaction: posts
from all web workers share one disk sync, with no threads in the workers.

A benchmark instrument, not a part of Formpost: it measures how far that
architecture could take a durable endpoint on this machine at best, with no
validation, composition or error handling.
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import sqlite3
import struct
import sys
import threading
import time
from pathlib import Path

from flask import Flask, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from commit_floor import INSERT, RAW, row_values  # noqa: E402

from app.ledger import make_engine, migrate  # noqa: E402

HEADER = struct.Struct("!I16sd")  # length of the raw message, receipt, time

app = Flask(__name__)
_local = threading.local()


def _committer() -> socket.socket:
    sock = getattr(_local, "sock", None)
    if sock is None:
        sock = _local.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(os.environ["COMMITTER_SOCKET"])
    return sock


@app.post("/f/default")
def submit():
    fields = list(request.form.items(multi=True))
    receipt = secrets.token_hex(8).encode()
    sock = _committer()
    sock.sendall(HEADER.pack(len(RAW), receipt, time.time()) + RAW)
    if sock.recv(1) != b"k":
        raise RuntimeError("the committer did not confirm the row")
    return jsonify(ok=True, id=str(len(fields))), 200


def serve(database: str, path: str) -> None:
    """Commit what every connected worker sent, one transaction per wake-up."""
    engine = make_engine(f"sqlite:///{database}")
    migrate(engine)
    engine.dispose()
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(256)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytes] = {}
    while True:
        rows, waiting = [], []
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                client, _ = listener.accept()
                selector.register(client, selectors.EVENT_READ)
                pending[client] = b""
                continue
            data = sock.recv(1 << 16)  # type: ignore[union-attr]
            if not data:
                selector.unregister(sock)
                sock.close()
                del pending[sock]
                continue
            buffer = pending[sock] + data
            while len(buffer) >= HEADER.size:
                size, receipt, at = HEADER.unpack_from(buffer)
                end = HEADER.size + size
                if len(buffer) < end:
                    break
                raw = buffer[HEADER.size : end]
                rows.append(row_values(receipt.decode(), at, raw))
                waiting.append(sock)
                buffer = buffer[end:]
            pending[sock] = buffer
        if rows:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT, rows)
            db.execute("COMMIT")
            for sock in waiting:
                sock.sendall(b"k")


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
