"""Rate limits hold across gunicorn workers: the count lives in the ledger.

gunicorn runs wsgi:app with four workers and RATE_LIMIT=5/minute, on a SQLite
file and on PostgreSQL (the conftest `database_url` fixture). Posts arrive on
fresh connections and are steered over all workers (the access log names each
worker's pid); however they are spread, exactly five are accepted. On
PostgreSQL a test-only trigger also makes posts overlap inside the database."""

from __future__ import annotations

import http.client
import json
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.clock import SystemClock
from app.ledger import Ledger, make_engine

from .test_wsgi import server_env, start, stop, wait_until

pytestmark = pytest.mark.slow

START_TIMEOUT = 20.0
WORKERS = 4
LIMIT = 5
POSTS = 12
SITE = "https://www.example.com"
LISTENING_RE = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
BOOTED_RE = re.compile(r"Booting worker with pid: (\d+)")
ACCESS_FORMAT = "%(p)s %(m)s %(U)s %(s)s"
ACCESS_RE = re.compile(r"^<(\d+)> (\S+) (\S+) (\d{3})$")


@dataclass
class Server:
    """A running gunicorn: its port, logs and ledger."""

    port: int
    log_path: Path
    access_path: Path
    database_url: str

    def hits(self) -> list[tuple[int, str, str, int]]:
        """The access log as (pid, method, path, status)."""
        if not self.access_path.exists():
            return []
        hits = []
        for line in self.access_path.read_text().splitlines():
            match = ACCESS_RE.match(line.strip())
            assert match, f"unexpected access log line: {line!r}"
            pid, method, path, status = match.groups()
            hits.append((int(pid), method, path, int(status)))
        return hits

    def posts(self) -> list[tuple[int, str, str, int]]:
        return [h for h in self.hits() if h[1] == "POST"]

    def post(self, n: int) -> tuple[int, str | None, dict]:
        """POST one JSON submission on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = {
                "name": "Ada Lovelace",
                "email": "ada@example.net",
                "message": f"Post number {n}.",
            }
            conn.request(
                "POST",
                "/f/default",
                body=json.dumps(body).encode(),
                headers={
                    "Origin": SITE,
                    "Accept": "application/json",
                    "Content-Type": "application/json",
                    "Connection": "close",
                },
            )
            resp = conn.getresponse()
            return resp.status, resp.getheader("Retry-After"), json.loads(resp.read())
        finally:
            conn.close()

    def rows(self) -> list:
        engine = make_engine(self.database_url)
        try:
            return Ledger(engine, SystemClock()).rows(limit=1000)
        finally:
            engine.dispose()


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    """gunicorn with four workers and a delivery worker, on the given database."""
    env = server_env(tmp_path / "instance")
    env.update(
        BIND="127.0.0.1:0",
        WEB_CONCURRENCY=str(WORKERS),
        DATABASE_URL=database_url,
        ALLOWED_ORIGINS=SITE,
        RATE_LIMIT=f"{LIMIT}/minute",
        MIN_FILL_SECONDS="0",
    )
    log_path = tmp_path / "gunicorn.log"
    access_path = tmp_path / "access.log"
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "wsgi:app",
        "--no-control-socket",
        "--access-logfile",
        str(access_path),
        "--access-logformat",
        ACCESS_FORMAT,
        "--graceful-timeout",
        "5",
    ]
    proc = start(cmd, env, log_path)
    worker = start(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
        env,
        tmp_path / "worker.log",
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            match = LISTENING_RE.search(log_path.read_text(errors="replace"))
            port = int(match.group(1)) if match else time.sleep(0.05)
        assert port, f"gunicorn did not start:\n{log_path.read_text()}"
        # Every worker has loaded the app (and migrated the schema) before
        # the first post, so all four compete for connections.
        wait_until(
            lambda: (
                len(BOOTED_RE.findall(log_path.read_text())) >= WORKERS
                and log_path.read_text().count("development mode") >= WORKERS
            ),
            START_TIMEOUT,
            f"{WORKERS} workers to load the app",
        )
        yield Server(port, log_path, access_path, database_url)
    finally:
        stop(worker)
        stop(proc)


def check_outcome(server: Server, replies: list[tuple[int, str | None, dict]]):
    """Exactly LIMIT accepted, the rest 429 with Retry-After; LIMIT rows stored."""
    statuses = [status for status, _, _ in replies]
    assert statuses.count(202) == LIMIT, statuses
    assert statuses.count(429) == POSTS - LIMIT, statuses
    for status, retry_after, body in replies:
        if status == 429:
            # The window, rounded up; a racing neighbour may add a second.
            assert retry_after is not None and 1 <= int(retry_after) <= 61
            assert body["ok"] is False
    accepted = sorted(body["id"] for status, _, body in replies if status == 202)
    rows = server.rows()
    assert sorted(r.receipt for r in rows) == accepted
    assert {r.client_ip for r in rows} == {"127.0.0.1"}

    wait_until(
        lambda: len(server.posts()) >= POSTS, 5.0, f"{POSTS} POST access log lines"
    )
    posts = server.posts()
    assert sorted(h[3] for h in posts) == sorted(statuses)
    pids = {h[0] for h in posts}
    assert len(pids) > 1, f"all posts were served by one worker: {posts}"


def _hold(port: int) -> socket.socket:
    """Send half a request: the sync worker that accepts it waits on it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    time.sleep(0.2)  # let a worker accept it
    return sock


def _release(sock: socket.socket) -> None:
    """Finish the held request and read the answer: its worker is free again."""
    with sock:
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]


def test_sequential_posts_over_workers(server: Server) -> None:
    """Twelve posts one after another: five 202, seven 429, five rows.

    WORKERS - 1 workers are kept busy with half-sent requests, so each post
    goes to the one free worker; then that worker is held and the longest
    held one released. The posts thus rotate over all four workers.
    """
    held = deque(_hold(server.port) for _ in range(WORKERS - 1))
    replies = []
    try:
        for n in range(POSTS):
            replies.append(server.post(n))
            held.append(_hold(server.port))
            _release(held.popleft())
    finally:
        while held:
            _release(held.popleft())
    assert [s for s, _, _ in replies] == [202] * LIMIT + [429] * (POSTS - LIMIT)
    check_outcome(server, replies)
    posts = server.posts()
    assert len({h[0] for h in posts}) == WORKERS, posts


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_concurrent_burst_over_workers(server: Server) -> None:
    """Twelve posts at once, raced by four workers: still exactly five accepted.

    SQLite only: on PostgreSQL a burst races by chance; the gated test below
    makes that race happen every time.
    """
    with ThreadPoolExecutor(max_workers=POSTS) as pool:
        replies = list(pool.map(server.post, range(POSTS)))
    check_outcome(server, replies)


GATE_LOCK = 7453999
GATE_SQL = f"""
CREATE FUNCTION formpost_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_lock_shared({GATE_LOCK});
    PERFORM pg_advisory_unlock_shared({GATE_LOCK});
    RETURN NEW;
END $$;
CREATE TRIGGER formpost_test_gate BEFORE INSERT ON submissions
    FOR EACH ROW EXECUTE FUNCTION formpost_test_gate();
"""
BLOCKED_SQL = (
    "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity "
    "WHERE cardinality(pg_blocking_pids(pid)) > 0"
)


def blocked_behind(conn, root: int) -> int:
    """Count backends waiting on `root`, directly or behind another waiter.

    Other tests may share the server, so only this chain counts.
    """
    waiting = [(pid, set(blockers)) for pid, blockers in conn.execute(BLOCKED_SQL)]
    chain = {root}
    grew = True
    while grew:
        grew = False
        for pid, blockers in waiting:
            if pid not in chain and blockers & chain:
                chain.add(pid)
                grew = True
    return len(chain) - 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_racing_posts_on_postgresql(server: Server) -> None:
    """Four posts in flight at once, when one more is allowed: one is accepted.

    A BEFORE INSERT trigger (test-only, in the throw-away schema) holds every
    insert at a gate until all four workers are inside their INSERT, which
    makes the overlap that real load produces by chance happen every time.
    """
    import psycopg

    first = [server.post(n) for n in range(LIMIT - 1)]
    assert [s for s, _, _ in first] == [202] * (LIMIT - 1)
    conninfo = server.database_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(conninfo, autocommit=True) as gate:
        gate.execute(GATE_SQL)
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        gate_pid = gate.execute("SELECT pg_backend_pid()").fetchone()[0]
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            racing = [pool.submit(server.post, n) for n in range(WORKERS)]
            try:
                wait_until(
                    lambda: blocked_behind(gate, gate_pid) >= WORKERS,
                    10.0,
                    f"{WORKERS} inserts to wait at the gate",
                )
            finally:
                gate.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))
            replies = [f.result(timeout=30) for f in racing]
    statuses = sorted(s for s, _, _ in replies)
    assert len(server.rows()) == LIMIT, statuses
    assert statuses == [202] + [429] * (WORKERS - 1)
