"""The services' own snippets (tests/snippets/), in headless chromium, from
another origin: what the visitor sees on success and on a 422.

Formspree's, Web3Forms' and FormSubmit's documented forms and fetch examples
are served, with only their action changed, from a static site on one
loopback port; Formpost (a threaded werkzeug server) listens on another, so
the browser does real CORS. Each case asserts the text that lands in the
page, then what was stored and delivered to the test relay.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, expect

from .chromium import TIMEOUT_MS, artifacts_dir, require_chromium
from .chromium import serve_wsgi as serve_formpost
from .helpers import deliver
from .relay import Relay

pytestmark = pytest.mark.browser
require_chromium()

SNIPPETS = Path(__file__).resolve().parent / "snippets"
THANKS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Thanks</title></head>
<body><h1>Thanks, we got your message</h1></body></html>
"""
RECEIVED = "Thank you! Your message has been received."
BAD_EMAIL = "Enter an email address like name@example.com."
GOOD = {"name": "Zoë Ångström", "email": "zoe@example.net", "message": "Hello!"}
# Chromium's own check passes "zoe@example" (no dot needed), Formpost's not:
# the post reaches the server and gets its 422.
BAD = {**GOOD, "email": "zoe@example"}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Site:
    """The snippets, served from their own origin; Formpost on another."""

    origin: str
    formpost: str
    app: Flask

    def rows(self) -> list:
        return self.app.extensions["formpost"].ledger.rows()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture
def site(
    tmp_path: Path, make_app: Callable[..., Flask], relay: Relay
) -> Iterator[Site]:
    """Serve tests/snippets/ (action pointed at Formpost) from a second origin."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    app = make_app(relay.env(ALLOWED_ORIGINS=origin, REDIRECT_HOSTS="127.0.0.1"))
    try:
        with serve_formpost(app) as formpost:
            for snippet in SNIPPETS.glob("*.html"):
                text = snippet.read_text(encoding="utf-8")
                text = text.replace("FORMPOST_ENDPOINT", formpost + "/f/default")
                (root / snippet.name).write_text(
                    text.replace("SITE_ORIGIN", origin), encoding="utf-8"
                )
            (root / "thanks.html").write_text(THANKS_PAGE, encoding="utf-8")
            yield Site(origin, formpost, app)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def open_and_fill(page: Page, site: Site, snippet: str, values: dict[str, str]):
    page.goto(f"{site.origin}/{snippet}")
    for name, value in values.items():
        field = page.locator(f"[name={name}]")
        if field.count():
            field.fill(value)


def submit(page: Page) -> None:
    page.locator("button").click()


# -- plain HTML forms ---------------------------------------------------------------

PLAIN = ["formspree-form.html", "web3forms-form.html", "formsubmit-form.html"]


@pytest.mark.parametrize("snippet", PLAIN)
def test_plain_form_success(page: Page, site: Site, relay: Relay, snippet: str):
    open_and_fill(page, site, snippet, GOOD)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        submit(page)
    assert posted.value.status == 303
    page.wait_for_load_state()
    (row,) = site.rows()
    if snippet == "formsubmit-form.html":
        # FormSubmit's _next: the site's own thank-you page.
        page.wait_for_url(site.origin + "/thanks.html")
        expect(page.locator("h1")).to_have_text("Thanks, we got your message")
    else:
        expect(page.locator("h1")).to_have_text("Thank you")
        expect(page.locator(".receipt")).to_contain_text(row.receipt)
    page.screenshot(path=artifacts_dir() / f"snippet-{snippet}-ok.png")

    assert deliver(site.app) == 1
    (mail,) = relay.received
    assert mail.rcpt_tos == ["sales@example.com"]  # no autoresponse, no webhook
    (sender,) = mail.message["From"].addresses
    assert sender.display_name == "Contact form"  # not Web3Forms' from_name
    text = mail.message.get_body(("plain",)).get_content()
    shown = [ln.split(":")[0] for ln in text.split("\n\n", 1)[1].splitlines()]
    expected = ["email", "message"] if "formspree" in snippet else None
    assert shown == (expected or ["name", "email", "message"])
    subject = {
        "web3forms-form.html": "New Submission from Web3Forms",
        "formsubmit-form.html": "New submission!",
    }.get(snippet)
    if subject:
        assert mail.message["Subject"] == subject


@pytest.mark.parametrize("snippet", PLAIN)
def test_plain_form_422_says_what_was_wrong(
    page: Page, site: Site, relay: Relay, snippet: str
):
    open_and_fill(page, site, snippet, BAD)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        submit(page)
    assert posted.value.status == 422
    page.wait_for_load_state()
    expect(page.locator("h1")).to_have_text("Please check the form")
    expect(page.locator("ul.errors li")).to_have_text(f"email: {BAD_EMAIL}")
    # Chromium sends only the origin as Referer across origins.
    expect(page.get_by_role("link", name="Go back to the form")).to_have_attribute(
        "href", f"{site.origin}/"
    )
    page.screenshot(path=artifacts_dir() / f"snippet-{snippet}-422.png")
    assert site.rows() == []
    assert deliver(site.app) == 0


# -- the services' JavaScript: fetch with FormData, fetch with JSON ----------------

SCRIPTED = [
    # snippet, where it writes, what it shows on success
    pytest.param(
        "formspree-ajax.html",
        "#my-form-status",
        "Thanks for your submission!",
        id="formspree-fetch-formdata",
    ),
    pytest.param(
        "web3forms-fetch.html", "#result", RECEIVED, id="web3forms-fetch-json"
    ),
    pytest.param(
        "formsubmit-ajax.html", "#status", RECEIVED, id="formsubmit-fetch-json"
    ),
]


@pytest.mark.parametrize(("snippet", "status", "shown"), SCRIPTED)
def test_scripted_snippet_success(
    page: Page, site: Site, relay: Relay, snippet: str, status: str, shown: str
):
    open_and_fill(page, site, snippet, GOOD)
    submit(page)
    expect(page.locator(status)).to_have_text(shown)
    if snippet == "formsubmit-ajax.html":
        expect(page.locator(status)).to_have_attribute("data-success", "true")
    page.screenshot(path=artifacts_dir() / f"snippet-{snippet}-ok.png")
    assert len(site.rows()) == 1
    assert deliver(site.app) == 1
    (mail,) = relay.received
    assert mail.message["Reply-To"].addresses[0].addr_spec == "zoe@example.net"
    assert b"YOUR_ACCESS_KEY_HERE" not in mail.data


@pytest.mark.parametrize(("snippet", "status", "shown"), SCRIPTED)
def test_scripted_snippet_422_says_what_was_wrong(
    page: Page, site: Site, relay: Relay, snippet: str, status: str, shown: str
):
    open_and_fill(page, site, snippet, BAD)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        submit(page)
    assert posted.value.status == 422
    expect(page.locator(status)).to_have_text(BAD_EMAIL)
    if snippet == "formsubmit-ajax.html":
        expect(page.locator(status)).to_have_attribute("data-success", "false")
    page.screenshot(path=artifacts_dir() / f"snippet-{snippet}-422.png")
    assert site.rows() == []
    assert deliver(site.app) == 0


def test_formspree_snippet_with_a_100kb_file_is_told_files_are_not_accepted(
    page: Page, site: Site, relay: Relay
):
    """Over the 64 kB limit, yet the visitor reads that the file is the problem."""
    open_and_fill(page, site, "formspree-ajax-file.html", GOOD)
    page.locator("[name=upload]").set_input_files(
        {"name": "cv.pdf", "mimeType": "application/pdf", "buffer": b"x" * 100_000}
    )
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        submit(page)
    assert posted.value.status == 415
    expect(page.locator("#my-form-status")).to_have_text(
        "Files are not accepted by this form. Remove the file and send the form again."
    )
    assert site.rows() == []


def test_formspree_snippet_without_a_chosen_file_is_accepted(
    page: Page, site: Site, relay: Relay
):
    """An empty file input is sent by the browser but is not an upload."""
    open_and_fill(page, site, "formspree-ajax-file.html", GOOD)
    submit(page)
    expect(page.locator("#my-form-status")).to_have_text("Thanks for your submission!")
    assert len(site.rows()) == 1
