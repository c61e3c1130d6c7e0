"""The inbox end to end in chromium: log in, search, open, retry, delete, export.

Formpost is served on loopback (tests/chromium.py); the relay is the real
aiosmtpd test relay. A hostile submission's page must render inert. The
submission page's screenshot (docs/console-submission.png) comes from here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from .chromium import (
    TIMEOUT_MS,
    artifacts_dir,
    require_chromium,
    serve_wsgi,
)
from .helpers import deliver, fast_hashing, ledger_of, services_of

pytestmark = pytest.mark.browser
require_chromium()

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery"
SITE = "https://www.example.com"
RLO = "\u202e"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        accept_downloads=True, viewport={"width": 1040, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()
    assert dialogs == []


@pytest.fixture
def console(make_app, relay):
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE))
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    return app


def post(app, **fields) -> str:
    data = {"email": "ada@example.net", "message": "Hi", **fields}
    response = app.test_client().post(
        "/f/default", data=data, headers={"Origin": SITE, "Accept": "application/json"}
    )
    assert response.status_code == 200
    return response.get_json()["id"]


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def test_log_in_search_open_retry_delete_and_export(console, relay, page: Page):
    post(console, subject="Opening hours", name="Bob", message="When do you open?")
    failed = post(
        console,
        subject="Order 1042 arrived damaged",
        name="Zoë Ångström",
        message="The box was crushed.\nPhotos on request.",
        order="1042",
    )
    relay.refuse_recipient("sales@example.com", "550 5.1.1 <sales@example.com>: no")
    deliver(console)
    post(console, subject='=HYPERLINK("http://evil")', name="山田 太郎 🎉")
    with serve_wsgi(console) as base:
        log_in(page, base)
        rows = page.locator("table.inbox tbody tr")
        expect(rows).to_have_count(3)
        page.get_by_label("Search").fill("damaged")
        page.get_by_role("button", name="Filter").click()
        expect(rows).to_have_count(1)
        page.get_by_role("link", name=failed).click()
        expect(page.get_by_role("heading", name=f"Submission {failed}")).to_be_visible()
        expect(
            page.locator("td.value", has_text="The box was crushed.")
        ).to_be_visible()
        expect(page.locator("table.timeline")).to_contain_text("550 5.1.1")
        expect(page.locator("dl.facts")).to_contain_text("failed")
        shot = artifacts_dir() / "console-submission.png"
        page.set_viewport_size({"width": 960, "height": 1180})
        page.screenshot(path=shot)
        assert shot.stat().st_size < 250_000  # small; receipts vary it a little

        page.get_by_role("button", name="Retry now").click()
        expect(page.get_by_role("status")).to_have_text("1 submission queued to retry")
        assert ledger_of(console).row(failed).state == "pending"

        page.get_by_role("link", name="Delete…").click()
        page.get_by_role("button", name="Delete").click()  # not ticked: asked again
        expect(page.get_by_role("status")).to_contain_text("Tick the box")
        assert ledger_of(console).row(failed).erased_at is None
        page.get_by_label("Yes, erase this submission").check()
        page.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("status")).to_have_text("1 submission deleted")
        expect(page.locator("main")).not_to_contain_text("crushed")
        assert ledger_of(console).row(failed).state == "deleted"

        page.get_by_role("link", name="Inbox", exact=True).click()
        with page.expect_download() as download:
            page.get_by_role("link", name="Export CSV").click()
        saved = download.value
        assert saved.suggested_filename.startswith("formpost-")
        body = open(saved.path(), "rb").read()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8")[1:], newline="")))
    assert [r["state"] for r in rows] == ["pending", "deleted", "failed"]
    assert rows[0]["subject"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["name"] == "山田 太郎 🎉"
    assert rows[1]["receipt"] == failed and rows[1]["message"] == ""


def test_a_hostile_submissions_page_renders_inert(console, page: Page):
    receipt = post(
        console,
        subject="<script>alert(1)</script>",
        name="<img src=x onerror=alert(2)>",
        message=(RLO + "fdp.exe ") * 200,
        website="javascript:alert(3)",
        **{"<svg onload=alert(4)>": "<iframe src=javascript:alert(5)>"},
    )
    requests: list[str] = []
    page.context.on("request", lambda r: requests.append(r.url))
    with serve_wsgi(console) as base:
        log_in(page, base)
        for path in (f"/admin/s/{receipt}", "/admin/?q=fdp", "/admin/bulk/delete"):
            page.goto(base + path)
            main = page.locator("main")
            assert main.locator("script, img, iframe, svg, object, embed").count() == 0
            assert main.locator("[onerror], [onload], a[href^=javascript]").count() == 0
        page.goto(f"{base}/admin/s/{receipt}")
        expect(page.locator("td.value", has_text="javascript:alert(3)")).to_be_visible()
        # The override stays inside its cell: the receipt still reads as it is.
        expect(page.locator("h1 code")).to_have_text(receipt)
        page.wait_for_timeout(300)
    assert [u for u in requests if not u.startswith(base + "/")] == []
