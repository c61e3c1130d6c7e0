"""Version 5 reads the fields of rows stored by version 4 back from their messages."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from app.accept import Post
from app.ledger import (
    SCHEMA_VERSION,
    Filters,
    Ledger,
    current_version,
    make_engine,
    migrate,
)
from app.ledger.schema import MIGRATIONS, schema_version

from .fakeclock import FakeClock
from .storekit import endpoint, hosted, message_for

NOW = 1_780_000_000.0

POSTS = [
    pytest.param(hosted(1, message="First line\n\nsecond line"), id="hosted"),
    pytest.param(hosted(2, name="", email=""), id="hosted-anonymous"),
    pytest.param(
        hosted(3, name='Zoë "Z" Ådahl', email="zoe@example.net"), id="hosted-unicode"
    ),
    pytest.param(
        hosted(4, message="From: someone\n\nnot a header, a message"),
        id="hosted-from-line",
    ),
    pytest.param(
        endpoint(
            (
                ("name", "Bob Stone"),
                ("email", "bob@example.org"),
                ("company", "Acme: Widgets & Co"),
                ("empty", ""),
                ("message", "two\n    indented\nlines"),
            )
        ),
        id="endpoint",
    ),
    pytest.param(endpoint((("phone", "555 0100"), ("note", "ring"))), id="no-sender"),
    pytest.param(
        Post(form_id="doctor", recipient="sales", subject="Test", message="hi"),
        id="doctor",
    ),
]


def _at_version_4(url: str):
    engine = make_engine(url)
    with engine.begin() as conn:
        for step in MIGRATIONS[:4]:
            step(conn)
        schema_version.create(conn)
        conn.execute(schema_version.insert().values(version=4))
    assert current_version(engine) == 4
    return engine


def _insert_v4(conn, n: int, form_id: str, subject: str, raw: bytes, **extra) -> None:
    """Insert a row as version 4's accept path wrote it (its columns only)."""
    values = {
        "receipt": f"R{n:03d}-TEST",
        "form_id": form_id,
        "subject": subject,
        "message_id": f"<{n}@formpost.test>",
        "raw": raw,
        "state": "pending",
        "attempts": 0,
        "created": NOW + n,
        "last_attempt_at": None,
        "last_reply": None,
        "last_error_kind": None,
        **extra,
    }
    conn.execute(
        text(
            "INSERT INTO submissions (receipt, form_id, recipient_alias, mail_from, "
            "recipients, subject, message_id, raw, state, attempts, created_at, "
            "queued_at, next_attempt_at, last_attempt_at, last_reply, "
            "last_error_kind) VALUES (:receipt, :form_id, 'sales', "
            "'forms@formpost.test', 'sales@example.com', :subject, :message_id, "
            ":raw, :state, :attempts, :created, :created, :created, "
            ":last_attempt_at, :last_reply, :last_error_kind)"
        ),
        values,
    )


@pytest.mark.parametrize("post", POSTS)
def test_a_version_4_row_gets_its_fields_back(database_url, post):
    engine = _at_version_4(database_url)
    with engine.begin() as conn:
        _insert_v4(conn, 1, post.form_id, post.subject, message_for(post).data)
    assert migrate(engine) == SCHEMA_VERSION
    ledger = Ledger(engine, FakeClock())
    (row,) = ledger.rows()
    expected = post.content()
    assert json.loads(row.fields) == [list(pair) for pair in expected.fields]
    assert row.email == expected.email
    if expected.email:  # the name travels in Reply-To, with the address
        assert row.name == expected.name
    assert row.message == expected.message
    # And it is found by what it says.
    word = (expected.message or expected.fields[0][1]).split()[0]
    assert [r.receipt for r in ledger.search(word).rows] == [row.receipt]
    engine.dispose()


def test_rows_that_cannot_be_read_keep_null_fields_and_the_migration_goes_on(
    database_url,
):
    engine = _at_version_4(database_url)
    prose = message_for(hosted(9, message="no fields here")).data
    good = endpoint((("name", "Eve"), ("message", "findable")))
    with engine.begin() as conn:
        _insert_v4(conn, 1, "hosted", "s", b"\x00\xff not a message at all")
        _insert_v4(conn, 2, "site", "s", prose)  # an /f/ form, yet prose
        _insert_v4(conn, 3, "site", "s", b"")
        _insert_v4(conn, 4, good.form_id, good.subject, message_for(good).data)
    assert migrate(engine) == SCHEMA_VERSION
    ledger = Ledger(engine, FakeClock())
    by_receipt = {r.receipt: r for r in ledger.rows()}
    for receipt in ("R001-TEST", "R002-TEST", "R003-TEST"):
        row = by_receipt[receipt]
        assert (row.fields, row.name, row.email, row.message) == (None,) * 4
    assert json.loads(by_receipt["R004-TEST"].fields)[1] == ["message", "findable"]
    assert [r.receipt for r in ledger.search("findable").rows] == ["R004-TEST"]
    # The console falls back to the message, kept as it was.
    detail = ledger.detail("R002-TEST")
    assert detail.fields is None and detail.raw == prose
    engine.dispose()


def test_many_rows_are_backfilled_in_batches_counted_and_timed(database_url):
    engine = _at_version_4(database_url)
    total = 1203  # more than two batches
    with engine.begin() as conn:
        for n in range(total):
            post = hosted(n, message=f"word{n} common")
            extra = {}
            if n % 3 == 0:
                extra = {
                    "state": "sent",
                    "attempts": 1,
                    "last_attempt_at": NOW + n + 5,
                    "last_reply": "250 2.0.0 queued",
                }
            if n % 3 == 1:
                extra = {
                    "state": "failed",
                    "attempts": 2,
                    "last_attempt_at": NOW + n + 5,
                    "last_reply": "550 no such user",
                    "last_error_kind": "permanent",
                }
            _insert_v4(conn, n, "hosted", post.subject, message_for(post).data, **extra)
    assert migrate(engine) == SCHEMA_VERSION
    ledger = Ledger(engine, FakeClock())
    assert [r.subject for r in ledger.search("word1202").rows] == ["Question 1202"]
    assert [r.subject for r in ledger.search("word0").rows] == ["Question 0"]
    assert len(list(ledger.iterate(Filters(query="common")))) == total
    counts = ledger.daily_counts(0)
    assert sum(c for _form, _day, c in counts) == total
    assert {form for form, _day, _c in counts} == {"hosted"}
    assert {day for _f, day, _c in counts} == {
        int((NOW + n) // 86400) for n in range(total)
    }
    sent = ledger.detail("R000-TEST")
    assert [(a.outcome, a.reply) for a in sent.attempts] == [
        ("sent", "250 2.0.0 queued")
    ]
    failed = ledger.detail("R001-TEST")
    assert [(a.outcome, a.error_kind) for a in failed.attempts] == [
        ("failed", "permanent")
    ]
    assert ledger.detail("R002-TEST").attempts == []
    engine.dispose()
