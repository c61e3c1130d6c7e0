"""The console's spam view: counts, reasons, releasing one or all, as the owner.

Rows are stored through /f/ as any post is, then given the state and verdict
the accept path gives a quarantined or dropped post (helpers.store_verdict).
Real ledger on SQLite and PostgreSQL, real relay for the delivery.
"""

from __future__ import annotations

import logging
import re
from html import unescape

import pytest

from app.spam import ACCEPT

from .consolekit import EMAIL, log_in, text_of, token, with_owner
from .helpers import CSRF_RE, deliver, ledger_of, spam_verdict, store_verdict
from .test_console_inbox import SITE, post, receipts_on


@pytest.fixture
def console(make_app, relay, database_url):
    return with_owner(
        make_app(relay.env(ALLOWED_ORIGINS=SITE, DATABASE_URL=database_url))
    )


@pytest.fixture
def owner(console):
    client = console.test_client()
    log_in(client)
    return client


def held(app, state="spam", **fields) -> str:
    receipt = post(app, **fields)
    store_verdict(ledger_of(app), receipt, state=state)
    return receipt


def test_the_inbox_hides_spam_and_the_spam_views_show_it_with_counts(console, owner):
    kept = post(console, subject="A real question")
    spam = [held(console, subject=f"SEO offer {n}") for n in range(2)]
    dropped = held(console, state="dropped", subject="Crypto loan")
    inbox = owner.get("/admin/").get_data(as_text=True)
    assert receipts_on(inbox) == [kept]
    words = text_of(inbox)
    assert "Quarantined (2)" in words and "Dropped (1)" in words
    assert "1 matching submission" in words

    view = owner.get("/admin/?state=spam").get_data(as_text=True)
    assert receipts_on(view) == spam[::-1]
    assert "Reasons" in view
    assert "links, altcha_missing (score 7.5)" in text_of(view)
    assert "Release all 2 matching" in view and "Retry all" not in view
    assert 'aria-current="page">Quarantined' in view

    view = owner.get("/admin/?state=dropped").get_data(as_text=True)
    assert receipts_on(view) == [dropped]


def test_a_quarantined_page_shows_every_reason_and_a_release_button(console, owner):
    receipt = held(console, subject="SEO offer")
    page = owner.get(f"/admin/s/{receipt}").get_data(as_text=True)
    words = text_of(page)
    assert "Spam verdict: quarantined" in words
    assert "Held back: not delivered until you release it." in words
    assert "Score 7.5." in words
    for reason in spam_verdict().reasons:
        row = (
            f"{reason.layer} {reason.rule} {reason.value} {reason.threshold} "
            f"{reason.score:g}"
        )
        assert row in words
    assert f'action="/admin/s/{receipt}/release"' in page
    assert "Release and deliver" in page
    assert "Retry now" not in page


def test_an_accepted_post_has_no_spam_section(console, owner):
    plain = post(console)
    scored = post(console)
    store_verdict(ledger_of(console), scored, ACCEPT, state="pending")
    for receipt in (plain, scored):
        page = owner.get(f"/admin/s/{receipt}").get_data(as_text=True)
        assert "Spam verdict" not in page
        assert "/release" not in page


def test_release_delivers_it_and_the_page_says_it_was_overruled(
    console, owner, relay, caplog
):
    receipt = held(console, subject="Looks like spam", message="but it is Ada")
    assert deliver(console) == 0
    csrf = token(owner, f"/admin/s/{receipt}")
    with caplog.at_level(logging.INFO, logger="formpost.console"):
        response = owner.post(
            f"/admin/s/{receipt}/release",
            data={"csrf_token": csrf},
            follow_redirects=True,
        )
    page = response.get_data(as_text=True)
    assert "1 submission released: it is queued for delivery" in page
    assert "Released: the verdict below was overruled." in text_of(page)
    assert "Release and deliver" not in page
    assert f"released by {EMAIL}" in page  # the timeline says who
    logged = [r.getMessage() for r in caplog.records if r.name == "formpost.console"]
    assert logged == [f"{EMAIL} released 1 submission(s)"]
    assert deliver(console) == 1
    (received,) = relay.received
    assert received.message["Subject"] == "Looks like spam"
    assert ledger_of(console).row(receipt).state == "sent"


def test_release_of_a_row_not_held_changes_nothing(console, owner):
    receipt = post(console)
    csrf = token(owner, f"/admin/s/{receipt}")
    response = owner.post(
        f"/admin/s/{receipt}/release", data={"csrf_token": csrf}, follow_redirects=True
    )
    assert "Nothing to release" in response.get_data(as_text=True)
    assert ledger_of(console).detail(receipt).attempts == []


def test_a_dropped_tombstone_without_its_message_offers_no_release(console, owner):
    receipt = post(console)
    store_verdict(ledger_of(console), receipt, state="dropped", keep_message=False)
    page = owner.get(f"/admin/s/{receipt}").get_data(as_text=True)
    assert "Spam verdict: dropped" in text_of(page)
    assert "its message was not kept, so there is nothing to release" in page
    assert "Release and deliver" not in page
    assert "the fields and the message were not kept" in page
    assert "The email as sent" not in page


@pytest.mark.parametrize("path", ["/admin/s/{r}/release", "/admin/bulk/release"])
@pytest.mark.parametrize("who", ["anonymous", "no csrf", "wrong csrf"])
def test_only_a_logged_in_owner_with_the_csrf_token_can_release(
    console, owner, path, who
):
    receipt = held(console)
    client = console.test_client() if who == "anonymous" else owner
    data = {"confirm": "y", "state": "spam"}
    if who == "anonymous":  # a valid CSRF token of its own session, no log-in
        data["csrf_token"] = token(client, "/admin/login")
    elif who == "wrong csrf":
        data["csrf_token"] = "not-the-token"
    response = client.post(path.format(r=receipt), data=data)
    if who == "anonymous":
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/admin/login")
    else:
        assert response.status_code == 400
    assert ledger_of(console).row(receipt).state == "spam"
    assert deliver(console) == 0


def test_release_all_matching_after_a_confirmation(console, owner, relay):
    spam = [held(console, subject=f"SEO offer {n}") for n in range(2)]
    other = held(console, subject="Other thing")
    dropped = held(console, state="dropped", subject="SEO offer dropped")
    view = owner.get("/admin/?state=spam&q=SEO").get_data(as_text=True)
    link = unescape(re.search(r'href="(/admin/bulk/release[^"]*)"', view).group(1))
    confirm = owner.get(link).get_data(as_text=True)
    assert "Release 2 matching submissions?" in confirm
    assert "delivered after all" in confirm
    csrf = CSRF_RE.search(confirm).group(1)
    form = {"csrf_token": csrf, "state": "spam", "q": "SEO"}
    assert owner.post("/admin/bulk/release", data=form).status_code == 400
    assert [ledger_of(console).row(r).state for r in spam] == ["spam", "spam"]
    done = owner.post(
        "/admin/bulk/release", data={**form, "confirm": "y"}, follow_redirects=True
    )
    assert "2 submissions released" in done.get_data(as_text=True)
    assert ledger_of(console).row(other).state == "spam"
    assert ledger_of(console).row(dropped).state == "dropped"
    assert deliver(console) == 2
    assert sorted(r.message["Subject"] for r in relay.received) == [
        "SEO offer 0",
        "SEO offer 1",
    ]


def test_spam_can_be_deleted_and_then_offers_no_release(console, owner):
    receipt = held(console, message="buy links")
    csrf = token(owner, f"/admin/s/{receipt}")
    owner.post(f"/admin/s/{receipt}/delete", data={"csrf_token": csrf, "confirm": "y"})
    assert ledger_of(console).row(receipt).state == "deleted"
    page = owner.get(f"/admin/s/{receipt}").get_data(as_text=True)
    assert "buy links" not in page and "Release and deliver" not in page


def test_the_dashboard_counts_spam_and_links_to_its_views(console, owner):
    held(console)
    held(console)
    held(console, state="dropped")
    page = owner.get("/admin/dashboard").get_data(as_text=True)
    assert "Spam 2 quarantined , 1 dropped (not delivered)" in text_of(page)
    assert 'href="/admin/?state=spam"' in page
    assert 'href="/admin/?state=dropped"' in page
