"""A form on another site, in a real headless Chromium, posting across origins.

Formpost (a threaded werkzeug server) listens on one loopback port; a tiny
static site (http.server) on another, so the browser treats them as two
origins and does real CORS. A third static server is an origin that is NOT
in ALLOWED_ORIGINS. Submissions are delivered to the aiosmtpd test relay by
conftest.deliver. Screenshots go to $ARTIFACTS_DIR, or test-artifacts/.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.ledger import dedupe_digest

from .chromium import (
    TIMEOUT_MS,
    artifacts_dir,
    require_chromium,
    serve_wsgi,
    text_body,
)
from .helpers import deliver
from .relay import Relay

pytestmark = pytest.mark.browser
require_chromium()

MESSAGE = "Hello from another site.\nSecond line: café <b>not bold</b> & more."

FORM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Contact us</title></head>
<body>
<h1>Contact us</h1>
<form action="{endpoint}" method="POST">
  <label for="name">Name</label> <input id="name" name="name">
  <label for="email">Email</label> <input id="email" name="email" type="email">
  <label for="message">Message</label>
  <textarea id="message" name="message"></textarea>
  <input type="hidden" name="_next" value="/thanks.html">
  <input type="hidden" name="_gotcha" value="">
  <button type="submit">Send</button>
</form>
</body></html>
"""

THANKS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Thanks</title></head>
<body><h1>Thanks, we got your message</h1></body></html>
"""

# No inline script: the page loads send.js, as a CSP-minded site would.
FETCH_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Contact (fetch)</title>
<script src="/send.js" defer></script></head>
<body>
<h1>Contact us (fetch)</h1>
<form id="contact" action="{endpoint}" method="POST"
      data-mode="{mode}" data-idempotency-key="{key}">
  <label for="name">Name</label> <input id="name" name="name">
  <label for="email">Email</label> <input id="email" name="email" type="email">
  <label for="message">Message</label>
  <textarea id="message" name="message"></textarea>
  <button type="submit">Send</button>
</form>
<ol id="results"></ol>
</body></html>
"""

# mode "json": JSON body plus Idempotency-Key (a preflighted CORS request).
# mode "form": urlencoded body, safelisted headers only (no preflight: the POST
# itself reaches the server, which must refuse it by its Origin).
SEND_JS = """"use strict";
document.getElementById("contact").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const item = document.createElement("li");
  const options = { method: "POST", headers: { "Accept": "application/json" } };
  if (form.dataset.mode === "json") {
    options.headers["Content-Type"] = "application/json";
    options.headers["Idempotency-Key"] = form.dataset.idempotencyKey;
    options.body = JSON.stringify(Object.fromEntries(data));
  } else {
    options.body = new URLSearchParams(data);
  }
  try {
    const response = await fetch(form.action, options);
    const body = await response.json();
    item.dataset.state = body.ok ? "ok" : "refused";
    item.textContent = body.ok ? body.id : "refused " + response.status;
  } catch (error) {
    item.dataset.state = "failed";
    item.textContent = "failed: " + error.name;
  }
  document.getElementById("results").append(item);
});
"""


@dataclass
class Hit:
    """One request as Formpost's WSGI app saw it."""

    method: str
    path: str
    origin: str | None
    status: int


@dataclass
class Recorder:
    """WSGI middleware: remember every request and the status it got."""

    app: Callable
    hits: list[Hit] = field(default_factory=list)

    def __call__(self, environ, start_response):
        def recording_start(status, headers, exc_info=None):
            self.hits.append(
                Hit(
                    environ["REQUEST_METHOD"],
                    environ.get("PATH_INFO", ""),
                    environ.get("HTTP_ORIGIN"),
                    int(status.split()[0]),
                )
            )
            return start_response(status, headers, exc_info)

        return self.app(environ, recording_start)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class StaticSite:
    """A static site on its own loopback port (so: its own origin)."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    root: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_static(root: Path) -> StaticSite:
    """Serve `root` over HTTP on a free loopback port, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return StaticSite(server, thread, root)


@dataclass
class Setup:
    """Formpost, the allowed site, the disallowed site, and the recorder."""

    formpost: str
    app: Flask
    recorder: Recorder
    site: StaticSite
    evil: StaticSite

    @property
    def endpoint(self) -> str:
        return self.formpost + "/f/default"

    def write_fetch_page(self, name: str, mode: str, key: str = "") -> None:
        """Write a fetch page into both sites' folders."""
        page = FETCH_PAGE.format(endpoint=self.endpoint, mode=mode, key=key)
        for site in (self.site, self.evil):
            (site.root / name).write_text(page, encoding="utf-8")

    def rows(self) -> list:
        return self.app.extensions["formpost"].ledger.rows()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page in its own context, with short timeouts."""
    context: BrowserContext = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The folder screenshots are written to."""
    return artifacts_dir()


@pytest.fixture
def setup(
    tmp_path: Path, make_app: Callable[..., Flask], relay: Relay
) -> Iterator[Setup]:
    """Start the two static sites, then Formpost allowing only the first."""
    roots = [tmp_path / "site", tmp_path / "evil"]
    for root in roots:
        root.mkdir()
        (root / "send.js").write_text(SEND_JS, encoding="utf-8")
        (root / "thanks.html").write_text(THANKS_PAGE, encoding="utf-8")
    site, evil = serve_static(roots[0]), serve_static(roots[1])
    app = make_app(relay.env(ALLOWED_ORIGINS=site.origin, REDIRECT_HOSTS="127.0.0.1"))
    recorder = Recorder(app.wsgi_app)
    try:
        with serve_wsgi(recorder) as formpost:
            assert len({formpost, site.origin, evil.origin}) == 3
            form_page = FORM_PAGE.format(endpoint=formpost + "/f/default")
            for root in roots:
                (root / "form.html").write_text(form_page, encoding="utf-8")
            yield Setup(formpost, app, recorder, site, evil)
    finally:
        site.stop()
        evil.stop()


def fill(page: Page, name: str = "Zoë Ångström", message: str = MESSAGE) -> None:
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill("zoe@example.net")
    page.get_by_label("Message").fill(message)


def results(page: Page):
    return page.locator("#results li")


def test_plain_form_posts_across_origins_and_redirects_back(
    page: Page, setup: Setup, relay: Relay, artifacts: Path
) -> None:
    """A plain HTML form posts to Formpost and lands on the site's own thanks page."""
    page.goto(setup.site.origin + "/form.html")
    fill(page)
    page.screenshot(path=artifacts / "crosssite-form-filled.png", full_page=True)

    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Send").click()
    assert posted.value.status == 303
    assert posted.value.headers["location"] == setup.site.origin + "/thanks.html"
    page.wait_for_url(setup.site.origin + "/thanks.html")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Thanks, we got your message"
    )
    page.screenshot(path=artifacts / "crosssite-thanks.png", full_page=True)

    post = next(h for h in setup.recorder.hits if h.method == "POST")
    assert post.origin == setup.site.origin  # the browser said where it came from
    (row,) = setup.rows()
    assert row.client_ip == "127.0.0.1"
    assert relay.received == []
    assert deliver(setup.app) == 1
    (mail,) = relay.received
    assert mail.rcpt_tos == ["sales@example.com"]
    reply_to = mail.message["Reply-To"].addresses[0]
    assert (reply_to.display_name, reply_to.addr_spec) == (
        "Zoë Ångström",
        "zoe@example.net",
    )
    assert str(mail.message["Message-ID"]) == row.message_id
    # Every visible field, in the order the page has them; steering fields
    # (_next) and the honeypot are not part of the mail.
    assert text_body(mail) == (
        "From: Zoë Ångström <zoe@example.net>\n\n"
        "name: Zoë Ångström\n"
        "email: zoe@example.net\n"
        "message: Hello from another site.\n"
        "    Second line: café <b>not bold</b> & more.\n"
    )


def post_as_bot(page: Page, setup: Setup):
    """Fill the form and the hidden honeypot, as a bot does; return the POST reply."""
    page.goto(setup.site.origin + "/form.html")
    fill(page)
    page.locator("input[name=_gotcha]").evaluate("el => { el.value = 'http://spam' }")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Send").click()
    return posted.value


def test_filled_honeypot_is_kept_as_dropped_and_not_sent(
    page: Page, setup: Setup, relay: Relay
) -> None:
    """A bot that fills _gotcha gets a 303 like everyone; kept as dropped, unsent."""
    reply = post_as_bot(page, setup)
    assert reply.status == 303
    page.wait_for_load_state()
    assert [h.method for h in setup.recorder.hits].count("POST") == 1
    (row,) = setup.rows()
    assert row.state == "dropped" and '"rule":"honeypot"' in row.verdict
    assert deliver(setup.app) == 0
    assert relay.received == []


def test_filled_honeypot_redirects_like_a_real_post(page: Page, setup: Setup) -> None:
    """The bot is sent where a person would be: the site's own _next page."""
    reply = post_as_bot(page, setup)
    assert reply.headers["location"] == setup.site.origin + "/thanks.html"


def test_fetch_json_with_idempotency_key(
    page: Page, setup: Setup, relay: Relay, artifacts: Path
) -> None:
    """fetch() posts JSON across origins; the page shows the stored receipt.

    Sending twice with the same Idempotency-Key shows the same receipt and
    stores one row.
    """
    setup.write_fetch_page("fetch.html", mode="json", key="order-4711")
    page.goto(setup.site.origin + "/fetch.html")
    fill(page, message="Sent by fetch.")
    page.get_by_role("button", name="Send").click()
    expect(results(page)).to_have_count(1)
    expect(results(page).first).to_have_attribute("data-state", "ok")
    shown = results(page).first.inner_text()
    page.screenshot(path=artifacts / "crosssite-fetch.png", full_page=True)

    (row,) = setup.rows()
    assert shown == row.receipt
    # The ledger keeps a fixed-length digest of the key, never the key.
    assert row.dedupe_key == dedupe_digest("idem:default:order-4711")
    # The browser asked first (preflight) and was allowed, then posted JSON.
    methods = [(h.method, h.status) for h in setup.recorder.hits]
    assert methods == [("OPTIONS", 204), ("POST", 200)]

    page.get_by_role("button", name="Send").click()  # a double submit
    expect(results(page)).to_have_count(2)
    assert results(page).nth(1).inner_text() == row.receipt
    assert len(setup.rows()) == 1

    assert deliver(setup.app) == 1
    (mail,) = relay.received
    assert mail.message["Reply-To"].addresses[0].addr_spec == "zoe@example.net"
    assert text_body(mail) == (
        "From: Zoë Ångström <zoe@example.net>\n\n"
        "name: Zoë Ångström\nemail: zoe@example.net\nmessage: Sent by fetch.\n"
    )


@pytest.mark.parametrize("mode", ["json", "form"])
def test_fetch_from_disallowed_origin_is_blocked(
    page: Page, setup: Setup, artifacts: Path, mode: str
) -> None:
    """From an origin not in ALLOWED_ORIGINS the fetch fails and nothing is stored.

    json: the preflight is refused, so the POST is never sent. form: a
    "simple" request that needs no preflight reaches Formpost, which refuses
    it by its Origin. The same page on the allowed site works (the control).
    """
    setup.write_fetch_page(f"fetch-{mode}.html", mode=mode, key=f"k-{mode}")
    page.goto(setup.evil.origin + f"/fetch-{mode}.html")
    fill(page)
    page.get_by_role("button", name="Send").click()
    expect(results(page)).to_have_count(1)
    expect(results(page).first).to_have_attribute("data-state", "failed")
    # CORS hides the reason from the page: only a network error is visible.
    expect(results(page).first).to_have_text("failed: TypeError")
    page.screenshot(path=artifacts / f"crosssite-blocked-{mode}.png", full_page=True)

    seen = [(h.method, h.origin, h.status) for h in setup.recorder.hits]
    if mode == "json":
        assert seen == [("OPTIONS", setup.evil.origin, 403)]
    else:
        assert seen == [("POST", setup.evil.origin, 403)]
    assert setup.rows() == []

    # Control: the same page from the allowed site is accepted.
    page.goto(setup.site.origin + f"/fetch-{mode}.html")
    fill(page)
    page.get_by_role("button", name="Send").click()
    expect(results(page)).to_have_count(1)
    expect(results(page).first).to_have_attribute("data-state", "ok")
    (row,) = setup.rows()
    assert results(page).first.inner_text() == row.receipt
