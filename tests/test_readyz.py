"""/readyz on SQLite and PostgreSQL: database, backlog and relay health.

Relay trouble comes from the real test relay (stopped, wrong password,
untrusted certificate) and a real worker; only the clock is fake where the
"failing for longer than" threshold matters.
"""

from __future__ import annotations

import json
import os

import pytest
from flask import Flask

from .helpers import PG_URL, deliver, ledger_of, post_form, use_fake_clock
from .relay import PASSWORD

WRONG_PASSWORD = "not-the-Relay-Passw0rd-7f3a"


def readyz(app: Flask) -> tuple[int, dict, str]:
    """GET /readyz; return the status, the parsed body and the raw text."""
    response = app.test_client().get("/readyz")
    assert response.mimetype == "application/json"
    text = response.get_data(as_text=True)
    return response.status_code, json.loads(text), text


def only_row(app: Flask):
    (row,) = ledger_of(app).rows()
    return row


def submit(app: Flask) -> None:
    assert post_form(app.test_client()).status_code == 303


def test_fresh_app_is_ready_with_nothing_known_about_the_relay(
    make_app, relay, database_url
):
    app = make_app(relay.env(DATABASE_URL=database_url))
    status, body, _ = readyz(app)
    assert status == 200
    assert body == {
        "status": "ok",
        "database": "ok",
        "backlog": 0,
        "oldest_pending_seconds": None,
        "failed": 0,
        "relay": {"status": "unknown"},
    }


def test_queued_message_is_backlog_until_delivered(make_app, relay, database_url):
    app = make_app(relay.env(DATABASE_URL=database_url))
    clock = use_fake_clock(app)
    submit(app)

    status, body, _ = readyz(app)
    assert status == 200
    assert body["backlog"] == 1
    assert body["oldest_pending_seconds"] == 0
    assert body["relay"] == {"status": "unknown"}  # no attempt yet

    clock.advance(42)
    assert readyz(app)[1]["oldest_pending_seconds"] == 42

    assert deliver(app) == 1
    assert len(relay.received) == 1
    status, body, _ = readyz(app)
    assert status == 200
    assert body["backlog"] == 0
    assert body["oldest_pending_seconds"] is None
    assert body["relay"] == {"status": "ok"}


def test_failed_messages_are_counted_but_do_not_make_it_unready(
    make_app, relay, database_url
):
    """A 5xx is the message's fault, not the relay's: still ready."""
    app = make_app(relay.env(DATABASE_URL=database_url))
    submit(app)
    relay.reply_next("RCPT", "550 5.1.1 No such user")
    assert deliver(app) == 1
    assert only_row(app).state == "failed"

    status, body, _ = readyz(app)
    assert status == 200
    assert body["failed"] == 1
    assert body["backlog"] == 0


def test_wrong_password_keeps_the_message_and_reports_configuration(
    make_app, relay, database_url
):
    app = make_app(relay.env(SMTP_PASSWORD=WRONG_PASSWORD, DATABASE_URL=database_url))
    submit(app)
    assert deliver(app) == 1
    row = only_row(app)
    assert (row.state, row.attempts) == ("pending", 1)
    assert relay.received == []

    status, body, text = readyz(app)
    assert status == 200  # not failing for long yet
    assert body["backlog"] == 1
    relay_health = body["relay"]
    assert relay_health["status"] == "failing"
    assert relay_health["last_error_kind"] == "configuration"
    assert "535" in relay_health["last_error"]
    assert relay_health["failing_for_seconds"] >= 0
    assert WRONG_PASSWORD not in text
    assert PASSWORD not in text
    assert WRONG_PASSWORD not in (row.last_reply or "")


def test_relay_failing_longer_than_the_threshold_is_unavailable(
    make_app, relay, database_url
):
    app = make_app(relay.env(DATABASE_URL=database_url, READY_RELAY_FAILING_AFTER="60"))
    clock = use_fake_clock(app)
    submit(app)
    relay.stop()
    assert deliver(app) == 1
    assert only_row(app).state == "pending"

    clock.advance(59)
    status, body, _ = readyz(app)
    assert status == 200
    assert body["status"] == "ok"
    assert body["relay"]["status"] == "failing"
    assert body["relay"]["failing_for_seconds"] == 59
    assert body["relay"]["last_error_kind"] == "transient"

    clock.advance(2)
    status, body, _ = readyz(app)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["backlog"] == 1
    assert body["relay"]["status"] == "failing"
    assert body["relay"]["failing_for_seconds"] == 61


def test_untrusted_certificate_then_recovery(make_app, make_relay, database_url):
    """Failing since the first error, across retries; ok again after a success."""
    untrusted = make_relay(trusted=False)
    app = make_app(untrusted.env(DATABASE_URL=database_url))
    clock = use_fake_clock(app)
    submit(app)
    assert deliver(app) == 1
    row = only_row(app)
    assert (row.state, row.attempts) == ("pending", 1)
    assert untrusted.received == []

    status, body, _ = readyz(app)
    assert status == 200
    assert body["relay"]["status"] == "failing"
    assert body["relay"]["last_error_kind"] == "configuration"
    assert "certificate" in body["relay"]["last_error"]

    clock.advance(3600)  # the retry is due; still the wrong certificate
    assert deliver(app) == 1
    assert only_row(app).attempts == 2
    status, body, _ = readyz(app)
    assert status == 503  # failing for over the default 900 s
    assert body["relay"]["failing_for_seconds"] == 3600

    # The operator fixes the relay's certificate: same port, trusted CA.
    untrusted.stop()
    fixed = make_relay(port=untrusted.port)
    clock.advance(7200)
    assert deliver(app) == 1
    assert only_row(app).state == "sent"
    assert len(fixed.received) == 1

    status, body, _ = readyz(app)
    assert status == 200
    assert body["status"] == "ok"
    assert body["relay"] == {"status": "ok"}
    assert body["backlog"] == 0


# -- the database goes away ----------------------------------------------------


def assert_unreachable_answer(app: Flask, *secrets: str) -> None:
    status, body, text = readyz(app)
    assert status == 503
    assert body == {"status": "unavailable", "database": "unreachable"}
    for secret in ("Traceback", "sqlite", "psycopg", "SELECT", *secrets):
        assert secret not in text
    health = app.test_client().get("/healthz")
    assert health.status_code == 200
    assert health.get_json() == {"status": "ok"}


def replace_with_directory(path: str) -> None:
    """Delete the SQLite file (and its WAL files) and put a directory there."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    os.mkdir(path)


def test_sqlite_file_replaced_by_a_directory_is_unreachable(make_app, tmp_path):
    """A connection opened after the file is gone fails: 503, and nothing leaks.

    The pool is emptied so that the next request opens the path again; the
    test below shows the same without emptying it.
    """
    path = str(tmp_path / "data" / "ledger.db")
    os.mkdir(tmp_path / "data")
    app = make_app({"DATABASE_URL": f"sqlite:///{path}"})
    assert readyz(app)[0] == 200

    replace_with_directory(path)
    ledger_of(app).engine.dispose()

    assert_unreachable_answer(app, str(tmp_path), "ledger.db")


def test_sqlite_file_replaced_by_a_directory_is_noticed_at_once(make_app, tmp_path):
    path = str(tmp_path / "data" / "ledger.db")
    os.mkdir(tmp_path / "data")
    app = make_app({"DATABASE_URL": f"sqlite:///{path}"})
    assert readyz(app)[0] == 200

    replace_with_directory(path)

    assert_unreachable_answer(app, str(tmp_path), "ledger.db")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_schema_dropped_is_unreachable(make_app, database_url):
    """The ledger's PostgreSQL schema vanishing under a running app: 503."""
    import psycopg

    schema = database_url.rpartition("search_path%3D")[2]
    assert schema.startswith("formpost_test_")
    app = make_app({"DATABASE_URL": database_url})
    assert readyz(app)[0] == 200

    plain = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    try:
        assert_unreachable_answer(app, schema, "submissions")
    finally:
        # The fixture drops the schema on teardown: give it one to drop.
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
