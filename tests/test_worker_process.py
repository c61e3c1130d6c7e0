"""Worker processes for real: several at once, SIGKILL, SIGTERM, idle latency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.headerregistry import Address
from pathlib import Path

import pytest

from app.clock import SystemClock
from app.compose import Submission, compose, new_message_id
from app.ledger import Ledger, make_engine, migrate
from config import parse_mail_from

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def worker_env(relay, database_url: str, tmp_path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "MAIL_"))}
    env.update(relay.env(DATABASE_URL=database_url))
    env.update(
        INSTANCE_PATH=str(tmp_path / "instance"),
        FORMPOST_ENV_FILE=os.devnull,
        OUTBOX_POLL_INTERVAL="0.1",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def open_ledger(database_url: str) -> Ledger:
    engine = make_engine(database_url)
    migrate(engine)
    return Ledger(engine, SystemClock())


def queue(ledger: Ledger, count: int, subject: str = "msg") -> list[str]:
    mail_from = parse_mail_from("Contact form <forms@formpost.test>")
    ids = []
    for n in range(count):
        msg = compose(
            Submission(
                recipient=Address(addr_spec="sales@example.com"),
                subject=f"{subject} {n}",
                message=f"body {n}",
            ),
            mail_from=mail_from,
            message_id=new_message_id(mail_from),
            date=datetime.now(UTC),
        )
        out = msg
        ledger.enqueue(out, form_id="hosted", alias="sales", subject=f"{subject} {n}")
        ids.append(out.message_id)
    return ids


@pytest.fixture
def plain_relay(make_relay):
    """A fast relay for volume tests: plain SMTP on loopback, no AUTH."""
    return make_relay(mode="none", auth=False)


def test_four_workers_deliver_1000_rows_exactly_once(
    plain_relay, database_url, tmp_path
):
    ledger = open_ledger(database_url)
    ids = queue(ledger, 1000)
    env = worker_env(plain_relay, database_url, tmp_path, OUTBOX_BATCH="25")
    logs = [tmp_path / f"worker{n}.log" for n in range(4)]
    workers = [start_worker(env, log) for log in logs]
    try:
        wait_for(lambda: ledger.stats().counts["sent"] == 1000, 180, "1000 rows sent")
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0, 0]
    received = plain_relay.received
    got_ids = [r.message["Message-ID"] for r in received]
    assert len(got_ids) == 1000
    assert len(set(got_ids)) == 1000
    assert set(got_ids) == set(ids)
    assert ledger.stats().counts == {
        "pending": 0,
        "sending": 0,
        "sent": 1000,
        "failed": 0,
        "spam": 0,
        "dropped": 0,
        "deleted": 0,
    }
    output = "\n".join(log.read_text() for log in logs)
    assert "locked" not in output.lower()
    assert "Traceback" not in output
    # Work was shared: more than one worker delivered something.
    busy = [log for log in logs if "delivered receipt=" in log.read_text()]
    assert len(busy) >= 2


def test_killed_worker_mid_transaction_is_taken_over_after_the_lease(
    make_relay, database_url, tmp_path
):
    relay = make_relay()
    relay.handler.data_delay = 30  # the relay holds the DATA transaction
    ledger = open_ledger(database_url)
    (message_id,) = queue(ledger, 1)
    env = worker_env(relay, database_url, tmp_path, OUTBOX_LEASE="4", SMTP_TIMEOUT="3")
    first = start_worker(env, tmp_path / "first.log")
    try:
        assert relay.handler.data_started.wait(20), "first worker never sent DATA"
    finally:
        stop(first, signal.SIGKILL)
    (row,) = ledger.rows()
    assert row.state == "sending" and row.attempts == 1  # held under lease

    relay.handler.data_delay = 0
    second = start_worker(env, tmp_path / "second.log")
    try:
        wait_for(lambda: ledger.rows()[0].state == "sent", 30, "takeover")
    finally:
        assert stop(second) == 0
    (row,) = ledger.rows()
    assert row.attempts == 2
    (got,) = relay.received  # the killed transaction was never accepted
    assert got.message["Message-ID"] == message_id == row.message_id


def test_sigterm_during_a_slow_send_loses_nothing(make_relay, database_url, tmp_path):
    relay = make_relay()
    relay.handler.data_delay = 2
    ledger = open_ledger(database_url)
    ids = queue(ledger, 3)
    env = worker_env(relay, database_url, tmp_path, OUTBOX_BATCH="3")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        assert relay.handler.data_started.wait(20)
    finally:
        started = time.monotonic()
        assert stop(worker, signal.SIGTERM) == 0
    assert time.monotonic() - started < 10  # drained promptly
    states = sorted((r.state, r.attempts) for r in ledger.rows())
    # The message in flight was finished and recorded; the rest went back.
    assert states == [("pending", 0), ("pending", 0), ("sent", 1)]
    assert len(relay.received) == 1

    relay.handler.data_delay = 0
    again = start_worker(env, tmp_path / "again.log")
    try:
        wait_for(lambda: ledger.stats().counts["sent"] == 3, 30, "the rest sent")
    finally:
        assert stop(again) == 0
    got = sorted(r.message["Message-ID"] for r in relay.received)
    assert got == sorted(ids)


def test_idle_worker_delivers_a_new_submission_within_about_a_second(
    plain_relay, database_url, tmp_path
):
    ledger = open_ledger(database_url)
    env = worker_env(plain_relay, database_url, tmp_path)
    env.pop("OUTBOX_POLL_INTERVAL")  # the default: 1 s
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        time.sleep(2)  # idle
        queued = time.monotonic()
        queue(ledger, 1)
        wait_for(lambda: plain_relay.received, 5, "delivery")
        latency = time.monotonic() - queued
    finally:
        assert stop(worker) == 0
    assert latency < 2.0, f"idle delivery took {latency:.2f} s"


def _niceness(pid: int) -> int:
    # Field 19 of /proc/<pid>/stat, counting after the command in parentheses.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


@pytest.mark.parametrize(("setting", "lowered_by"), [(None, 10), ("0", 0), ("19", 19)])
def test_worker_yields_the_cpu_to_the_web_tier(
    plain_relay, database_url, tmp_path, setting, lowered_by
):
    """OUTBOX_NICE: the worker lowers its own priority (10 by default)."""
    env = worker_env(plain_relay, database_url, tmp_path)
    env.pop("OUTBOX_NICE", None)
    if setting is not None:
        env["OUTBOX_NICE"] = setting
    ledger = open_ledger(database_url)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        queue(ledger, 1)
        wait_for(lambda: plain_relay.received, 10, "delivery")  # started and working
        mine = os.nice(0)
        assert _niceness(worker.pid) == min(19, mine + lowered_by)
    finally:
        assert stop(worker) == 0
