"""The console in headless chromium: log in, inbox, dashboard, doctor, forms page.

Formpost is served by a threaded werkzeug server on loopback; the forms
page's own snippets are copied out of the page and served by a static site
on another origin, then submitted. Hostile submissions must render inert:
no dialog, no request to any other host, no element made from their text.
Screenshots (docs/console-*.png come from these) go to artifacts_dir().
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import BrowserContext, Page, expect

from .chromium import (
    artifacts_dir,
    require_chromium,
    serve_wsgi,
)
from .fakeclock import FakeClock
from .helpers import deliver, fast_hashing, ledger_of, services_of
from .relay import Relay

pytestmark = pytest.mark.browser
require_chromium()

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery"
RLO = "\u202e"
HOSTILE_SUBJECTS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "javascript:alert(1)",
    (RLO + "fdp.exe ") * 20,
]
HOSTILE_FORMS = """
[forms.support]
recipients = ["support"]
allowed_origins = ["https://www.example.com"]
subject = "<img src=x onerror=alert(2)> {subject}"
honeypot = '"><script>alert(3)</script>'
required = ["<svg onload=alert(4)>"]
"""
THANKS = "Thank you! Your message has been received."


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static site on its own origin: (origin, folder it serves)."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def owner_app(make_app: Callable[..., Flask], env: dict[str, str]) -> Flask:
    app = make_app(env)
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    return app


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/")
    expect(page).to_have_url(f"{base}/admin/login?next=%2Fadmin%2F")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}/admin/")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


class Watch:
    """Everything a page did that it should not: dialogs, foreign requests, CSP."""

    def __init__(self, context: BrowserContext, page: Page, base: str) -> None:
        self.base = base
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.csp: list[str] = []
        page.on("dialog", self._dialog)
        context.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "console",
            lambda m: self.csp.append(m.text) if "Content Security" in m.text else None,
        )

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def foreign(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.base + "/")]


def test_hostile_submissions_render_inert_everywhere(
    make_app, relay: Relay, tmp_path: Path, new_context
):
    forms = tmp_path / "forms.toml"
    forms.write_text(HOSTILE_FORMS, encoding="utf-8")
    site = "https://www.example.com"
    app = owner_app(make_app, relay.env(FORMS_FILE=str(forms), ALLOWED_ORIGINS=site))
    client = app.test_client()
    with serve_wsgi(app) as base:
        for n, subject in enumerate(HOSTILE_SUBJECTS):
            fields = {
                "email": "ada@example.net",
                "subject": subject,
                "message": f"<img src=x onerror=alert({n})> " + RLO * 2000,
                "website": "javascript:alert(1)",
                "<svg onload=alert(4)>": "<svg onload=alert(5)>",
            }
            form = "support" if n % 2 else "default"
            response = client.post(f"/f/{form}", data=fields, headers={"Origin": site})
            assert response.status_code == 303
        context = new_context()
        page = context.new_page()
        watch = Watch(context, page, base)
        log_in(page, base)
        cells = page.locator("table.inbox tbody td[dir=auto]")
        expect(cells).to_have_count(4)
        shown = sorted(cells.all_inner_texts())
        assert any("<script>alert(1)</script>" in text for text in shown)
        assert any("<img src=x onerror=alert(1)>" in text for text in shown)
        # The right-to-left override stays inside its cell: the receipt cell
        # next to it still reads left to right.
        rlo_row = page.locator("table.inbox tbody tr", has_text="exe")
        receipt = rlo_row.locator("td code").inner_text()
        assert ledger_of(app).row(receipt) is not None
        page.get_by_role("link", name="Dashboard").click()
        expect(page.locator("svg.chart title").first).to_contain_text("Submissions")
        page.get_by_role("button", name="Run the checks").click()
        expect(page.get_by_role("heading", name="The doctor's report")).to_be_visible()
        expect(page.locator("tr.check-pass", has_text="logged in as")).to_be_visible()
        page.get_by_role("link", name="Forms").click()
        expect(page.locator("code#plain-support")).to_contain_text("alert(3)")
        expect(page.locator("code#plain-support")).to_contain_text("alert(4)")
        for path in ("/admin/", "/admin/dashboard", "/admin/forms"):
            page.goto(base + path)
            main = page.locator("main")
            assert main.locator("script, img, iframe, object, embed").count() == 0
            assert main.locator("[onerror], [onload], a[href^=javascript]").count() == 0
            assert page.locator("svg [onload]").count() == 0
        page.wait_for_timeout(300)  # a late handler would have fired by now
    assert watch.dialogs == []
    assert watch.foreign() == []
    assert not [url for url in watch.requests if url.endswith("/x")]
    assert watch.csp == []  # nothing of ours was blocked either: no inline code


def _snippet_site(page: Page, base: str, root: Path) -> dict[str, str]:
    """Copy both snippets of the default form out of the forms page, as text."""
    page.goto(f"{base}/admin/forms")
    snippets = {}
    for kind in ("plain", "fetch"):
        text = page.locator(f"code#{kind}-default").inner_text()
        page_html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{kind}</title></head><body>\n{text}</body></html>\n"
        )
        (root / f"{kind}.html").write_text(page_html, encoding="utf-8")
        snippets[kind] = text
    return snippets


@pytest.fixture
def snippet_setup(make_app, relay: Relay, site, new_context):
    origin, root = site
    app = owner_app(make_app, relay.env(ALLOWED_ORIGINS=origin))
    with serve_wsgi(app) as base:
        context = new_context()
        page = context.new_page()
        log_in(page, base)
        snippets = _snippet_site(page, base, root)
        yield app, base, origin, page, snippets


def test_the_plain_snippet_posts_from_another_origin(snippet_setup, relay: Relay):
    app, base, origin, page, snippets = snippet_setup
    assert f'action="{base}/f/default"' in snippets["plain"]
    page.goto(f"{origin}/plain.html")
    honeypot = page.locator("input[name=_gotcha]")
    assert honeypot.bounding_box()["x"] < -1000  # out of sight on the owner's page
    page.get_by_label("Your name").fill("Zoë Ångström")
    page.get_by_label("Your email").fill("zoe@example.net")
    page.get_by_label("Message").fill("Sent from the plain snippet.")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Send").click()
    assert posted.value.status == 303
    expect(page.locator("h1")).to_have_text("Thank you")
    (row,) = ledger_of(app).rows()
    expect(page.locator(".receipt")).to_contain_text(row.receipt)
    assert row.form_id == "default"
    assert deliver(app) == 1
    (mail,) = relay.received
    assert (
        "Sent from the plain snippet."
        in mail.message.get_body(("plain",)).get_content()
    )
    page.screenshot(path=artifacts_dir() / "console-snippet-plain.png")


def test_the_fetch_snippet_posts_from_another_origin(snippet_setup):
    app, base, origin, page, snippets = snippet_setup
    assert f"Serve this page from {origin}" in snippets["fetch"]
    page.goto(f"{origin}/fetch.html")
    page.get_by_label("Your email").fill("zoe@example")  # the browser allows it
    page.get_by_label("Message").fill("Sent with fetch().")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Send").click()
    assert posted.value.status == 422
    expect(page.locator("#contact-status")).to_have_text(
        "Enter an email address like name@example.com."
    )
    assert ledger_of(app).rows() == []
    page.get_by_label("Your email").fill("zoe@example.net")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#contact-status")).to_have_text(THANKS)
    expect(page).to_have_url(f"{origin}/fetch.html")  # the page stayed
    (row,) = ledger_of(app).rows()
    assert row.form_id == "default"
    page.screenshot(path=artifacts_dir() / "console-snippet-fetch.png")


def test_a_snippet_from_an_origin_not_allowed_is_refused(
    make_app, relay: Relay, site, new_context
):
    """The negative case: the same snippet, the form not allowing this origin."""
    origin, root = site
    app = owner_app(make_app, relay.env(ALLOWED_ORIGINS="https://www.example.com"))
    with serve_wsgi(app) as base:
        page = new_context().new_page()
        log_in(page, base)
        _snippet_site(page, base, root)
        page.goto(f"{origin}/fetch.html")
        page.get_by_label("Your email").fill("zoe@example.net")
        page.get_by_label("Message").fill("From the wrong site.")
        page.get_by_role("button", name="Send").click()
        # No CORS headers for this origin: the browser hides the answer.
        expect(page.locator("#contact-status")).to_have_text(
            "Sorry, the form could not be sent. Please try again."
        )
    assert ledger_of(app).rows() == []


# -- screenshots for the README ----------------------------------------------------

README_SUBJECTS = [
    ("default", "Question about opening hours"),
    ("support", "Order 1042 arrived damaged"),
    ("default", "Quote for a 3-day workshop"),
    ("support", "Cannot reset my password"),
    ("default", "Partnership proposal"),
    ("default", "Café booking for 12 people"),
]
README_FORMS = """
[forms.support]
recipients = ["support"]
allowed_origins = ["https://help.example.com"]
subject = "[Support] {subject}"
rate_limit = "3/minute;20/day"
required = ["email", "message"]
"""


def test_screenshots_of_the_console(make_app, relay: Relay, tmp_path, new_context):
    """Log-in page, inbox and dashboard with a month of plausible submissions."""
    forms = tmp_path / "forms.toml"
    forms.write_text(README_FORMS, encoding="utf-8")
    site = "https://www.example.com"
    app = owner_app(make_app, relay.env(FORMS_FILE=str(forms), ALLOWED_ORIGINS=site))
    ledger = ledger_of(app)
    client = app.test_client()
    now = FakeClock().now()
    origins = {"default": site, "support": "https://help.example.com"}

    def post(form: str, subject: str) -> None:
        data = {"email": "visitor@example.net", "subject": subject, "message": "Hi"}
        response = client.post(
            f"/f/{form}", data=data, headers={"Origin": origins[form]}
        )
        assert response.status_code == 303

    for day in range(29, 0, -1):
        for n in range((day * 7) % 5 + (2 if day % 7 in (1, 2) else 0)):
            ledger.clock = FakeClock(now - day * 86400 + n * 600)
            post("default" if n % 3 else "support", "Earlier question")
    ledger.clock = FakeClock(now - 4000)
    deliver(app, ledger.clock)  # the month so far: all sent
    relay.refuse_recipient(
        "help@example.org", "550 5.1.1 <help@example.org>: no such user"
    )
    for form, subject in README_SUBJECTS[:4]:
        post(form, subject)
    deliver(app, ledger.clock)
    ledger.clock = FakeClock(now)
    for form, subject in README_SUBJECTS[4:]:
        post(form, subject)
    with serve_wsgi(app) as base:
        context = new_context(viewport={"width": 1040, "height": 720})
        page = context.new_page()
        page.goto(f"{base}/admin/login")
        page.get_by_label("Email").fill(EMAIL)
        shots = artifacts_dir()
        page.screenshot(path=shots / "console-login.png")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
        page.screenshot(path=shots / "console-inbox.png")
        page.get_by_role("link", name="Dashboard").click()
        expect(page.locator("svg.chart")).to_be_visible()
        page.screenshot(path=shots / "console-dashboard.png", full_page=True)
        page.get_by_role("link", name="Forms").click()
        page.screenshot(path=shots / "console-forms.png")
    # Small enough for the README; the receipts are random, so the exact
    # size varies by a few kB from run to run.
    for name in ("login", "inbox", "dashboard", "forms"):
        size = (shots / f"console-{name}.png").stat().st_size
        assert size < 250_000, (name, size)
