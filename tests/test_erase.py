"""Retry now, erase to a tombstone, by receipt and by filter; retention."""

from __future__ import annotations

import os
import threading
import time

import pytest
from sqlalchemy import text

from app.clock import SystemClock
from app.errors import StorageError
from app.ledger import Filters, Ledger, make_engine, migrate
from app.ledger import actions as actions_module
from app.maildir import MaildirTransport
from app.outbox import OutboxSettings, Worker
from config import ConfigError, load_config

from .helpers import PG_URL, mark_failed, mark_retry, mark_sent, postgres_or_skip
from .storekit import endpoint, hosted, store

DAY = 86400.0


def backlog(ledger: Ledger) -> int:
    """The counter, checked against the rows it counts."""
    with ledger.engine.connect() as conn:
        counter = conn.execute(
            text("SELECT value FROM ledger_counters WHERE name = 'backlog'")
        ).scalar()
        counted = conn.execute(
            text(
                "SELECT count(*) FROM submissions WHERE state IN ('pending', 'sending')"
            )
        ).scalar()
    assert counter == counted
    return counter


def indexed(ledger: Ledger) -> int:
    """How many rows the full-text index holds."""
    with ledger.engine.connect() as conn:
        if ledger.engine.dialect.name == "sqlite":
            sql = "SELECT count(*) FROM submission_search"
        else:
            sql = "SELECT count(*) FROM submissions WHERE search IS NOT NULL"
        return conn.execute(text(sql)).scalar()


def test_erase_leaves_a_tombstone(ledger, clock):
    post = endpoint(
        (("name", "Bob"), ("email", "bob@example.org"), ("message", "secret")),
        client_ip="203.0.113.7",
        origin="https://www.example.com",
        user_agent="Agent/1",
    )
    receipt = store(ledger, post)
    keep = store(ledger, hosted(message="secret too"))
    created = ledger.row(receipt).created_at
    clock.advance(30)
    assert ledger.erase([receipt]) == 1
    detail = ledger.detail(receipt)
    assert detail.erased and detail.row.erased_at == clock.now()
    assert (detail.row.receipt, detail.row.form_id, detail.row.created_at) == (
        receipt,
        "site",
        created,
    )
    assert detail.row.state == "deleted"
    assert detail.fields is None and detail.raw is None
    for column in ("name", "email", "message", "fields", "user_agent", "client_ip"):
        assert getattr(detail.row, column) is None, column
    assert detail.row.subject == ""
    with ledger.engine.connect() as conn:
        raw = conn.execute(
            text("SELECT raw FROM submissions WHERE receipt = :r"), {"r": receipt}
        ).scalar()
    assert bytes(raw) == b""
    assert [r.receipt for r in ledger.search("secret").rows] == [keep]
    assert [r.receipt for r in ledger.search("bob").rows] == []
    assert indexed(ledger) == 1
    assert ledger.search(state="deleted").rows[0].receipt == receipt
    assert ledger.erase([receipt]) == 0  # already a tombstone
    assert ledger.erase(["NONE-XIST"]) == 0


@pytest.mark.parametrize("state", ["pending", "sending", "sent", "failed"])
def test_the_backlog_counter_stays_right_whatever_is_erased(ledger, state):
    receipt = store(ledger, hosted(1))
    store(ledger, hosted(2))  # stays pending throughout
    if state != "pending":
        (row,) = ledger.claim(1, 60)
        if state == "sent":
            mark_sent(ledger, row)
        elif state == "failed":
            mark_failed(ledger, row, "permanent", "550 no")
    assert ledger.row(receipt).state == state
    before = backlog(ledger)
    assert ledger.erase([receipt]) == 1
    assert backlog(ledger) == before - (state in ("pending", "sending"))
    assert ledger.stats().counts["deleted"] == 1


def test_a_row_erased_while_being_sent_keeps_its_tombstone(ledger):
    receipt = store(ledger, hosted())
    (row,) = ledger.claim(1, 60)
    assert ledger.erase([receipt]) == 1
    assert not mark_sent(ledger, row)  # the worker's outcome finds it gone
    assert ledger.row(receipt).state == "deleted"
    assert backlog(ledger) == 0
    assert ledger.claim(1, 60) == []


def test_retry_now_makes_pending_and_failed_due_and_leaves_the_rest(ledger, clock):
    waiting, failed, sending, sent = (store(ledger, hosted(n)) for n in range(4))
    rows = {r.receipt: r for r in ledger.claim(4, 60)}
    assert mark_retry(ledger, rows[waiting], "transient", "451", 3600)
    assert mark_failed(ledger, rows[failed], "permanent", "550")
    assert mark_sent(ledger, rows[sent])
    assert backlog(ledger) == 2  # waiting, sending
    clock.advance(5)
    assert ledger.retry_now([waiting, failed, sending, sent]) == 2
    assert backlog(ledger) == 3
    assert ledger.row(failed).state == "pending"
    assert ledger.row(waiting).next_attempt_at == clock.now()
    assert (ledger.row(sending).state, ledger.row(sent).state) == ("sending", "sent")
    due = {r.receipt for r in ledger.claim(10, 60)}
    assert due == {waiting, failed}


def test_actions_by_filter_run_in_bounded_batches(ledger, monkeypatch):
    monkeypatch.setattr(actions_module, "BATCH", 3)
    spam = [store(ledger, hosted(n, message=f"buy pills {n}")) for n in range(8)]
    ham = [store(ledger, hosted(n, message=f"real question {n}")) for n in range(2)]
    calls = []
    erase = actions_module.erase

    def counting(conn, ids, now):
        calls.append(len(ids))
        return erase(conn, ids, now)

    monkeypatch.setattr(actions_module, "erase", counting)
    assert ledger.erase_matching(Filters(query="pills")) == 8
    assert max(calls) <= 3 and sum(calls) == 8
    assert {r.receipt for r in ledger.search(state="deleted", limit=50).rows} == set(
        spam
    )
    assert [r.receipt for r in ledger.search("question").rows] == ham[::-1]
    assert backlog(ledger) == 2


def test_retry_by_filter_moves_only_the_matching_failed_rows(ledger):
    receipts = [
        store(ledger, endpoint((("message", f"m{n}"),), form_id=f"form{n % 2}"))
        for n in range(6)
    ]
    for row in ledger.claim(6, 60):
        mark_failed(ledger, row, "permanent", "550")
    assert ledger.retry_matching(Filters(form="form1", state="failed")) == 3
    states = {r: ledger.row(r).state for r in receipts}
    assert [states[r] for r in receipts] == ["failed", "pending"] * 3
    assert backlog(ledger) == 3


def test_retention_erases_only_old_delivered_rows_and_keeps_the_counts(ledger, clock):
    old_sent, old_failed, old_pending = (store(ledger, hosted(n)) for n in range(3))
    rows = {r.receipt: r for r in ledger.claim(2, 60)}
    mark_sent(ledger, rows[old_sent])
    mark_failed(ledger, rows[old_failed], "permanent", "550")
    day = int(clock.now() // DAY)
    clock.advance(40 * DAY)
    new_sent = store(ledger, hosted(4))
    (row,) = [r for r in ledger.claim(5, 60) if r.receipt == new_sent]
    mark_sent(ledger, row)
    assert ledger.erase_delivered_before(clock.now() - 30 * DAY) == 1
    states = [ledger.row(r).state for r in (old_sent, old_failed, old_pending)]
    assert states == ["deleted", "failed", "sending"]
    assert ledger.row(new_sent).state == "sent"
    counts = dict(((f, d), c) for f, d, c in ledger.daily_counts(day))
    assert counts == {("hosted", day): 3, ("hosted", day + 40): 1}


def test_the_worker_applies_retention_at_most_daily(ledger, clock, tmp_path):
    settings = OutboxSettings(retention_days=30)
    transport = MaildirTransport(str(tmp_path / "maildir"))
    worker = Worker(ledger, transport, settings, clock)
    first = store(ledger, hosted(1))
    clock.advance(DAY)
    second = store(ledger, hosted(2))
    for row in ledger.claim(2, 60):
        mark_sent(ledger, row)
    clock.advance(30 * DAY)
    assert worker.retain() == 1  # the first is over 30 days old, the second not
    assert ledger.row(second).state == "sent"
    clock.advance(DAY - 10)
    assert worker.retain() == 0  # less than a day since the last run
    assert ledger.row(second).state == "sent"
    clock.advance(10)
    assert worker.retain() == 1
    assert [ledger.row(r).state for r in (first, second)] == ["deleted"] * 2
    off = Worker(ledger, transport, OutboxSettings(), clock)
    assert off.retain() == 0


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "36501", "thirty"])
def test_retention_days_is_parsed_strictly(value):
    with pytest.raises(ConfigError, match="RETENTION_DAYS"):
        load_config({"RETENTION_DAYS": value})


def test_retention_is_off_by_default():
    assert load_config({})["RETENTION_DAYS"] == 0
    assert load_config({"RETENTION_DAYS": "90"})["RETENTION_DAYS"] == 90


def test_purge_takes_the_timeline_and_search_entry_with_the_row(ledger, clock):
    gone = store(ledger, hosted(1, message="purgeable"))
    kept = store(ledger, hosted(2, message="purgeable"))
    rows = {r.receipt: r for r in ledger.claim(2, 60)}
    mark_sent(ledger, rows[gone])
    clock.advance(10 * DAY)
    mark_sent(ledger, rows[kept])
    assert ledger.purge_sent(5 * DAY) == 1
    assert [r.receipt for r in ledger.search("purgeable").rows] == [kept]
    assert indexed(ledger) == 1
    with ledger.engine.connect() as conn:
        attempts = conn.execute(text("SELECT count(*) FROM delivery_attempts"))
        assert attempts.scalar() == 1
    assert len(ledger.detail(kept).attempts) == 1


def test_the_cli_lists_and_counts_tombstones(make_app, database_url):
    app = make_app({"DATABASE_URL": database_url})
    ledger = app.extensions["formpost"].ledger
    receipt = store(ledger, hosted())
    ledger.erase([receipt])
    runner = app.test_cli_runner()
    status = runner.invoke(args=["outbox", "status"])
    assert status.exit_code == 0, status.output
    assert "deleted         1" in status.output
    listed = runner.invoke(args=["outbox", "list", "--state", "deleted"])
    assert listed.exit_code == 0, listed.output
    assert receipt in listed.output and "deleted" in listed.output


CONSOLE_CALLS = {
    "search": lambda ledger: ledger.search("words"),
    "iterate": lambda ledger: list(ledger.iterate(Filters())),
    "detail": lambda ledger: ledger.detail("ABCD-EFGH"),
    "retry_now": lambda ledger: ledger.retry_now(["ABCD-EFGH"]),
    "erase": lambda ledger: ledger.erase(["ABCD-EFGH"]),
    "erase_matching": lambda ledger: ledger.erase_matching(Filters(form="x")),
    "retry_matching": lambda ledger: ledger.retry_matching(Filters(query="x")),
    "erase_delivered_before": lambda ledger: ledger.erase_delivered_before(1.0),
    "daily_counts": lambda ledger: ledger.daily_counts(0),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def lost(request, tmp_path) -> Ledger:
    """A ledger whose database went away after start-up (as test_ledger_errors)."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        engine.dispose()
        os.unlink(path)
        return Ledger(engine, SystemClock())
    postgres_or_skip()
    url = PG_URL.replace("127.0.0.1:5432", "127.0.0.1:9") + "?connect_timeout=2"
    return Ledger(make_engine(url), SystemClock())


@pytest.mark.parametrize("call", sorted(CONSOLE_CALLS))
def test_every_console_operation_on_a_lost_database_raises_storage_error(lost, call):
    with pytest.raises(StorageError):
        CONSOLE_CALLS[call](lost)
    lost.engine.dispose()


def test_a_running_worker_applies_retention(ledger, clock, tmp_path):
    receipt = store(ledger, hosted())
    (row,) = ledger.claim(1, 60)
    mark_sent(ledger, row)
    clock.advance(8 * DAY)
    settings = OutboxSettings(retention_days=7, poll_interval=0.01)
    worker = Worker(ledger, MaildirTransport(str(tmp_path / "box")), settings, clock)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while ledger.row(receipt).state != "deleted":
            assert time.monotonic() < deadline, "retention never ran"
            time.sleep(0.02)
    finally:
        worker.stop.set()
        thread.join(10)
    assert ledger.detail(receipt).erased
