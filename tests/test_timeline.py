"""Each delivery attempt joins the timeline, in the transaction of its outcome."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from .fakeclock import FakeClock
from .helpers import deliver, ledger_of, mark_failed, mark_retry, mark_sent, post_form
from .relay import Relay
from .storekit import hosted, store


def test_attempts_are_recorded_in_order_with_time_and_reply(ledger, clock):
    receipt = store(ledger, hosted())
    start = clock.now()
    (row,) = ledger.claim(1, 60)
    assert mark_retry(ledger, row, "transient", "451 4.3.0 try later", 1)
    clock.advance(10)
    (row,) = ledger.claim(1, 60)
    assert mark_retry(ledger, row, "connection", "connection refused", 1)
    clock.advance(10)
    (row,) = ledger.claim(1, 60)
    assert mark_sent(ledger, row, "250 2.0.0 Ok: queued as 12345")
    detail = ledger.detail(receipt)
    assert [(a.at, a.outcome, a.error_kind, a.reply) for a in detail.attempts] == [
        (start, "retry", "transient", "451 4.3.0 try later"),
        (start + 10, "retry", "connection", "connection refused"),
        (start + 20, "sent", None, "250 2.0.0 Ok: queued as 12345"),
    ]
    assert detail.row.state == "sent" and detail.row.attempts == 3


def test_a_failure_and_a_retry_now_continue_the_timeline(ledger):
    receipt = store(ledger, hosted())
    (row,) = ledger.claim(1, 60)
    assert mark_failed(ledger, row, "permanent", "550 5.1.1 no such user")
    assert ledger.retry_now([receipt]) == 1
    (row,) = ledger.claim(1, 60)
    assert mark_sent(ledger, row)
    outcomes = [(a.outcome, a.reply) for a in ledger.detail(receipt).attempts]
    assert outcomes == [("failed", "550 5.1.1 no such user"), ("sent", "250 accepted")]


def test_a_released_claim_and_a_lost_lease_record_no_attempt(ledger, clock):
    first = store(ledger, hosted(1))
    (row,) = ledger.claim(1, 60)
    ledger.release([row])  # shutting down: never tried
    assert ledger.detail(first).attempts == []
    (stale,) = ledger.claim(1, 60)
    clock.advance(120)  # the lease runs out; another worker takes the row
    (fresh,) = ledger.claim(1, 60)
    assert not mark_sent(ledger, stale, "250 late")
    assert mark_sent(ledger, fresh, "250 mine")
    assert [a.reply for a in ledger.detail(first).attempts] == ["250 mine"]


def test_several_outcomes_settled_together_each_get_their_attempt(ledger):
    receipts = [store(ledger, hosted(n)) for n in range(4)]
    rows = ledger.claim(4, 60)
    outcomes = [
        ledger.sent(rows[0], "250 a"),
        ledger.failed(rows[1], "permanent", "550 b"),
        ledger.retry(rows[2], "transient", "421 c", 5),
        ledger.sent(rows[3], "250 d"),
    ]
    assert ledger.settle(outcomes) == [True] * 4
    got = [[(a.outcome, a.reply) for a in ledger.detail(r).attempts] for r in receipts]
    assert got == [
        [("sent", "250 a")],
        [("failed", "550 b")],
        [("retry", "421 c")],
        [("sent", "250 d")],
    ]


def test_detail_holds_every_stored_field_and_the_message_as_sent(ledger):
    post = hosted(
        name="Jane <b>Doe</b>",
        email="jane@example.com",
        message="<script>x</script>",
        client_ip="203.0.113.9",
        origin="https://www.example.com",
        user_agent="Mozilla/5.0",
    )
    receipt = store(ledger, post)
    detail = ledger.detail(receipt)
    assert detail.fields == list(post.content().fields)
    assert detail.row.receipt == receipt and detail.row.form_id == "hosted"
    assert (detail.row.client_ip, detail.row.origin, detail.row.user_agent) == (
        "203.0.113.9",
        "https://www.example.com",
        "Mozilla/5.0",
    )
    assert detail.raw.startswith(b"From: Formpost <forms@formpost.test>\r\n")
    assert b"Reply-To:" in detail.raw
    assert not detail.erased
    assert ledger.detail("NONE-XIST") is None


def test_a_real_delivery_records_the_relay_reply(
    make_app: Callable[..., Flask], relay: Relay, database_url: str
):
    app = make_app(relay.env(DATABASE_URL=database_url))
    assert post_form(app.test_client()).status_code == 303
    relay.reply_next("DATA", "451 4.3.0 Please try again")
    ledger = ledger_of(app)
    clock = FakeClock()
    ledger.clock = clock
    assert deliver(app, clock) == 1
    clock.advance(3600)
    assert deliver(app, clock) == 1
    (row,) = ledger.rows()
    attempts = ledger.detail(row.receipt).attempts
    assert [(a.outcome, a.error_kind) for a in attempts] == [
        ("retry", "transient"),
        ("sent", None),
    ]
    assert "451 4.3.0 Please try again" in attempts[0].reply
    assert attempts[1].reply.startswith("250")
    assert len(relay.received) == 1
