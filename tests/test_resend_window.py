"""The re-send window: how many messages a worker's death sends twice.

A worker records the relay's 250s in the ledger a little after it gets them
(app/outbox.py, _Recorder). Messages the relay accepted but the ledger does
not know are sent again after the lease. The README promises at most
RESEND_BOUND; these tests kill real worker processes (SIGKILL) under load, at
random moments and during a database outage, and count the duplicates the
relay received.
"""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import time
import uuid

import pytest

from app.outbox import RESEND_BOUND

from .relay import Relay
from .test_worker_process import (
    open_ledger,
    queue,
    start_worker,
    stop,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.slow

MESSAGE_ID = re.compile(rb"^Message-ID: *(\S+)", re.IGNORECASE | re.MULTILINE)
# A killed worker's rows come back after 10 s. The lease is extended only
# when less than SMTP_TIMEOUT + 5 s of it is left, so a batch is sent without
# a write per message, as in production.
FAST = {
    "OUTBOX_BATCH": "300",
    "SMTP_TIMEOUT": "1",
    "OUTBOX_LEASE": "10",
    "OUTBOX_POLL_INTERVAL": "0.05",
}


@pytest.fixture
def plain_relay(make_relay) -> Relay:
    """A fast relay: plain SMTP on loopback, no AUTH."""
    return make_relay(mode="none", auth=False)


def received_ids(relay: Relay, wanted: set[str]) -> list[str]:
    """Message-IDs of the relay's messages among `wanted`, repeats included."""
    found = []
    for message in relay.received:
        match = MESSAGE_ID.search(message.data)
        if match and match.group(1).decode() in wanted:
            found.append(match.group(1).decode())
    return found


def sent_count(ledger, wanted: set[str]) -> int:
    return sum(
        1 for row in ledger.rows(state="sent", limit=10_000) if row.message_id in wanted
    )


def duplicates(relay: Relay, wanted: set[str]) -> int:
    ids = received_ids(relay, wanted)
    assert set(ids) == wanted, "every message arrives"
    return len(ids) - len(wanted)


def finish(ledger, env, tmp_path, wanted: set[str], name: str) -> None:
    """Run a fresh worker until every wanted row is sent, then stop it."""
    worker = start_worker(env, tmp_path / f"{name}.log")
    try:
        wait_for(lambda: sent_count(ledger, wanted) == len(wanted), 90, "all sent")
    finally:
        stop(worker)


def test_sigkill_at_random_moments_resends_at_most_the_bound(
    plain_relay, database_url, tmp_path
):
    ledger = open_ledger(database_url)
    env = worker_env(plain_relay, database_url, tmp_path, **FAST)
    seed = random.randrange(10**6)
    rand = random.Random(seed)
    counts = []
    for round_ in range(3):
        wanted = set(queue(ledger, 150, subject=f"round {round_}"))
        worker = start_worker(env, tmp_path / f"killed{round_}.log")
        try:
            wait_for(lambda w=wanted: received_ids(plain_relay, w), 60, "first message")
            time.sleep(rand.uniform(0, 0.25))  # somewhere in the run
        finally:
            stop(worker, signal.SIGKILL)
        finish(ledger, env, tmp_path, wanted, f"after{round_}")
        counts.append(duplicates(plain_relay, wanted))
    print(f"duplicates per kill: {counts} (seed {seed})")
    assert max(counts) <= RESEND_BOUND, f"duplicates {counts} (seed {seed})"


def _hold_sqlite_write_lock(path: str) -> sqlite3.Connection:
    """Another process's writer: BEGIN IMMEDIATE, held until rolled back."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_locked_database_stops_sending_and_a_kill_then_resends_the_bound(
    plain_relay, tmp_path
):
    path = f"{tmp_path}/ledger.db"
    url = f"sqlite:///{path}"
    ledger = open_ledger(url)
    env = worker_env(plain_relay, url, tmp_path, **FAST)
    wanted = set(queue(ledger, 300))
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: len(received_ids(plain_relay, wanted)) >= 10, 60, "sending")
        lock = _hold_sqlite_write_lock(path)
        try:
            time.sleep(1.0)
            at_first = len(received_ids(plain_relay, wanted))
            time.sleep(1.0)
            # While outcomes cannot be recorded, the worker stops sending...
            assert len(received_ids(plain_relay, wanted)) == at_first
            # ...after no more than the bound beyond what the ledger knows.
            unrecorded = at_first - sent_count(ledger, wanted)
            assert 0 < unrecorded <= RESEND_BOUND, unrecorded
        finally:
            stop(worker, signal.SIGKILL)
            lock.rollback()
            lock.close()
    finally:
        stop(worker, signal.SIGKILL)
    finish(ledger, env, tmp_path, wanted, "after")
    assert duplicates(plain_relay, wanted) <= RESEND_BOUND


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_connections_killed_while_recording_lose_no_outcome(
    plain_relay, database_url, tmp_path
):
    import psycopg

    name = f"formpost-resend-{uuid.uuid4().hex[:8]}"
    url = f"{database_url}&application_name={name}"
    ledger = open_ledger(database_url)
    env = worker_env(plain_relay, url, tmp_path, **FAST)
    wanted = set(queue(ledger, 300))
    admin_url = database_url.split("?")[0].replace("postgresql+psycopg", "postgresql")
    worker = start_worker(env, tmp_path / "worker.log")
    terminated = 0
    try:
        wait_for(lambda: len(received_ids(plain_relay, wanted)) >= 10, 60, "sending")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                cur = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                )
                terminated += cur.fetchone()[0]
                time.sleep(0.03)
        wait_for(lambda: sent_count(ledger, wanted) == len(wanted), 90, "all sent")
    finally:
        stop(worker)
    assert terminated > 0
    # Outcomes that failed to commit were committed again, not dropped: no row
    # came back after its lease to be sent a second time.
    assert duplicates(plain_relay, wanted) <= RESEND_BOUND
    assert "trying again" in (tmp_path / "worker.log").read_text()
