"""The proof-of-work widget in a real headless Chromium (static/formpost-altcha.js).

The hosted form solves its challenge while the visitor types, under the
page's own CSP; a form on another site (its own loopback origin) does the
same with one script tag and one element; without JavaScript the hosted
form still sends (scored); and sending straight away is never held back by
a proof that is not ready. The stored verdict says what the server made of
each post.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import BrowserContext, Page, expect

from app.spam import Verdict

from .chromium import require_chromium, serve_wsgi
from .helpers import services_of
from .relay import Relay

pytestmark = pytest.mark.browser
require_chromium()

SOLVED = re.compile(r"^[A-Za-z0-9+/]+=*$")
# A proof is found in about a second here (MAX_NUMBER in app/spam/altcha.py);
# leave room for a loaded machine.
SOLVE_TIMEOUT_MS = 30_000

CROSS_SITE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Contact us</title>
{csp}<script src="{formpost}/static/formpost-altcha.js" defer></script></head>
<body>
<h1>Contact us</h1>
<form action="{formpost}/f/default" method="POST">
  <label for="email">Email</label> <input id="email" name="email" type="email">
  <label for="message">Message</label>
  <textarea id="message" name="message"></textarea>
  <input type="hidden" name="_next" value="/thanks.html">
  <div data-formpost-challenge="{formpost}/f/default/challenge"></div>
  <button type="submit">Send</button>
</form>
</body></html>
"""
THANKS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Thanks</title></head>
<body><h1>Thanks</h1></body></html>
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static site on its own loopback port: another origin than Formpost."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class SlowChallenges:
    """WSGI middleware: hold challenge answers back by `delay` seconds."""

    def __init__(self, app: Callable, delay: float = 0.0) -> None:
        self.app = app
        self.delay = delay

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").endswith("/challenge") and self.delay:
            time.sleep(self.delay)
        return self.app(environ, start_response)


def verdict_of_newest(app: Flask) -> tuple[str, list[str]]:
    row = services_of(app).ledger.rows()[0]
    verdict = Verdict.from_json(row.verdict)
    assert verdict is not None
    return row.state, [r.rule for r in verdict.reasons]


def fill_hosted(page: Page) -> None:
    page.get_by_label("Recipient").select_option("support")
    page.get_by_label("Your name").fill("Zoë Ångström")
    page.get_by_label("Your email").fill("zoe@example.net")
    page.get_by_label("Subject").fill("A question")
    page.get_by_label("Message").fill("Hello, is the blue one still for sale?")


def test_hosted_form_solves_while_typing_and_is_silent(
    make_app: Callable[..., Flask],
    relay: Relay,
    new_context: Callable[..., BrowserContext],
) -> None:
    app = make_app(relay.env(SPAM_PROOF_OF_WORK="required"))
    page = new_context().new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
    )
    workers: list[str] = []
    page.on("worker", lambda worker: workers.append(worker.url))
    with serve_wsgi(app) as base:
        page.goto(base + "/")
        holder = page.locator("[data-formpost-challenge]")
        proof = page.locator("input[name=altcha]")
        # Nothing happens until the visitor starts on the form.
        expect(proof).to_have_value("")
        fill_hosted(page)
        expect(proof).to_have_value(SOLVED, timeout=SOLVE_TIMEOUT_MS)
        # Silent for screen readers: hidden, aria-hidden, nothing focusable,
        # no live region anywhere.
        expect(holder).to_be_hidden()
        expect(holder).to_have_attribute("aria-hidden", "true")
        assert proof.get_attribute("type") == "hidden"
        assert page.locator("[aria-live], [role=status], [role=alert]").count() == 0
        assert "altcha" not in page.locator("body").aria_snapshot().lower()
        page.get_by_role("button", name="Send message").click()
        page.wait_for_url(base + "/thanks")
    assert problems == []  # no CSP violation, no script error
    # Solved in a Web Worker: this same script, from 'self' as the CSP asks.
    assert workers == [base + "/static/formpost-altcha.js"]
    assert verdict_of_newest(app) == ("pending", [])


@pytest.mark.parametrize("strict", [False, True], ids=["no-csp", "csp-without-blob"])
def test_cross_site_form_posts_with_a_valid_proof(
    make_app: Callable[..., Flask],
    relay: Relay,
    new_context: Callable[..., BrowserContext],
    static_site: tuple[str, Path],
    strict: bool,
) -> None:
    """One script tag and one element; a site whose CSP refuses blob: workers
    gets its proof solved on the main thread instead."""
    origin, root = static_site
    app = make_app(
        relay.env(
            ALLOWED_ORIGINS=origin,
            REDIRECT_HOSTS="127.0.0.1",
            SPAM_PROOF_OF_WORK="required",
        )
    )
    page = new_context().new_page()
    workers: list[str] = []
    page.on("worker", lambda worker: workers.append(worker.url))
    with serve_wsgi(app) as formpost:
        assert formpost != origin
        csp = (
            '<meta http-equiv="Content-Security-Policy" content="default-src '
            f"'self'; script-src 'self' {formpost}; connect-src {formpost}\">\n"
            if strict
            else ""
        )
        (root / "form.html").write_text(
            CROSS_SITE_PAGE.format(formpost=formpost, csp=csp), encoding="utf-8"
        )
        (root / "thanks.html").write_text(THANKS_PAGE, encoding="utf-8")
        page.goto(origin + "/form.html")
        page.get_by_label("Email").fill("zoe@example.net")
        page.get_by_label("Message").fill("Do you ship to Norway?")
        expect(page.locator("input[name=altcha]")).to_have_value(
            SOLVED, timeout=SOLVE_TIMEOUT_MS
        )
        page.get_by_role("button", name="Send").click()
        page.wait_for_url(origin + "/thanks.html")
    # A worker cannot be loaded from another origin: it is built in place,
    # where the page's CSP lets it.
    assert [url.split(":")[0] for url in workers] == ([] if strict else ["blob"])
    assert verdict_of_newest(app) == ("pending", [])


def test_without_javascript_the_hosted_form_still_sends_and_is_scored(
    make_app: Callable[..., Flask],
    relay: Relay,
    new_context: Callable[..., BrowserContext],
) -> None:
    app = make_app(relay.env(SPAM_PROOF_OF_WORK="score"))
    page = new_context(java_script_enabled=False).new_page()
    with serve_wsgi(app) as base:
        page.goto(base + "/")
        fill_hosted(page)
        page.get_by_role("button", name="Send message").click()
        page.wait_for_url(base + "/thanks")
    assert verdict_of_newest(app) == ("pending", ["altcha_missing"])


def test_sending_at_once_is_not_held_back_by_the_proof(
    make_app: Callable[..., Flask],
    relay: Relay,
    new_context: Callable[..., BrowserContext],
) -> None:
    """The challenge takes 5 s to arrive; the post goes at once, without it."""
    app = make_app(relay.env(SPAM_PROOF_OF_WORK="score"))
    slow = SlowChallenges(app.wsgi_app, delay=5.0)
    page = new_context().new_page()
    with serve_wsgi(slow) as base:
        page.goto(base + "/")
        fill_hosted(page)
        started = time.monotonic()
        page.get_by_role("button", name="Send message").click()
        page.wait_for_url(base + "/thanks")
        took = time.monotonic() - started
    assert took < 3.0, f"the send waited {took:.1f} s"
    assert verdict_of_newest(app) == ("pending", ["altcha_missing"])


FETCH_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Contact (fetch)</title>
<script src="{formpost}/static/formpost-altcha.js" defer></script>
<script src="/send.js" defer></script></head>
<body>
<form id="contact" action="{formpost}/f/default" method="POST">
  <label for="email">Email</label> <input id="email" name="email" type="email">
  <label for="message">Message</label>
  <textarea id="message" name="message"></textarea>
  <div data-formpost-challenge="{formpost}/f/default/challenge"></div>
  <button type="submit">Send</button>
</form>
<ol id="results"></ol>
</body></html>
"""
SEND_JS = """"use strict";
document.getElementById("contact").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = new URLSearchParams(new FormData(form));
  const item = document.createElement("li");
  const reply = await fetch(form.action, {
    method: "POST", body, headers: { "Accept": "application/json" },
  });
  item.textContent = (await reply.json()).ok ? "ok" : "refused";
  document.getElementById("results").append(item);
});
"""


def test_a_page_that_stays_open_solves_a_fresh_proof_for_each_send(
    make_app: Callable[..., Flask],
    relay: Relay,
    new_context: Callable[..., BrowserContext],
    static_site: tuple[str, Path],
) -> None:
    """A fetch() form sends twice; each send carries its own, unspent proof."""
    origin, root = static_site
    app = make_app(relay.env(ALLOWED_ORIGINS=origin, SPAM_PROOF_OF_WORK="required"))
    page = new_context().new_page()
    with serve_wsgi(app) as formpost:
        (root / "form.html").write_text(
            FETCH_PAGE.format(formpost=formpost), encoding="utf-8"
        )
        (root / "send.js").write_text(SEND_JS, encoding="utf-8")
        page.goto(origin + "/form.html")
        proof = page.locator("input[name=altcha]")
        page.get_by_label("Email").fill("zoe@example.net")
        page.get_by_label("Message").fill("First question: do you ship to Norway?")
        expect(proof).to_have_value(SOLVED, timeout=SOLVE_TIMEOUT_MS)
        first = proof.input_value()
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#results li")).to_have_text(["ok"])
        expect(proof).to_have_value("")  # spent: dropped after the send
        page.get_by_label("Message").fill("Second question: and to Iceland?")
        expect(proof).to_have_value(SOLVED, timeout=SOLVE_TIMEOUT_MS)
        assert proof.input_value() != first
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#results li")).to_have_text(["ok", "ok"])
    states = [
        (row.state, Verdict.from_json(row.verdict).reasons)  # type: ignore[union-attr]
        for row in services_of(app).ledger.rows()
    ]
    assert states == [("pending", ()), ("pending", ())]


def test_an_open_page_renews_its_proof_before_it_expires(
    make_app: Callable[..., Flask],
    relay: Relay,
    new_context: Callable[..., BrowserContext],
) -> None:
    """After 19 minutes on the page the proof is a fresh one (the page's clock)."""
    app = make_app(relay.env(SPAM_PROOF_OF_WORK="required"))
    page = new_context().new_page()
    page.clock.install()
    with serve_wsgi(app) as base:
        page.goto(base + "/")
        proof = page.locator("input[name=altcha]")
        fill_hosted(page)
        expect(proof).to_have_value(SOLVED, timeout=SOLVE_TIMEOUT_MS)
        first = proof.input_value()
        page.clock.fast_forward("19:30")
        expect(proof).not_to_have_value(first, timeout=SOLVE_TIMEOUT_MS)
        expect(proof).to_have_value(SOLVED, timeout=SOLVE_TIMEOUT_MS)
        page.get_by_role("button", name="Send message").click()
        page.wait_for_url(base + "/thanks")
    assert verdict_of_newest(app) == ("pending", [])
