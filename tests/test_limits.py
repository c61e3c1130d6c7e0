"""Limits kept as counters: the same cost at any volume, exact across processes.

A rate or quota of N per T seconds is a token bucket (N at once, then one
every T/N seconds), one row per key; the backlog is one counter row kept
where rows change state. Checked on real SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import event, inspect, text

from app.ledger import (
    Ledger,
    LimitExceeded,
    Limits,
    dedupe_digest,
    make_engine,
    migrate,
)
from app.ledger import queue as queue_module
from app.ledger import schema as schema_module

from .fakeclock import FakeClock
from .helpers import envelope, mark_failed, mark_retry, mark_sent

SITE = "https://www.example.com"
IP = "192.0.2.1"
HIGH = Limits(rate=((1_000_000, 60),), recipient_daily=10_000_000, backlog=10_000_000)


_counter = iter(range(10**9))


def enqueue(ledger: Ledger, ip: str | None = IP, alias: str = "sales", **kw) -> str:
    n = next(_counter)
    return ledger.enqueue(
        envelope(n), form_id="default", alias=alias, subject=f"s{n}", client_ip=ip, **kw
    )


def backlog_counter(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        query = "SELECT value FROM ledger_counters WHERE name = 'backlog'"
        return conn.execute(text(query)).scalar()


def buckets(ledger: Ledger) -> dict[str, float]:
    with ledger.engine.connect() as conn:
        return dict(conn.execute(text("SELECT key, tat FROM limit_buckets")).all())


def undelivered(ledger: Ledger) -> int:
    stats = ledger.stats()
    return stats.counts["pending"] + stats.counts["sending"]


# -- what a limit means -------------------------------------------------------


def test_a_rate_is_a_bucket_of_n_refilling_one_every_t_over_n(ledger, clock):
    limits = Limits(rate=((5, 60),))
    for _ in range(5):
        enqueue(ledger, limits=limits)  # 5 at once
    with pytest.raises(LimitExceeded) as refused:
        enqueue(ledger, limits=limits)
    assert (refused.value.reason, refused.value.status) == ("rate", 429)
    assert refused.value.retry_after == 12  # one token back every 60/5 s
    clock.advance(11.9)
    with pytest.raises(LimitExceeded):
        enqueue(ledger, limits=limits)
    clock.advance(0.1)
    enqueue(ledger, limits=limits)  # exactly one more after 12 s
    with pytest.raises(LimitExceeded):
        enqueue(ledger, limits=limits)
    clock.advance(60)
    for _ in range(5):
        enqueue(ledger, limits=limits)  # full again after a quiet minute
    assert len(ledger.rows()) == 11


def test_every_window_must_admit_and_a_refusal_charges_none(ledger, clock):
    limits = Limits(rate=((2, 60), (3, 86400)))
    enqueue(ledger, limits=limits)
    enqueue(ledger, limits=limits)
    with pytest.raises(LimitExceeded) as minute:
        enqueue(ledger, limits=limits)
    assert minute.value.retry_after == 30
    clock.advance(30)
    enqueue(ledger, limits=limits)  # the third of the day
    clock.advance(60)
    before = buckets(ledger)
    with pytest.raises(LimitExceeded) as day:
        enqueue(ledger, limits=limits)
    # The day's bucket refills one every 28,800 s, counted from its first post.
    assert day.value.retry_after == 28800 - 90
    # The minute admitted it, the day refused it: neither bucket was charged.
    assert buckets(ledger) == before
    clock.advance(28800 - 90)
    enqueue(ledger, limits=limits)
    assert len(ledger.rows()) == 4


def test_the_quota_counts_a_recipient_over_all_clients(ledger):
    limits = Limits(recipient_daily=2)
    enqueue(ledger, ip="192.0.2.1", limits=limits)
    enqueue(ledger, ip="192.0.2.2", limits=limits)
    with pytest.raises(LimitExceeded) as quota:
        enqueue(ledger, ip="192.0.2.3", limits=limits)
    assert (quota.value.reason, quota.value.status) == ("quota", 429)
    assert quota.value.retry_after == 43200
    enqueue(ledger, ip="192.0.2.3", alias="support", limits=limits)


def test_the_backlog_counts_undelivered_rows_and_frees_on_delivery(ledger, clock):
    limits = Limits(backlog=2)
    enqueue(ledger, limits=limits)
    enqueue(ledger, limits=limits)
    with pytest.raises(LimitExceeded) as full:
        enqueue(ledger, limits=limits)
    assert (full.value.reason, full.value.status, full.value.retry_after) == (
        "backlog",
        503,
        60,
    )
    first, second = ledger.claim(batch=5, lease=60)
    mark_retry(ledger, first, "transient", "451 later", 0)  # still undelivered
    with pytest.raises(LimitExceeded):
        enqueue(ledger, limits=limits)
    mark_failed(ledger, second, "permanent", "550 no")  # delivered, for good
    enqueue(ledger, limits=limits)
    assert backlog_counter(ledger) == undelivered(ledger) == 2


def test_the_backlog_counter_follows_every_state_change(ledger, clock):
    for _ in range(6):
        enqueue(ledger)
    rows = ledger.claim(batch=6, lease=60)
    assert backlog_counter(ledger) == undelivered(ledger) == 6
    mark_sent(ledger, rows[0])
    mark_failed(ledger, rows[1], "permanent", "550 no")
    mark_failed(ledger, rows[2], "permanent", "550 no")
    mark_retry(ledger, rows[3], "transient", "451 later", 10)
    ledger.release(rows[4:5])
    assert backlog_counter(ledger) == undelivered(ledger) == 3
    # A stale claim records nothing, and changes no count.
    assert ledger.settle([ledger.sent(rows[0])]) == [False]
    assert backlog_counter(ledger) == 3
    assert ledger.requeue([rows[1].id]) == 1
    assert backlog_counter(ledger) == undelivered(ledger) == 4
    assert ledger.requeue() == 1
    clock.advance(86400 * 2)
    assert ledger.purge_sent(older_than=86400) == 1
    assert backlog_counter(ledger) == undelivered(ledger) == 5


# -- the same cost at any volume ---------------------------------------------


@contextmanager
def counting_statements(monkeypatch):
    """Count the statements the storing transactions run."""
    executed: list[str] = []
    real = queue_module.driver_transaction

    @contextmanager
    def counted(engine):
        with real(engine) as cursor:
            yield _Counting(cursor, executed)

    monkeypatch.setattr(queue_module, "driver_transaction", counted)
    yield executed
    monkeypatch.setattr(queue_module, "driver_transaction", real)


class _Counting:
    def __init__(self, cursor, executed: list[str]) -> None:
        self._cursor = cursor
        self._executed = executed

    def execute(self, sql, *args):
        self._executed.append(sql)
        return self._cursor.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


def fill_window(ledger: Ledger, rows: int) -> None:
    """Store `rows` submissions from IP to 'sales' in the last minute, at once."""
    now = ledger.clock.now()
    values = [
        {
            "receipt": f"F{n:08d}",
            "message_id": f"<fill{n}@formpost.test>",
            "created": now - 30 + n * 1e-5,
        }
        for n in range(rows)
    ]
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO submissions (receipt, form_id, recipient_alias, "
                "mail_from, recipients, subject, message_id, raw, state, attempts, "
                "created_at, queued_at, next_attempt_at, client_ip) VALUES (:receipt,"
                " 'default', 'sales', 'f@x.test', 'sales@example.com', 's', "
                ":message_id, :raw, 'pending', 0, :created, :created, :created, :ip)"
            ),
            [{**v, "raw": b"x", "ip": IP} for v in values],
        )
        conn.execute(text("UPDATE ledger_counters SET value = value + :n"), {"n": rows})


def _vm_steps(ledger: Ledger) -> list[int]:
    """Count SQLite virtual machine steps on every connection of the engine."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    def install(dbapi_connection, _record) -> None:
        dbapi_connection.set_progress_handler(tick, 10)

    ledger.engine.dispose()
    event.listen(ledger.engine, "connect", install)
    return steps


def test_a_limited_post_costs_the_same_with_100_000_rows_in_its_window(
    ledger, monkeypatch, database_url
):
    """The statements, and on SQLite the work, do not grow with the table."""
    sqlite = database_url.startswith("sqlite")
    steps = _vm_steps(ledger) if sqlite else None
    with counting_statements(monkeypatch) as executed:
        enqueue(ledger, limits=HIGH)  # creates the buckets
        before = len(executed)
        work_before = steps[0] if sqlite else 0
        enqueue(ledger, limits=HIGH)
        empty = (len(executed) - before, (steps[0] - work_before) if sqlite else 0)
    fill_window(ledger, 100_000 if sqlite else 20_000)
    with counting_statements(monkeypatch) as executed:
        enqueue(ledger, limits=HIGH)
        work_before = steps[0] if sqlite else 0
        before = len(executed)
        enqueue(ledger, limits=HIGH)
        full = (len(executed) - before, (steps[0] - work_before) if sqlite else 0)
    assert full[0] == empty[0], (empty, full)
    # Version 5 added two: the search entry and the day's count.
    assert empty[0] <= 10
    assert not any("count(" in sql.lower() for sql in executed), executed
    if sqlite:
        # A count over the window would take 100,000 index steps or more.
        assert full[1] <= empty[1] * 1.5 + 50, (empty, full)


def test_a_full_backlog_refuses_without_counting_rows(ledger, monkeypatch):
    fill_window(ledger, 5000)
    limits = Limits(backlog=5000)
    with counting_statements(monkeypatch) as executed:
        with pytest.raises(LimitExceeded) as full:
            enqueue(ledger, limits=limits)
    assert full.value.reason == "backlog"
    # The counter's row, the insert never run: one statement in all.
    assert len(executed) == 1, executed
    assert "count(" not in executed[0].lower()


# -- exact across processes and machines ---------------------------------------


def test_two_machines_racing_never_pass_a_limit(database_url, clock):
    """Two engines (as two machines) post at once: exactly the limit is stored."""
    ledgers = []
    for _ in range(2):
        engine = make_engine(database_url)
        migrate(engine)
        ledgers.append(Ledger(engine, clock))
    limits = Limits(rate=((5, 60),), recipient_daily=7)
    outcomes: list[str] = []
    barrier = threading.Barrier(16)

    def post(i: int) -> None:
        barrier.wait(10)
        ip = IP if i % 2 else "192.0.2.99"
        try:
            enqueue(ledgers[i % 2], ip=ip, limits=limits)
            outcomes.append("stored")
        except LimitExceeded as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 16
    # 5 per client would be 10, but the recipient's 7 come first.
    assert outcomes.count("stored") == 7, outcomes
    assert len(ledgers[0].rows()) == 7
    assert backlog_counter(ledgers[0]) == 7
    for ledger in ledgers:
        ledger.engine.dispose()


# -- upgrade: counters from the rows already stored --------------------------


def test_upgrade_backfills_the_backlog_and_digests_and_seeds_buckets(
    database_url, monkeypatch
):
    engine = make_engine(database_url)
    with monkeypatch.context() as m:
        m.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:2])
        m.setattr(schema_module, "SCHEMA_VERSION", 2)
        assert migrate(engine) == 2
    clock = FakeClock()
    now = clock.now()
    states = ["pending", "sending", "sent", "failed", "pending"]
    with engine.begin() as conn:
        for n, state in enumerate(states):
            conn.execute(
                text(
                    "INSERT INTO submissions (receipt, form_id, recipient_alias, "
                    "mail_from, recipients, subject, message_id, raw, dedupe_key, "
                    "state, attempts, created_at, queued_at, next_attempt_at, "
                    "client_ip) VALUES (:r, 'default', 'sales', 'f@x.test', "
                    "'sales@example.com', 's', :m, :raw, :k, :state, 0, :t, :t, :t,"
                    " :ip)"
                ),
                {
                    "r": f"OLD0-000{n}",
                    "m": f"<old{n}@x>",
                    "raw": b"x",
                    "k": f"idem:default:old-{n}",
                    "state": state,
                    "t": now - 10 + n,
                    "ip": IP,
                },
            )
    assert migrate(engine) == schema_module.SCHEMA_VERSION
    ledger = Ledger(engine, clock)
    assert backlog_counter(ledger) == 3
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT dedupe_key FROM submissions")).scalars()
        assert set(keys) == {dedupe_digest(f"idem:default:old-{n}") for n in range(5)}
    # A repeat of a post stored before the upgrade still gets its receipt.
    again = enqueue(ledger, dedupe_key="idem:default:old-1")
    assert again == "OLD0-0001"
    # The rate bucket starts from the five posts of the last ten seconds.
    with pytest.raises(LimitExceeded):
        enqueue(ledger, limits=Limits(rate=((5, 60),)))
    enqueue(ledger, ip="192.0.2.2", limits=Limits(rate=((5, 60),)))
    columns = {c["name"] for c in inspect(engine).get_columns("submissions")}
    assert "fingerprint" in columns
    engine.dispose()


def test_purging_idle_buckets_changes_no_answer(ledger, clock):
    limits = Limits(rate=((3, 60),))
    for _ in range(3):
        enqueue(ledger, limits=limits)
        clock.advance(1)
    assert ledger.purge_sent(older_than=0) == 0
    with pytest.raises(LimitExceeded):  # a busy bucket is kept
        enqueue(ledger, limits=limits)
    clock.advance(59)  # full again; one post is still within the last minute
    ledger.purge_sent(older_than=0)
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM limit_buckets")).scalar() == 0
    for _ in range(3):
        enqueue(ledger, limits=limits)
    with pytest.raises(LimitExceeded):
        enqueue(ledger, limits=limits)


@pytest.mark.slow
def test_the_limits_cost_benchmark_runs():
    """bench/limits_cost.py, a few seconds of it, so the harness cannot rot."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "bench/limits_cost.py", "--rows", "2000", "--posts", "20"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2,000 rows in the window" in done.stdout
    assert "full / empty" in done.stdout


# -- tokens outside the accept path (log-in attempts) -------------------------


def test_take_token_is_a_bucket_that_refills(ledger, clock):
    taken = [ledger.take_token(("login", "a"), 3, 30) for _ in range(4)]
    assert taken[:3] == [None, None, None]
    assert taken[3] == pytest.approx(10)
    assert ledger.take_token(("login", "b"), 3, 30) is None  # another bucket
    clock.advance(10)
    assert ledger.take_token(("login", "a"), 3, 30) is None
    assert ledger.take_token(("login", "a"), 3, 30) is not None


def test_take_token_races_are_counted_exactly(database_url, clock):
    """Sixteen takers on two engines (two machines): exactly the bucket's ten."""
    ledgers = []
    for _ in range(2):
        engine = make_engine(database_url)
        migrate(engine)
        ledgers.append(Ledger(engine, clock))
    results: list[float | None] = []
    barrier = threading.Barrier(16)

    def take(i: int) -> None:
        barrier.wait(10)
        results.append(ledgers[i % 2].take_token(("login", "race"), 10, 900))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 16
    assert results.count(None) == 10
    for ledger in ledgers:
        ledger.engine.dispose()
