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
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import (
    START_TIMEOUT,
    Hit,
    gunicorn_and_worker,
    hold_worker,
    ledger_rows,
    read_hits,
    release,
    server_env,
    wait_until,
)

pytestmark = pytest.mark.slow

WORKERS = 4
LIMIT = 5
POSTS = 12
SITE = "https://www.example.com"
BOOTED_RE = re.compile(r"Booting worker with pid: (\d+)")


@dataclass
class Server:
    """A running gunicorn: its port, logs and ledger."""

    port: int
    log_path: Path
    access_path: Path
    database_url: str

    def hits(self) -> list[Hit]:
        """The access log, parsed."""
        return read_hits(self.access_path)

    def posts(self) -> list[Hit]:
        return [h for h in self.hits() if h.method == "POST"]

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
        return ledger_rows(self.database_url)


@pytest.fixture
def server(request, tmp_path: Path, database_url: str) -> Iterator[Server]:
    """gunicorn with four workers and a delivery worker, on the given database.

    Sync workers unless the test asks for request threads (indirect
    parameter): a sync worker holding half a request takes no other, which
    is how the tests steer posts to particular workers.
    """
    threads = getattr(request, "param", None)
    options = ["--worker-class", "sync", "--threads", "1"] if threads is None else []
    env = server_env(tmp_path / "instance")
    env.update(
        BIND="127.0.0.1:0",
        WEB_CONCURRENCY=str(WORKERS),
        WEB_THREADS=str(threads or 1),
        DATABASE_URL=database_url,
        ALLOWED_ORIGINS=SITE,
        RATE_LIMIT=f"{LIMIT}/minute",
        MIN_FILL_SECONDS="0",
    )
    with gunicorn_and_worker(env, tmp_path, *options) as served:
        log_path = served.log_path
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
        yield Server(served.port, log_path, served.access_path, database_url)


def check_outcome(server: Server, replies: list[tuple[int, str | None, dict]]):
    """Exactly LIMIT accepted, the rest 429 with Retry-After; LIMIT rows stored."""
    statuses = [status for status, _, _ in replies]
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == POSTS - LIMIT, statuses
    for status, retry_after, body in replies:
        if status == 429:
            # The window, rounded up; a racing neighbour may add a second.
            assert retry_after is not None and 1 <= int(retry_after) <= 61
            assert body["ok"] is False
    accepted = sorted(body["id"] for status, _, body in replies if status == 200)
    rows = server.rows()
    assert sorted(r.receipt for r in rows) == accepted
    assert {r.client_ip for r in rows} == {"127.0.0.1"}

    wait_until(
        lambda: len(server.posts()) >= POSTS, 5.0, f"{POSTS} POST access log lines"
    )
    posts = server.posts()
    assert sorted(h.status for h in posts) == sorted(statuses)
    pids = {h.pid for h in posts}
    assert len(pids) > 1, f"all posts were served by one worker: {posts}"


def test_sequential_posts_over_workers(server: Server) -> None:
    """Twelve posts one after another: five 200, seven 429, five rows.

    WORKERS - 1 workers are kept busy with half-sent requests, so each post
    goes to the one free worker; then that worker is held and the longest
    held one released. The posts thus rotate over all four workers.
    """
    held = deque(hold_worker(server.port, settle=0.2) for _ in range(WORKERS - 1))
    replies = []
    try:
        for n in range(POSTS):
            replies.append(server.post(n))
            held.append(hold_worker(server.port, settle=0.2))
            release(held.popleft())
    finally:
        while held:
            release(held.popleft())
    assert [s for s, _, _ in replies] == [200] * LIMIT + [429] * (POSTS - LIMIT)
    check_outcome(server, replies)
    posts = server.posts()
    assert len({h.pid for h in posts}) == WORKERS, posts


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("server", [8], indirect=True)
def test_concurrent_burst_over_workers(server: Server) -> None:
    """Twelve posts at once, raced by four workers of eight threads: five accepted.

    Posts that land in one worker together share a commit; the limit is
    counted row by row inside it.

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
    assert [s for s, _, _ in first] == [200] * (LIMIT - 1)
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
    assert statuses == [200] + [429] * (WORKERS - 1)
