"""Spam and dropped rows in the ledger: never claimed, released by an owner."""

from __future__ import annotations

import pytest

from app.ledger import Filters
from app.spam import Verdict

from .helpers import deliver, envelope, mark_sent, spam_verdict, store_verdict
from .test_erase import backlog


def _stored(ledger, n=0):
    return ledger.enqueue(envelope(n), form_id="site", alias="sales", subject=f"s{n}")


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_the_worker_never_claims_spam_or_dropped_rows(ledger, clock, state):
    receipt = _stored(ledger)
    store_verdict(ledger, receipt, state=state)
    clock.advance(3600)
    assert ledger.claim(batch=10, lease=60) == []
    assert ledger.row(receipt).state == state
    assert backlog(ledger) == 0


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_release_moves_the_row_to_pending_due_now_keeping_the_verdict(
    ledger, clock, state
):
    receipt = _stored(ledger)
    verdict = spam_verdict()
    store_verdict(ledger, receipt, verdict, state=state)
    clock.advance(600)
    assert ledger.release_spam([receipt], by="owner@example.com") == 1
    row = ledger.row(receipt)
    assert row.state == "pending"
    assert row.next_attempt_at == clock.now() == row.queued_at
    assert Verdict.from_json(row.verdict) == verdict
    assert backlog(ledger) == 1
    (entry,) = ledger.detail(receipt).attempts
    assert (entry.outcome, entry.reply) == ("released", "released by owner@example.com")
    assert entry.at == clock.now()
    (claimed,) = ledger.claim(batch=10, lease=60)
    assert claimed.receipt == receipt
    assert claimed.attempts == 1  # a release is not a delivery attempt


@pytest.mark.parametrize("state", ["pending", "sent", "failed", "deleted"])
def test_release_leaves_rows_in_other_states_alone(ledger, clock, state):
    receipt = _stored(ledger)
    if state == "sent":
        (row,) = ledger.claim(batch=1, lease=60)
        mark_sent(ledger, row)
    elif state == "failed":
        (row,) = ledger.claim(batch=1, lease=60)
        ledger.settle([ledger.failed(row, "permanent", "550 no")])
    elif state == "deleted":
        ledger.erase([receipt])
    before = ledger.row(receipt)
    queued = backlog(ledger)
    assert ledger.release_spam([receipt]) == 0
    after = ledger.row(receipt)
    assert after.state == state
    assert after._mapping == before._mapping
    assert "released" not in [a.outcome for a in ledger.detail(receipt).attempts]
    assert backlog(ledger) == queued


def test_release_counts_only_what_it_moved(ledger, clock):
    held = [_stored(ledger, n) for n in range(3)]
    for receipt in held:
        store_verdict(ledger, receipt)
    other = _stored(ledger, 9)
    assert ledger.release_spam([*held[:2], other, "NONE-XIST"]) == 2
    assert ledger.release_spam(held[:2]) == 0  # already released
    assert [ledger.row(r).state for r in held] == ["pending", "pending", "spam"]
    assert backlog(ledger) == 3


def test_a_dropped_tombstone_without_its_message_is_not_released(ledger, clock):
    receipt = _stored(ledger)
    store_verdict(ledger, receipt, state="dropped", keep_message=False)
    assert ledger.release_spam([receipt]) == 0
    assert ledger.row(receipt).state == "dropped"
    assert ledger.claim(batch=10, lease=60) == []


def test_release_matching_releases_only_held_rows_of_the_filter(ledger, clock):
    spam = [_stored(ledger, n) for n in range(2)]
    for receipt in spam:
        store_verdict(ledger, receipt)
    dropped = _stored(ledger, 5)
    store_verdict(ledger, dropped, state="dropped")
    _stored(ledger, 6)
    done = ledger.release_matching(Filters(state="spam"), by="owner@example.com")
    assert done == 2
    assert ledger.row(dropped).state == "dropped"
    assert backlog(ledger) == 3


def test_hidden_states_stay_out_of_a_search(ledger, clock):
    spam = _stored(ledger, 1)
    store_verdict(ledger, spam)
    kept = _stored(ledger, 2)
    page = ledger.search(limit=10)
    assert {r.receipt for r in page.rows} == {spam, kept}
    hidden = Filters(hide=("spam", "dropped"))
    assert [r.receipt for r in ledger.iterate(hidden)] == [kept]


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_an_erased_spam_row_cannot_be_released(ledger, clock, state):
    receipt = _stored(ledger)
    store_verdict(ledger, receipt, state=state)
    assert ledger.erase([receipt]) == 1
    assert ledger.row(receipt).state == "deleted"
    assert ledger.release_spam([receipt]) == 0
    assert ledger.row(receipt).state == "deleted"
    assert backlog(ledger) == 0


def test_a_released_row_reaches_the_relay(app_on_db, relay):
    from .helpers import ledger_of

    ledger = ledger_of(app_on_db)
    receipt = _stored(ledger, 42)
    store_verdict(ledger, receipt)
    assert deliver(app_on_db) == 0
    assert relay.received == []
    assert ledger.release_spam([receipt], by="owner@example.com") == 1
    assert deliver(app_on_db) == 1
    (message,) = relay.received
    assert b"body 42" in message.data
    assert ledger.row(receipt).state == "sent"
    outcomes = [a.outcome for a in ledger.detail(receipt).attempts]
    assert outcomes == ["released", "sent"]


def test_count_in_counts_only_the_states_asked_for(ledger, clock):
    for n in range(3):
        receipt = _stored(ledger, n)
        if n:
            store_verdict(ledger, receipt, state="spam" if n == 1 else "dropped")
    assert ledger.count_in(("spam", "dropped")) == {"spam": 1, "dropped": 1}
    assert ledger.count_in(("failed",)) == {"failed": 0}
