"""Delivery workers against the real relay, on SQLite and PostgreSQL, fake clock."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from app.outbox import (
    JITTER,
    RECORD_BATCH,
    RECORD_UNRECORDED,
    OutboxSettings,
    Worker,
    _Recorder,
    retry_delay,
)

from .fakeclock import FakeClock
from .helpers import post_form


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_worker(clock):
    """Build a Worker over an app's ledger and transport, on the fake clock."""

    def factory(app, rand=lambda: 0.5, **settings) -> Worker:
        ledger = app.extensions["formpost"].ledger
        ledger.clock = clock
        base = app.extensions["formpost"].outbox
        return Worker(
            ledger=ledger,
            transport=app.extensions["formpost"].transport,
            settings=OutboxSettings(**{**base.__dict__, **settings}),
            clock=clock,
            rand=rand,
        )

    return factory


def rows(app):
    return app.extensions["formpost"].ledger.rows()


def submit(app, **fields) -> None:
    assert post_form(app.test_client(), **fields).status_code == 303


def drain(worker: Worker) -> int:
    total = 0
    while n := worker.run_once():
        total += n
    return total


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 60), (2, 120), (3, 240), (4, 480), (6, 1920), (7, 3600), (50, 3600)],
)
def test_backoff_doubles_and_is_capped(attempts, expected):
    assert retry_delay(attempts, 60, 3600, rand=lambda: 0.0) == expected
    low = retry_delay(attempts, 60, 3600, rand=lambda: 1.0)
    assert low == pytest.approx(expected * (1 - JITTER))


def test_relay_down_at_submit_then_delivered_once_when_it_returns(
    make_app, make_relay, database_url, make_worker, clock
):
    relay = make_relay()
    port = relay.port
    app = make_app(relay.env(DATABASE_URL=database_url))
    worker = make_worker(app)
    relay.stop()
    submit(app, subject="While the relay was down")
    assert drain(worker) == 1
    (row,) = rows(app)
    assert (row.state, row.attempts, row.last_error_kind) == ("pending", 1, "transient")
    assert row.next_attempt_at - clock.now() == pytest.approx(60 * (1 - JITTER / 2))

    back = make_relay(port=port)  # the relay returns on the same address
    assert drain(worker) == 0  # not due yet: no hammering
    clock.advance(60)
    assert drain(worker) == 1
    clock.advance(3600)
    assert drain(worker) == 0
    (got,) = back.received
    assert got.message["Subject"] == "While the relay was down"
    assert got.message["Message-ID"] == row.message_id
    (row,) = rows(app)
    assert (row.state, row.attempts) == ("sent", 2)


@pytest.mark.parametrize("failures", [1, 4])
def test_deferred_n_times_then_accepted_gives_one_copy(
    app_on_db, relay, make_worker, clock, failures
):
    relay.reply_next("RCPT", "451 4.7.1 Greylisted, try again", times=failures)
    worker = make_worker(app_on_db, retry_base=60, retry_max=300)
    submit(app_on_db)
    delays = []
    for _ in range(failures):
        assert drain(worker) == 1
        (row,) = rows(app_on_db)
        assert row.state == "pending" and "451" in row.last_reply
        delays.append(row.next_attempt_at - clock.now())
        clock.advance(delays[-1])
    assert drain(worker) == 1
    (row,) = rows(app_on_db)
    assert (row.state, row.attempts) == ("sent", failures + 1)
    assert len(relay.received) == 1
    schedule = [min(300, 60 * 2**k) * (1 - JITTER * 0.5) for k in range(failures)]
    assert delays == pytest.approx(schedule)


def test_permanent_refusal_fails_after_one_attempt_and_retry_requeues(
    app_on_db, relay, make_worker, clock
):
    relay.reply_next("RCPT", "550 5.1.1 No such user here")
    worker = make_worker(app_on_db)
    submit(app_on_db)
    drain(worker)
    (row,) = rows(app_on_db)
    assert (row.state, row.attempts) == ("failed", 1)
    assert (
        row.last_reply
        == "RCPT TO refused: <help@example.org> 550 5.1.1 No such user here"
        or "550 5.1.1 No such user here" in row.last_reply
    )
    clock.advance(86400)
    assert drain(worker) == 0  # dead letters stay put
    result = app_on_db.test_cli_runner().invoke(args=["outbox", "retry", str(row.id)])
    assert result.exit_code == 0 and "requeued 1" in result.output
    drain(worker)
    (row,) = rows(app_on_db)
    assert (row.state, row.attempts) == ("sent", 2)
    assert len(relay.received) == 1


@pytest.mark.parametrize("trusted", [True, False])
def test_configuration_errors_keep_rows_pending_past_give_up(
    make_app, make_relay, database_url, make_worker, clock, trusted
):
    """A misconfigured relay (AUTH 535, untrusted certificate) never dead-letters."""
    relay = make_relay(trusted=trusted)
    overrides = {"DATABASE_URL": database_url}
    if trusted:
        overrides["SMTP_PASSWORD"] = "wrong password"
    app = make_app(relay.env(**overrides))
    worker = make_worker(app, give_up_after=3600)
    submit(app)
    for _ in range(20):
        drain(worker)
        clock.advance(3600)
    (row,) = rows(app)
    assert row.state == "pending" and row.last_error_kind == "configuration"
    assert ("535" if trusted else "certificate") in row.last_reply
    assert relay.received == []


def test_transient_failures_expire_after_the_give_up_age(
    make_app, make_relay, database_url, make_worker, clock
):
    relay = make_relay()
    app = make_app(relay.env(DATABASE_URL=database_url))
    worker = make_worker(app, give_up_after=5 * 86400)
    relay.stop()
    submit(app)
    for _ in range(200):
        drain(worker)
        clock.advance(3600)
        if rows(app)[0].state == "failed":
            break
    (row,) = rows(app)
    assert row.state == "failed"
    assert row.last_reply.startswith("delivery time expired")
    assert 5 * 86400 <= clock.now() - row.created_at <= 5 * 86400 + 2 * 3600


def test_one_connection_is_reused_for_a_batch(app_on_db, relay, make_worker):
    for n in range(5):
        submit(app_on_db, subject=f"n{n}")
    assert drain(make_worker(app_on_db, batch=10)) == 5
    assert len(relay.received) == 5
    assert relay.connections == 1


def test_a_dropped_connection_is_noticed_and_reopened(app_on_db, relay, make_worker):
    relay.handler.drop_after_data = 1
    for n in range(3):
        submit(app_on_db, subject=f"n{n}")
    assert drain(make_worker(app_on_db, batch=10)) == 3
    assert sorted(r.message["Subject"] for r in relay.received) == ["n0", "n1", "n2"]
    assert relay.connections == 2
    assert {r.state for r in rows(app_on_db)} == {"sent"}


def test_partly_failed_batch_records_each_outcome(app_on_db, relay, make_worker):
    relay.refuse_recipient("help@example.org", "550 5.1.1 gone")
    submit(app_on_db, subject="n0", recipient="support")
    submit(app_on_db, subject="n1", recipient="sales")
    relay.reply_next("RCPT", "451 4.3.0 busy")  # n1 deferred, n2 accepted
    submit(app_on_db, subject="n2", recipient="sales")
    assert drain(make_worker(app_on_db, batch=10)) == 3
    states = sorted((r.subject, r.state) for r in rows(app_on_db))
    assert states == [("n0", "failed"), ("n1", "pending"), ("n2", "sent")]
    assert relay.connections == 1  # a refusal does not cost the connection


def test_stop_releases_unattempted_rows(app_on_db, relay, make_worker):
    for n in range(3):
        submit(app_on_db, subject=f"n{n}")
    worker = make_worker(app_on_db, batch=10)
    worker.stop.set()
    assert worker.run_once() == 3  # claimed, then released at once
    assert {(r.state, r.attempts) for r in rows(app_on_db)} == {("pending", 0)}
    assert relay.received == []


class _HeldLedger:
    """The real ledger, with its first settle held until `go` is set.

    While the recorder waits there, the test queues outcomes: the batches it
    then forms depend on nothing but the queue, not on timing.
    """

    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.go = threading.Event()
        self.waiting = threading.Event()
        self.batches: list[int] = []

    def settle(self, outcomes):
        if not self.batches:
            self.waiting.set()
            self.go.wait(10)
        self.batches.append(len(outcomes))
        return self.ledger.settle(outcomes)


def claimed_outcomes(app, n: int):
    for i in range(n):
        submit(app, subject=f"n{i}")
    ledger = app.extensions["formpost"].ledger
    return [ledger.sent(row) for row in ledger.claim(n, lease=300)]


def test_recorder_commits_queued_outcomes_together(app_on_db):
    outcomes = claimed_outcomes(app_on_db, RECORD_BATCH + 9)
    held = _HeldLedger(app_on_db.extensions["formpost"].ledger)
    recorder = _Recorder(held)  # type: ignore[arg-type]
    recorder.put(outcomes[0])
    assert held.waiting.wait(10)
    for outcome in outcomes[1:RECORD_UNRECORDED]:
        recorder.put(outcome)  # room for these while the first is committed
    # The next one waits: RECORD_UNRECORDED outcomes are not committed yet.
    rest = threading.Thread(
        target=lambda: [recorder.put(o) for o in outcomes[RECORD_UNRECORDED:]]
    )
    rest.start()
    rest.join(0.5)
    assert rest.is_alive()
    assert recorder.queue.qsize() == RECORD_UNRECORDED - 1
    held.go.set()
    rest.join(10)
    recorder.flush()
    assert held.batches[:2] == [1, RECORD_UNRECORDED - 1]
    assert sum(held.batches) == len(outcomes)
    assert max(held.batches) <= RECORD_BATCH
    assert {r.state for r in rows(app_on_db)} == {"sent"}


def test_flush_commits_at_once_what_was_gathered(app_on_db):
    outcomes = claimed_outcomes(app_on_db, 8)
    held = _HeldLedger(app_on_db.extensions["formpost"].ledger)
    recorder = _Recorder(held)  # type: ignore[arg-type]
    recorder.put(outcomes[0])
    assert held.waiting.wait(10)
    for outcome in outcomes[1:5]:
        recorder.put(outcome)
    flusher = threading.Thread(target=recorder.flush)
    flusher.start()
    deadline = time.monotonic() + 10
    while recorder.queue.qsize() < 5 and time.monotonic() < deadline:
        time.sleep(0.001)  # until the flush is queued behind the four
    for outcome in outcomes[5:]:
        recorder.put(outcome)
    held.go.set()
    flusher.join(10)
    recorder.flush()
    # The flush ends its batch: what was queued after it is a batch of its own.
    assert held.batches == [1, 4, 3]


def test_delivery_is_logged_once_its_outcome_is_committed(
    app_on_db, relay, make_worker
):
    submit(app_on_db, subject="n0")
    ledger = app_on_db.extensions["formpost"].ledger
    states_when_logged = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("delivered"):
                states_when_logged.append([r.state for r in ledger.rows()])

    spy = Spy()
    logging.getLogger("formpost.outbox").addHandler(spy)
    try:
        assert drain(make_worker(app_on_db)) == 1
    finally:
        logging.getLogger("formpost.outbox").removeHandler(spy)
    assert states_when_logged == [["sent"]]
