"""The accept path with spam verdicts: one row for each, one answer for all.

Accepted posts are pending and delivered; quarantined ones are stored as
`spam` and never claimed; dropped ones leave a `dropped` tombstone with the
reasons. The visitor's answer is the same for all three, byte for byte apart
from the receipt. Storage is checked on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from sqlalchemy import select

from app.ledger.schema import BACKLOG, counters
from app.spam import Verdict

from .endpoint.posting import FIELDS, HTML, JSON, SITE, post
from .helpers import deliver, ledger_of, post_form, use_fake_clock

RECEIPT = re.compile(rb"[A-Z0-9]{4}-[A-Z0-9]{4}")
SPAMMY = "Hello, we sell lottery tickets in bulk. Write back today."


def spam_env(relay, tmp_path, **extra):
    return relay.env(
        SPAM_BLOCKED_WORDS="lottery",
        ALLOWED_ORIGINS=SITE,
        REDIRECT_HOSTS="www.example.com",
        **extra,
    )


@pytest.fixture
def app3(make_app, relay, database_url, tmp_path):
    """An app that quarantines "lottery", on both databases."""
    return make_app(spam_env(relay, tmp_path, DATABASE_URL=database_url))


def three(client, headers):
    """Post an accepted, a quarantined and a honeypot post; return the answers."""
    return [
        post(client, FIELDS, headers=headers),
        post(client, {**FIELDS, "message": SPAMMY}, headers=headers),
        post(
            client,
            {**FIELDS, "message": "Autofilled, or a bot.", "_gotcha": "x"},
            headers=headers,
        ),
    ]


def same_answer(responses) -> None:
    shapes = {
        (
            r.status_code,
            r.headers.get("Content-Type"),
            RECEIPT.sub(b"RCPT", r.get_data()),
            RECEIPT.sub(b"RCPT", (r.headers.get("Location") or "").encode()),
        )
        for r in responses
    }
    assert len(shapes) == 1, shapes


def backlog(app) -> int:
    with ledger_of(app).engine.connect() as conn:
        return conn.execute(
            select(counters.c.value).where(counters.c.name == BACKLOG)
        ).scalar_one()


@pytest.mark.parametrize("headers", [JSON, HTML], ids=["json", "html"])
def test_three_verdicts_one_answer_one_row_each(app3, relay, headers):
    client = app3.test_client()
    answers = three(client, headers)
    same_answer(answers)
    rows = {r.state: r for r in ledger_of(app3).rows()}
    assert set(rows) == {"pending", "spam", "dropped"}

    spam = Verdict.from_json(rows["spam"].verdict)
    assert spam is not None and spam.name == "quarantine"
    assert spam.codes == ("blocked_word",) and spam.reasons[0].value == "lottery"
    assert rows["spam"].message == SPAMMY and rows["spam"].body_digest

    dropped = rows["dropped"]
    assert Verdict.from_json(dropped.verdict).codes == ("honeypot",)
    # A dropped row keeps what was sent: an owner can still release a real
    # customer's post that a browser's autofill put into the honeypot.
    assert dropped.message and dropped.subject and dropped.fields
    accepted = Verdict.from_json(rows["pending"].verdict)
    assert accepted.name == "accept" and accepted.reasons == ()

    # Only the accepted post is in the backlog, and only it reaches the relay.
    assert backlog(app3) == 1
    # The form's daily count holds the messages it got: not the tombstone.
    assert [count for _, _, count in ledger_of(app3).daily_counts(0)] == [2]
    assert deliver(app3) == 1
    (got,) = relay.received
    assert b"lottery" not in got.data
    assert {r.state for r in ledger_of(app3).rows()} == {"sent", "spam", "dropped"}
    assert deliver(app3) == 0


def test_hosted_form_answers_the_three_alike(make_app, relay, tmp_path):
    app = make_app(spam_env(relay, tmp_path))
    client = app.test_client()
    answers, thanks = [], []
    for fields in ({}, {"message": SPAMMY}, {"website": "https://bot.example"}):
        answers.append(post_form(client, **fields))
        thanks.append(client.get("/thanks"))
    same_answer(answers)
    same_answer(thanks)
    assert sorted(r.state for r in ledger_of(app).rows()) == [
        "dropped",
        "pending",
        "spam",
    ]
    assert deliver(app) == 1 and len(relay.received) == 1


def test_limits_apply_before_the_verdict(make_app, relay, tmp_path):
    app = make_app(spam_env(relay, tmp_path, RATE_LIMIT="1/minute"))
    client = app.test_client()
    assert post(client, FIELDS, headers=JSON).status_code == 200
    bot = post(client, {**FIELDS, "_gotcha": "x"}, headers=JSON)
    assert bot.status_code == 429
    assert len(ledger_of(app).rows()) == 1


def test_a_repeat_of_a_quarantined_post_gets_its_receipt(make_app, relay, tmp_path):
    app = make_app(spam_env(relay, tmp_path))
    client = app.test_client()
    headers = {**JSON, "Idempotency-Key": "k-1"}
    first = post(client, {**FIELDS, "message": SPAMMY}, headers=headers)
    again = post(client, {**FIELDS, "message": SPAMMY}, headers=headers)
    assert first.get_json()["id"] == again.get_json()["id"]
    assert [r.state for r in ledger_of(app).rows()] == ["spam"]


def test_the_log_line_carries_the_verdict_and_codes_never_content(
    make_app, relay, tmp_path, caplog
):
    app = make_app(spam_env(relay, tmp_path))
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="formpost.request"):
        post(client, {**FIELDS, "message": SPAMMY}, headers=JSON)
    (line,) = [r for r in caplog.records if r.name == "formpost.request"]
    assert (line.verdict, line.reasons) == ("quarantine", "blocked_word")
    assert "lottery" not in json.dumps(line.__dict__, default=str)


@pytest.mark.parametrize("kind", ["quarantine", "drop"])
def test_the_worker_never_claims_spam_or_dropped_rows(app3, kind):
    clock = use_fake_clock(app3)
    extra = {"message": SPAMMY} if kind == "quarantine" else {"_gotcha": "x"}
    assert (
        post(app3.test_client(), {**FIELDS, **extra}, headers=JSON).status_code == 200
    )
    clock.advance(10 * 86400)
    assert ledger_of(app3).claim(10, 60) == []
    assert backlog(app3) == 0
    assert ledger_of(app3).stats().backlog == 0


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_erase_and_retention_treat_spam_and_dropped_like_other_rows(app3, state):
    client = app3.test_client()
    three(client, JSON)
    ledger = ledger_of(app3)
    (row,) = [r for r in ledger.rows() if r.state == state]
    assert ledger.erase([row.receipt]) == 1
    erased = ledger.row(row.receipt)
    assert erased.state == "deleted" and erased.verdict is None
    assert erased.body_digest is None


def test_retention_erases_old_spam_and_dropped_rows(app3):
    client = app3.test_client()
    clock = use_fake_clock(app3)
    three(client, JSON)
    clock.advance(3 * 86400)
    ledger = ledger_of(app3)
    # The pending row is not delivered yet, so retention leaves it.
    assert ledger.erase_delivered_before(clock.now() - 86400) == 2
    assert sorted(r.state for r in ledger.rows()) == ["deleted", "deleted", "pending"]
