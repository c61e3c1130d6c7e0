"""What a durable commit costs on this machine, with no Python web stack above it.

    python bench/commit_floor.py [--rows N]

Several processes insert rows shaped like Formpost's into the ledger's own
schema with plain sqlite3, the way the request path does (flock writer queue,
BEGIN IMMEDIATE, synchronous=FULL), one row per commit and then several, and
print the CPU each row costs them. The first figure is the floor for one
commit per request; compare it with the bare endpoint's CPU per request.
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.ledger import make_engine, migrate  # noqa: E402

COLUMNS = (
    "receipt, form_id, recipient_alias, mail_from, recipients, subject, "
    "message_id, raw, dedupe_key, state, attempts, created_at, queued_at, "
    "next_attempt_at, client_ip"
)
INSERT = f"INSERT INTO submissions ({COLUMNS}) VALUES ({', '.join('?' * 15)})"
RAW = b"x" * 2000  # the benchmark's post, composed, is about 2 KB


def row_values(key: str, now: float, raw: bytes = RAW) -> tuple:
    """The values of INSERT for one row shaped like a benchmark submission."""
    values = (key, "default", "sales", "bench@formpost.test", "sales@example.com")
    values += ("Benchmark", f"<{key}@formpost.test>", raw, None, "pending", 0)
    return (*values, now, now, now, "127.0.0.1")


def writer(path: str, rows: int, batch: int, name: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    lock = os.open(path + "-writer", os.O_RDWR | os.O_CREAT, 0o600)
    for i in range(rows // batch):
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn.execute("BEGIN IMMEDIATE")
        for j in range(batch):
            conn.execute(INSERT, row_values(f"{name}-{i}-{j}", time.time()))
        conn.execute("COMMIT")
        fcntl.flock(lock, fcntl.LOCK_UN)
    conn.close()


def measure(processes: int, batch: int, rows: int = 2000) -> tuple[float, float]:
    """Return (rows per second, CPU microseconds per row) for one setting."""
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        path = f"{tmp}/floor.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        engine.dispose()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        procs = [
            multiprocessing.Process(target=writer, args=(path, rows, batch, str(n)))
            for n in range(processes)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = processes * rows
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return total / elapsed, cpu / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows per process")
    rows = parser.parse_args().rows
    print(f"{'processes':>9} {'rows/commit':>11} {'rows/s':>8} {'CPU µs/row':>11}")
    for processes, batch in ((1, 1), (4, 1), (4, 4), (4, 8)):
        rate, cpu = measure(processes, batch, rows)
        print(f"{processes:>9} {batch:>11} {rate:>8.0f} {cpu:>11.0f}")


if __name__ == "__main__":
    main()
