"""The ledger on real SQLite and real PostgreSQL: storage, claims, leases, schema."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect, text

from app import ledger as ledger_module
from app.ledger import (
    SCHEMA_VERSION,
    Ledger,
    StorageError,
    current_version,
    make_engine,
    migrate,
    new_receipt,
)
from app.ledger import queue as queue_module
from app.ledger import schema as schema_module

from .fakeclock import FakeClock
from .helpers import envelope, mark_failed, mark_retry, mark_sent, posts_in_one_batch


def enqueue(ledger: Ledger, n: int = 0, **kwargs) -> str:
    return ledger.enqueue(
        envelope(n), form_id="hosted", alias="sales", subject=f"s{n}", **kwargs
    )


def test_enqueue_commits_a_pending_row(ledger):
    receipt = enqueue(ledger)
    (row,) = ledger.rows()
    assert (row.receipt, row.state, row.attempts) == (receipt, "pending", 0)
    assert row.message_id == "<0@formpost.test>"
    # A second engine (another process, another machine) sees it: committed.
    other = make_engine(str(ledger.engine.url.render_as_string(hide_password=False)))
    with other.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM submissions")).scalar() == 1
    other.dispose()


def test_row_finds_a_receipt_however_many_came_after(ledger):
    first = enqueue(ledger, 0)
    for n in range(1, 211):
        enqueue(ledger, n)
    assert first not in {r.receipt for r in ledger.rows(limit=200)}
    row = ledger.row(first)
    assert (row.receipt, row.subject, row.state) == (first, "s0", "pending")
    assert "raw" not in row._fields
    assert ledger.row("NONE-SUCH") is None


def test_dedupe_key_gives_one_row_and_the_first_receipt(ledger):
    first = enqueue(ledger, 1, dedupe_key="hosted:abc")
    second = enqueue(ledger, 2, dedupe_key="hosted:abc")
    assert first == second
    assert len(ledger.rows()) == 1


def test_concurrent_posts_share_one_commit(ledger):
    posts = [lambda n=n: enqueue(ledger, n) for n in range(8)]
    receipts, transactions = posts_in_one_batch(ledger, posts)
    assert transactions == 2  # the leader alone, then the seven together
    assert len(set(receipts)) == 8
    assert sorted(r.receipt for r in ledger.rows()) == sorted(receipts)


def test_a_conflict_in_a_shared_commit_costs_only_its_own_row(ledger):
    first = enqueue(ledger, 0, dedupe_key="k")
    posts = [lambda n=n: enqueue(ledger, n) for n in range(1, 6)]
    posts.insert(3, lambda: enqueue(ledger, 9, dedupe_key="k"))
    results, _ = posts_in_one_batch(ledger, posts)
    assert results[3] == first  # the repeat gets the first answer
    stored = {r.receipt for r in ledger.rows()}
    assert stored == {first} | {r for i, r in enumerate(results) if i != 3}
    assert len(stored) == 6


def test_a_failed_shared_commit_fails_every_post_in_it(ledger):
    _refuse_inserts(ledger.engine)
    posts = [lambda n=n: enqueue(ledger, n) for n in range(5)]
    results, _ = posts_in_one_batch(ledger, posts)
    assert all(isinstance(r, StorageError) for r in results), results
    assert ledger.rows() == []


def test_receipts_are_short_and_unambiguous():
    receipts = {new_receipt() for _ in range(2000)}
    assert len(receipts) == 2000
    for r in receipts:
        assert len(r) == 9 and r[4] == "-"
        assert not set(r) & set("01OI")
    # Every letter of the alphabet turns up: none is starved by the mapping.
    assert set("".join(receipts)) - {"-"} == set(queue_module.RECEIPT_ALPHABET)


def test_claim_takes_due_rows_once_under_a_lease(ledger, clock):
    for n in range(5):
        enqueue(ledger, n)
    first = ledger.claim(batch=3, lease=60)
    second = ledger.claim(batch=3, lease=60)
    assert len(first) == 3 and len(second) == 2
    assert {r.id for r in first}.isdisjoint({r.id for r in second})
    assert ledger.claim(batch=10, lease=60) == []  # all held
    assert all(r.attempts == 1 for r in first + second)
    # The claimed bytes are exactly the stored bytes.
    assert first[0].envelope == envelope(0)


def test_expired_lease_makes_the_row_claimable_again(ledger, clock):
    enqueue(ledger)
    (held,) = ledger.claim(batch=1, lease=60)
    clock.advance(59)
    assert ledger.claim(batch=1, lease=60) == []
    clock.advance(2)
    (again,) = ledger.claim(batch=1, lease=60)
    assert again.id == held.id and again.attempts == 2
    # The first worker lost the lease: its outcome is not recorded.
    assert mark_sent(ledger, held) is False
    assert mark_sent(ledger, again) is True
    assert ledger.rows()[0].state == "sent"


def test_extend_keeps_the_lease(ledger, clock):
    enqueue(ledger)
    held = ledger.claim(batch=1, lease=60)
    clock.advance(50)
    ledger.extend(held, lease=60)
    clock.advance(50)
    assert ledger.claim(batch=1, lease=60) == []


def test_retry_is_due_only_after_its_delay(ledger, clock):
    enqueue(ledger)
    (row,) = ledger.claim(batch=1, lease=60)
    mark_retry(ledger, row, "transient", "451 try later", delay=120)
    clock.advance(119)
    assert ledger.claim(batch=1, lease=60) == []
    clock.advance(1)
    (again,) = ledger.claim(batch=1, lease=60)
    assert again.attempts == 2


def test_release_gives_back_the_attempt(ledger):
    enqueue(ledger)
    rows = ledger.claim(batch=1, lease=60)
    ledger.release(rows)
    (row,) = ledger.rows()
    assert (row.state, row.attempts) == ("pending", 0)


def test_failed_rows_are_kept_and_requeued(ledger, clock):
    enqueue(ledger, 1)
    enqueue(ledger, 2)
    for row in ledger.claim(batch=2, lease=60):
        mark_failed(ledger, row, "permanent", "550 5.1.1 No such user")
    assert ledger.stats().counts["failed"] == 2
    assert ledger.requeue([ledger.rows()[0].id]) == 1
    assert ledger.requeue(None) == 1
    assert ledger.stats().counts == {
        "pending": 2,
        "sending": 0,
        "sent": 0,
        "failed": 0,
        "spam": 0,
        "dropped": 0,
        "deleted": 0,
    }


def test_purge_deletes_only_old_sent_rows(ledger, clock):
    for n in range(3):
        enqueue(ledger, n)
    rows = ledger.claim(batch=3, lease=60)
    mark_sent(ledger, rows[0])
    mark_failed(ledger, rows[1], "permanent", "550")
    clock.advance(10 * 86400)
    assert ledger.purge_sent(older_than=30 * 86400) == 0
    assert ledger.purge_sent(older_than=7 * 86400) == 1
    assert sorted(r.state for r in ledger.rows()) == ["failed", "sending"]


def test_stats_and_relay_health(ledger, clock):
    enqueue(ledger)
    clock.advance(30)
    stats = ledger.stats()
    assert stats.backlog == 1 and stats.oldest_pending_age == 30
    assert stats.relay is None
    ledger.record_relay("configuration", "AUTH refused: 535")
    clock.advance(10)
    ledger.record_relay("transient", "timed out")
    relay = ledger.stats().relay
    assert relay["failing_since"] == clock.now() - 10  # the first failure counts
    assert relay["last_error"] == "timed out"
    ledger.record_relay(None)
    assert ledger.stats().relay["failing_since"] is None


@pytest.mark.parametrize("error_kind", [None, "transient"])
def test_workers_recording_the_relay_together_never_collide(ledger, error_kind):
    # Workers that finish their first batch together each find no row yet;
    # update-then-insert let two of them insert it (a duplicate key).
    engines = [make_engine(ledger.engine.url.render_as_string(False)) for _ in range(6)]
    ledgers = [Ledger(engine, ledger.clock) for engine in engines]
    errors: list[Exception] = []
    try:
        for _ in range(15):
            with ledger.engine.begin() as conn:
                conn.execute(schema_module.relay_health.delete())
            start = threading.Barrier(len(ledgers))

            def record(one: Ledger, start: threading.Barrier = start) -> None:
                start.wait()
                try:
                    one.record_relay(error_kind, "timed out" if error_kind else None)
                except Exception as exc:  # noqa: BLE001 - collected, asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=record, args=(x,)) for x in ledgers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            relay = ledger.stats().relay
            assert (relay["failing_since"] is None) == (error_kind is None)
    finally:
        for engine in engines:
            engine.dispose()
    assert errors == []


def _refuse_inserts(engine):
    """Make every INSERT fail: at once on SQLite, at COMMIT on PostgreSQL."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON submissions "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        else:
            # Deferred: PostgreSQL fails at COMMIT itself, the hardest case.
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON submissions "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"
            )


def test_failing_insert_raises_storage_error_and_stores_nothing(ledger):
    _refuse_inserts(ledger.engine)
    with pytest.raises(StorageError):
        enqueue(ledger)
    assert ledger.rows() == []


def test_sqlite_is_durable_and_concurrent(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/d.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_schema_is_created_once_and_matches_the_code(database_url):
    engine = make_engine(database_url)
    assert current_version(engine) == 0
    assert migrate(engine) == SCHEMA_VERSION
    assert migrate(engine) == SCHEMA_VERSION  # idempotent
    insp = inspect(engine)
    for table in schema_module.metadata.sorted_tables:
        in_db = {c["name"] for c in insp.get_columns(table.name)}
        if engine.dialect.name == "postgresql":
            in_db -= schema_module.PG_ONLY_COLUMNS.get(table.name, set())
        assert in_db == {c.name for c in table.columns}, table.name
    engine.dispose()


def test_upgrade_from_version_1_keeps_every_row(database_url, monkeypatch):
    """A database made by the first release is upgraded in place on start."""
    engine = make_engine(database_url)
    with monkeypatch.context() as m:
        m.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:1])
        m.setattr(schema_module, "SCHEMA_VERSION", 1)
        assert migrate(engine) == 1
    columns = {c["name"] for c in inspect(engine).get_columns("submissions")}
    assert "client_ip" not in columns
    with engine.begin() as conn:
        for n in range(5):
            conn.execute(
                text(
                    "INSERT INTO submissions (receipt, form_id, recipient_alias, "
                    "mail_from, recipients, subject, message_id, raw, state, attempts,"
                    " created_at, queued_at, next_attempt_at) VALUES (:r, 'hosted', "
                    "'sales', 'f@x.test', 'sales@example.com', :s, :m, :raw, "
                    "'pending', 0, 1, 1, 1)"
                ),
                {"r": f"AAAA-000{n}", "s": f"old {n}", "m": f"<{n}@x>", "raw": b"x"},
            )
    assert migrate(engine) == SCHEMA_VERSION
    assert current_version(engine) == SCHEMA_VERSION
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT receipt, subject, client_ip FROM submissions"))
        rows = rows.all()
    assert sorted(r.subject for r in rows) == [f"old {n}" for n in range(5)]
    assert {r.client_ip for r in rows} == {None}
    # And the upgraded ledger works: the old rows are claimable.
    assert len(Ledger(engine, FakeClock()).claim(batch=10, lease=60)) == 5
    engine.dispose()


def test_newer_schema_than_the_code_refuses_to_start(database_url, monkeypatch):
    engine = make_engine(database_url)
    migrate(engine)
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", SCHEMA_VERSION - 1)
    monkeypatch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:-1])
    with pytest.raises(StorageError, match="newer"):
        migrate(engine)
    engine.dispose()


def test_limits_refuse_inside_the_insert_on_both_databases(ledger, clock):
    """The same statement stores or refuses; no phantom receipt on refusal."""
    limits = ledger_module.Limits(rate=((2, 60),), recipient_daily=3, backlog=0)
    kw = {"client_ip": "192.0.2.1", "limits": limits}
    enqueue(ledger, 1, **kw)
    clock.advance(1)
    enqueue(ledger, 2, **kw)
    with pytest.raises(ledger_module.LimitExceeded) as refused:
        enqueue(ledger, 3, **kw)
    assert (refused.value.reason, refused.value.status) == ("rate", 429)
    # A bucket of 2 refilling one every 30 s: full at t=1 by two posts, one
    # token back 30 s after the first (t=30), 29 s from now.
    assert refused.value.retry_after == 29
    assert len(ledger.rows()) == 2
    enqueue(ledger, 4, client_ip="192.0.2.2", limits=limits)  # another client
    with pytest.raises(ledger_module.LimitExceeded) as quota:
        enqueue(ledger, 5, client_ip="192.0.2.3", limits=limits)
    assert quota.value.reason == "quota"
    assert len(ledger.rows()) == 3


def test_backlog_cap_and_a_repeat_at_the_limit_gets_its_receipt(ledger):
    limits = ledger_module.Limits(backlog=1)
    first = enqueue(ledger, 1, dedupe_key="k", limits=limits)
    assert enqueue(ledger, 2, dedupe_key="k", limits=limits) == first
    with pytest.raises(ledger_module.LimitExceeded) as full:
        enqueue(ledger, 3, limits=limits)
    assert (full.value.reason, full.value.status) == ("backlog", 503)
    for row in ledger.claim(batch=5, lease=60):
        mark_sent(ledger, row)
    enqueue(ledger, 4, limits=limits)  # room again once delivered
