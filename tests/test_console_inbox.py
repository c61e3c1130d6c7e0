"""The inbox, a submission's page and the owner's actions, through the pages.

Real parts: the app from create_app(), its ledger on SQLite and PostgreSQL,
the aiosmtpd test relay for delivery. Pages are read as an owner's browser
gets them; actions are POSTs carrying the page's own CSRF token.
"""

from __future__ import annotations

import logging
import re
from html import unescape

import pytest
from sqlalchemy import update

from app.ledger import Content, submissions

from .consolekit import EMAIL, log_in, text_of, token, with_owner
from .fakeclock import FakeClock
from .helpers import CSRF_RE, deliver, envelope, ledger_of

SITE = "https://www.example.com"
DAY = 86400.0
NOON = 1_764_676_800.0  # 2025-12-02 12:00 UTC


def receipts_on(page: str) -> list[str]:
    return re.findall(r'<a href="/admin/s/([^"]+)"><code>', page)


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


def post(app, form="default", **fields) -> str:
    """Post to /f/<form> from the allowed site; return the new receipt."""
    data = {"email": "ada@example.net", "message": "Hi", **fields}
    response = app.test_client().post(
        f"/f/{form}", data=data, headers={"Origin": SITE, "Accept": "application/json"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["id"]


# -- the inbox: search, filters, pages ---------------------------------------------


def test_search_and_filters_through_the_inbox(console, owner, relay):
    ledger = ledger_of(console)
    ledger.clock = FakeClock(NOON - 2 * DAY)
    old = post(console, subject="Invoice overdue", name="Zoë", message="Pay now")
    ledger.clock = FakeClock(NOON)
    cjk = post(console, subject="配送について", message="荷物が届きません")
    plain = post(console, subject="Opening hours", email="bob@example.org")
    other = post(console, subject="Opening soon", company="Acme Widgets")
    relay.refuse_recipient("sales@example.com", "550 5.1.1 no such user")
    deliver(console, ledger.clock)  # every one of them fails

    def shown(query: str) -> list[str]:
        response = owner.get(f"/admin/?{query}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return receipts_on(response.get_data(as_text=True))

    assert shown("") == [other, plain, cjk, old]  # newest first
    assert shown("q=opening") == [other, plain]
    assert shown("q=open") == [other, plain]  # the last word as a prefix
    assert shown("q=opening+hours") == [plain]  # every word must match
    assert shown("q=bob%40example.org") == [plain]  # the email
    assert shown("q=zoë") == [old]  # the name
    assert shown("q=acme") == [other]  # another field
    assert shown("q=overdue+pay") == [old]  # subject and message together
    assert shown("q=%22*+AND+NEAR%28") == []  # query syntax is only words
    assert shown("state=failed") == [other, plain, cjk, old]
    assert shown("state=sent") == []
    assert shown("form=hosted") == []
    assert shown("form=default&q=opening") == [other, plain]
    assert shown("from=2025-12-02&to=2025-12-02") == [other, plain, cjk]
    assert shown("to=2025-11-30") == [old]  # To is a whole UTC day
    assert shown("from=2025-11-30&to=2025-11-30") == [old]
    assert shown("from=2025-12-03") == []
    page = owner.get("/admin/?q=opening&state=failed").get_data(as_text=True)
    assert "2 matching submissions" in text_of(page)
    assert 'value="opening"' in page and '<option value="failed" selected>' in page


def test_pages_run_newest_first_without_duplicates(console, owner):
    ledger = ledger_of(console)
    stored = [
        ledger.enqueue(envelope(n), form_id="default", alias="sales", subject=f"n{n}")
        for n in range(120)
    ]
    page = owner.get("/admin/").get_data(as_text=True)
    seen = receipts_on(page)
    assert len(seen) == 50 and "120 matching submissions" in page
    # Rows arriving meanwhile neither repeat nor push rows off the next page.
    ledger.enqueue(envelope(999), form_id="default", alias="sales", subject="new")
    while older := re.search(r'<a href="([^"]+)" rel="next">Older</a>', page):
        page = owner.get(unescape(older.group(1))).get_data(as_text=True)
        seen += receipts_on(page)
    assert seen == stored[::-1]


def test_the_older_link_keeps_the_filter(console, owner):
    ledger = ledger_of(console)
    for n in range(60):
        ledger.enqueue(envelope(n), form_id="default", alias="sales", subject=f"x{n}")
    for n in range(60, 70):
        ledger.enqueue(envelope(n), form_id="other", alias="sales", subject="y")
    page = owner.get("/admin/?form=default").get_data(as_text=True)
    link = unescape(re.search(r'<a href="([^"]+)" rel="next">', page).group(1))
    assert "form=default" in link and "after=" in link
    second = owner.get(link).get_data(as_text=True)
    assert len(receipts_on(second)) == 10
    # A form no longer configured is still a choice once filtered on.
    page = owner.get("/admin/?form=other").get_data(as_text=True)
    assert '<option value="other" selected>' in page
    assert len(receipts_on(page)) == 10


@pytest.mark.parametrize("cursor", ["abc", "0", "-5", "1" * 40, "1e3"])
def test_a_bad_cursor_says_the_link_is_stale(owner, cursor):
    response = owner.get(f"/admin/?after={cursor}")
    assert response.status_code == 400
    assert "This link is stale" in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("from=2025-13-01", "From must be a date like 2026-12-31."),
        ("to=yesterday", "To must be a date like 2026-12-31."),
        ("from=2025-12-03&to=2025-12-01", "From must be on or before To."),
        ("state=lost", "State must be one of pending, sending, sent, failed"),
    ],
)
def test_bad_filters_rerender_the_form_with_an_error(owner, query, error):
    response = owner.get(f"/admin/?{query}&q=%3Cb%3Ekept%3C%2Fb%3E")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert error in unescape(page)
    assert 'value="&lt;b&gt;kept&lt;/b&gt;"' in page  # what was typed stays, escaped
    assert '<form method="get"' in page


def test_the_inbox_shows_name_email_and_subject_escaped_and_isolated(console, owner):
    post(console, subject="<script>alert(1)</script>", name="\u202eevil <b>")
    page = owner.get("/admin/").get_data(as_text=True)
    assert "<script>alert(1)" not in page and "<b>" not in page
    assert '<td dir="auto">&lt;script&gt;alert(1)&lt;/script&gt;</td>' in page
    assert "<bdi>\u202eevil &lt;b&gt;</bdi>" in page
    assert '<bdi class="muted">ada@example.net</bdi>' in page


# -- a submission's page -----------------------------------------------------------


def test_a_submissions_page_shows_fields_email_and_timeline(console, owner, relay):
    receipt = post(
        console,
        subject="Order <1042>",
        name="Zoë",
        message="line one\n  indented <img src=x onerror=alert(1)>",
        phone="+44 20 7946 0000",
    )
    relay.refuse_recipient("sales@example.com", "451 4.3.0 try again <later>")
    deliver(console)
    response = owner.get(
        f"/admin/s/{receipt}",
        headers={"User-Agent": "ignored: the page shows the visitor's"},
    )
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "<img" not in page
    fields = dict(
        (unescape(n), unescape(v))
        for n, v in re.findall(
            r'<tr><th scope="row" dir="auto">(.*?)</th><td dir="auto" class="value">'
            r"(.*?)</td></tr>",
            page,
            re.S,
        )
    )
    assert fields["message"] == "line one\n  indented <img src=x onerror=alert(1)>"
    assert fields["phone"] == "+44 20 7946 0000" and fields["name"] == "Zoë"
    text = text_of(page)
    assert f"Receipt {receipt} Form default State pending" in text
    assert "Client IP 127.0.0.1" in text and f"Origin {SITE}" in text
    headers = dict(
        (unescape(n), unescape(v))
        for n, v in re.findall(
            r'<tr><th scope="row">([^<]*)</th><td dir="auto">(.*?)</td></tr>', page
        )
    )
    assert headers["To"] == "sales@example.com" and "Order <1042>" in headers["Subject"]
    assert headers["Reply-To"] == "Zoë <ada@example.net>"
    body = unescape(
        re.search(r'<pre class="message" dir="auto">(.*?)</pre>', page, re.S)[1]
    )
    assert "indented <img src=x onerror=alert(1)>" in body
    timeline = re.search(r'<table class="inbox timeline">.*?</table>', page, re.S)[0]
    assert "retry" in timeline and "451 4.3.0 try again &lt;later&gt;" in timeline
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", timeline)
    assert "Retry now" in page


def test_an_unknown_receipt_is_404(owner):
    assert owner.get("/admin/s/NOPE-NOPE").status_code == 404
    assert owner.get("/admin/s/" + "A" * 300).status_code == 404


def test_a_row_without_fields_shows_the_parsed_message(console, owner):
    receipt = post(console, subject="Old row", company="Acme")
    with ledger_of(console).engine.begin() as conn:
        conn.execute(
            update(submissions)
            .where(submissions.c.receipt == receipt)
            .values(fields=None)
        )
    page = owner.get(f"/admin/s/{receipt}").get_data(as_text=True)
    assert '<th scope="row" dir="auto">company</th>' in page
    assert '<td dir="auto" class="value">Acme</td>' in page


# -- actions -----------------------------------------------------------------------


def test_retry_now_makes_a_failed_submission_due(console, owner, relay, caplog):
    receipt = post(console, message="secret words")
    relay.refuse_recipient("sales@example.com", "550 5.1.1 no such user")
    deliver(console)
    assert ledger_of(console).row(receipt).state == "failed"
    csrf = token(owner, f"/admin/s/{receipt}")
    with caplog.at_level(logging.INFO, logger="formpost.console"):
        response = owner.post(
            f"/admin/s/{receipt}/retry",
            data={"csrf_token": csrf},
            follow_redirects=True,
        )
    assert "1 submission queued to retry" in response.get_data(as_text=True)
    assert ledger_of(console).row(receipt).state == "pending"
    logged = [r.getMessage() for r in caplog.records if r.name == "formpost.console"]
    assert logged == [f"{EMAIL} retried 1 submission(s)"]  # once, no content
    page = owner.get(f"/admin/s/{receipt}").get_data(as_text=True)
    assert "Retry now" in page


def test_delete_asks_first_then_leaves_a_tombstone(console, owner):
    receipt = post(console, subject="Private", message="my secret")
    page = owner.get(f"/admin/s/{receipt}").get_data(as_text=True)
    assert f'href="/admin/s/{receipt}?confirm=delete"' in page
    confirm = owner.get(f"/admin/s/{receipt}?confirm=delete").get_data(as_text=True)
    csrf = CSRF_RE.search(confirm).group(1)
    assert 'name="confirm"' in confirm
    # Without the box ticked: nothing erased, back to the confirmation.
    unticked = owner.post(f"/admin/s/{receipt}/delete", data={"csrf_token": csrf})
    assert unticked.status_code == 302
    assert unticked.headers["Location"].endswith("?confirm=delete")
    assert ledger_of(console).row(receipt).state == "pending"
    done = owner.post(
        f"/admin/s/{receipt}/delete",
        data={"csrf_token": csrf, "confirm": "y"},
        follow_redirects=True,
    )
    page = done.get_data(as_text=True)
    assert "1 submission deleted" in page
    assert "my secret" not in page and "Private" not in page
    assert "State erased" in text_of(page) and "Erased " in text_of(page)
    assert "Retry now" not in page and "Delete" not in page.split("<main")[1]
    detail = ledger_of(console).detail(receipt)
    assert detail.erased and detail.raw is None and detail.fields is None


ACTIONS = [
    "/admin/s/{r}/retry",
    "/admin/s/{r}/release",
    "/admin/s/{r}/delete",
    "/admin/bulk/retry",
    "/admin/bulk/release",
    "/admin/bulk/delete",
]


@pytest.mark.parametrize("path", ACTIONS)
@pytest.mark.parametrize("csrf", ["missing", "wrong"])
def test_every_action_is_refused_without_the_csrf_token(console, owner, path, csrf):
    receipt = post(console)
    data = {"confirm": "y"}
    if csrf == "wrong":
        data["csrf_token"] = "not-the-token"
    response = owner.post(path.format(r=receipt), data=data)
    assert response.status_code == 400
    row = ledger_of(console).row(receipt)
    assert row.state == "pending" and row.erased_at is None
    assert owner.get(path.format(r=receipt)).status_code in (404, 405, 200)


def test_actions_need_a_log_in(console):
    receipt = post(console)
    client = console.test_client()
    for path in ACTIONS:
        response = client.post(path.format(r=receipt), data={"confirm": "y"})
        assert response.status_code in (302, 400)
    assert client.get(f"/admin/s/{receipt}").status_code == 302
    assert ledger_of(console).row(receipt).state == "pending"


def test_bulk_actions_act_on_the_filter_after_a_confirmation(console, owner, caplog):
    keep = [post(console, subject="keep me") for _ in range(2)]
    spam = [post(console, subject=f"cheap pills {n}") for n in range(3)]
    bulk = owner.get("/admin/?q=pills").get_data(as_text=True)
    assert "Delete all 3 matching" in bulk and "Retry all 3 matching" in bulk
    link = unescape(re.search(r'href="(/admin/bulk/delete[^"]*)"', bulk).group(1))
    confirm = owner.get(link)
    page = confirm.get_data(as_text=True)
    assert "Delete 3 matching submissions?" in page
    assert '<input type="hidden" name="q" value="pills">' in page
    csrf = CSRF_RE.search(page).group(1)
    unticked = owner.post(link, data={"csrf_token": csrf, "q": "pills"})
    assert unticked.status_code == 400 and "Tick the box" in unticked.get_data(
        as_text=True
    )
    assert all(ledger_of(console).row(r).state == "pending" for r in spam)
    with caplog.at_level(logging.INFO, logger="formpost.console"):
        done = owner.post(
            "/admin/bulk/delete",
            data={"csrf_token": csrf, "q": "pills", "confirm": "y"},
        )
    assert done.status_code == 302 and done.headers["Location"] == "/admin/?q=pills"
    landing = owner.get(done.headers["Location"]).get_data(as_text=True)
    assert "3 submissions deleted" in landing
    assert [ledger_of(console).row(r).state for r in spam] == ["deleted"] * 3
    assert [ledger_of(console).row(r).state for r in keep] == ["pending"] * 2
    logged = [r.getMessage() for r in caplog.records if r.name == "formpost.console"]
    assert logged == [f"{EMAIL} delete matching 3 submission(s)"]
    # Retry all matching: only the filter's rows, counted once.
    again = owner.post(
        "/admin/bulk/retry",
        data={"csrf_token": csrf, "q": "keep", "confirm": "y"},
        follow_redirects=True,
    )
    assert "2 submissions queued to retry" in again.get_data(as_text=True)


def test_bulk_with_a_bad_filter_or_action_is_refused(console, owner):
    assert owner.get("/admin/bulk/retry?from=nope").status_code == 400
    assert owner.get("/admin/bulk/explode").status_code == 404


def test_content_columns_are_what_the_console_reads(console):
    """The inbox's From cell reads name and email columns, not the fields list."""
    ledger = ledger_of(console)
    content = Content(fields=(("x", "y"),), name="Only Name", email="e@example.org")
    ledger.enqueue(
        envelope(1), form_id="default", alias="sales", subject="s", content=content
    )
    client = console.test_client()
    log_in(client)
    page = client.get("/admin/").get_data(as_text=True)
    assert "<bdi>Only Name</bdi>" in page
