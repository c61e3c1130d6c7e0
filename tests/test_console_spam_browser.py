"""The spam view in chromium: an owner finds a quarantined post, reads why, releases it.

Formpost is served on loopback (tests/chromium.py); the post is stored through
/f/ and given the verdict the accept path gives a quarantined post; a real
worker then delivers it to the aiosmtpd test relay.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from .chromium import TIMEOUT_MS, require_chromium, serve_wsgi
from .helpers import deliver, ledger_of, spam_verdict, store_verdict
from .test_console_e2e_browser import console, log_in, post  # noqa: F401

pytestmark = pytest.mark.browser
require_chromium()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1040, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()
    assert dialogs == []


def test_the_owner_reads_the_reasons_and_releases_a_quarantined_post(
    console,  # noqa: F811
    relay,
    page: Page,
):
    real = post(console, subject="Price for 40 chairs?", message="See our site")
    store_verdict(ledger_of(console), real)
    post(console, subject="An ordinary question")
    assert deliver(console) == 1  # the ordinary one: the held one stays
    with serve_wsgi(console) as base:
        log_in(page, base)
        rows = page.locator("table.inbox tbody tr")
        expect(rows).to_have_count(1)  # the inbox shows what reached the owner
        page.get_by_role("link", name="Quarantined (1)").click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("links, altcha_missing")
        page.get_by_role("link", name=real).click()
        section = page.locator("section.spam")
        expect(section.get_by_role("heading")).to_have_text("Spam verdict: quarantined")
        reasons = section.locator("table.reasons tbody tr")
        expect(reasons).to_have_count(2)
        for n, reason in enumerate(spam_verdict().reasons):
            cells = reasons.nth(n).locator("td")
            expect(cells).to_have_text(
                [
                    reason.layer,
                    reason.rule,
                    reason.value,
                    reason.threshold,
                    f"{reason.score:g}",
                ]
            )
        assert deliver(console) == 0

        page.get_by_role("button", name="Release and deliver").click()
        expect(page.get_by_role("status")).to_have_text(
            "1 submission released: it is queued for delivery"
        )
        expect(page.get_by_role("button", name="Release and deliver")).to_have_count(0)
        expect(page.locator("table.timeline")).to_contain_text("released by")
    assert deliver(console) == 1
    subjects = [r.message["Subject"] for r in relay.received]
    assert subjects == ["An ordinary question", "Price for 40 chairs?"]
    assert ledger_of(console).row(real).state == "sent"
