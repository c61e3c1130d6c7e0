"""Files posted by a real headless Chromium: from the hosted form, and from a
form on another site (a plain multipart form and a fetch() with FormData)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .chromium import TIMEOUT_MS, require_chromium, serve_wsgi
from .helpers import deliver
from .relay import Relay

pytestmark = pytest.mark.browser
require_chromium()

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"1 0 obj\n<<>>\nendobj\n" * 200
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 400
FILES = {"ATTACHMENTS_MAX_FILES": "2", "MIN_FILL_SECONDS": "0"}

SITE_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Apply</title>
<script src="/send.js" defer></script></head>
<body>
<form id="plain" action="{endpoint}" method="POST" enctype="multipart/form-data">
  <label for="email">Email</label> <input id="email" name="email" type="email">
  <label for="message">Message</label> <textarea id="message" name="message"></textarea>
  <label for="cv">CV</label> <input id="cv" name="cv" type="file">
  <input type="hidden" name="_next" value="/thanks.html">
  <button type="submit">Send</button>
</form>
<form id="fetched" action="{endpoint}">
  <label for="cv2">CV by fetch</label> <input id="cv2" name="cv" type="file">
  <input type="hidden" name="email" value="zoe@example.net">
  <button type="submit">Send by fetch</button>
</form>
<pre id="answer"></pre>
</body></html>
"""
SEND_JS = """"use strict";
document.getElementById("fetched").addEventListener("submit", async (event) => {
  event.preventDefault();
  const response = await fetch(event.target.action, {
    method: "POST", headers: { "Accept": "application/json" },
    body: new FormData(event.target),
  });
  document.getElementById("answer").textContent = JSON.stringify(
    { status: response.status, body: await response.json() });
});
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (tmp_path / "send.js").write_text(SEND_JS)
    (tmp_path / "thanks.html").write_text("<h1>Thanks, we got it</h1>")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def pdf_file(name: str, data: bytes = PDF) -> dict:
    return {"name": name, "mimeType": "application/pdf", "buffer": data}


def test_hosted_form_sends_a_file(page: Page, make_app, relay: Relay) -> None:
    app = make_app(relay.env(**FILES))
    with serve_wsgi(app) as base:
        page.goto(base + "/")
        page.get_by_label("Subject").fill("My application")
        page.get_by_label("Message").fill("Please find my CV attached.")
        page.locator("#attachment").set_input_files([pdf_file("Lebenslauf Zoë.pdf")])
        page.get_by_role("button", name="Send message").click()
        expect(page.locator("h1")).to_contain_text("Thank")
    deliver(app)
    (got,) = relay.received
    (part,) = got.message.iter_attachments()
    assert part.get_filename() == "Lebenslauf Zoë.pdf"
    assert part.get_content() == PDF


def test_hosted_form_refuses_a_disguised_file_and_keeps_the_text(
    page: Page, make_app, relay: Relay
) -> None:
    app = make_app(relay.env(**FILES))
    with serve_wsgi(app) as base:
        page.goto(base + "/")
        page.get_by_label("Subject").fill("Invoice")
        page.get_by_label("Message").fill("Typed with care, kept on refusal.")
        page.locator("#attachment").set_input_files([pdf_file("invoice.pdf", EXE)])
        page.get_by_role("button", name="Send message").click()
        notice = page.locator("#form-notice")
        expect(notice).to_contain_text("“invoice.pdf” is not a file type")
        expect(notice).to_contain_text("choose your files again")
        expect(page.get_by_label("Message")).to_have_value(
            "Typed with care, kept on refusal."
        )
    assert app.extensions["formpost"].ledger.rows() == []


def test_a_form_on_another_site_sends_a_file(
    page: Page, make_app, relay: Relay, site: str, tmp_path: Path
) -> None:
    app = make_app(relay.env(ALLOWED_ORIGINS=site, REDIRECT_HOSTS="127.0.0.1", **FILES))
    with serve_wsgi(app) as base:
        (tmp_path / "apply.html").write_text(
            SITE_FORM.format(endpoint=base + "/f/default")
        )
        page.goto(site + "/apply.html")
        page.get_by_label("Email", exact=True).fill("zoe@example.net")
        page.get_by_label("Message").fill("Here is my CV.")
        page.locator("#cv").set_input_files([pdf_file("履歴書.pdf")])
        page.locator("#plain button").click()
        expect(page.locator("h1")).to_have_text("Thanks, we got it")
        assert page.url == site + "/thanks.html"

        # fetch() with FormData: multipart across origins, a JSON answer.
        page.goto(site + "/apply.html")
        page.locator("#cv2").set_input_files([pdf_file("cv.pdf")])
        page.locator("#fetched button").click()
        expect(page.locator("#answer")).to_contain_text('"ok":true')

        page.goto(site + "/apply.html")
        page.locator("#cv2").set_input_files([pdf_file("setup.pdf", EXE)])
        page.locator("#fetched button").click()
        answer = page.locator("#answer")
        expect(answer).to_contain_text('"status":415')
        expect(answer).to_contain_text('"file":"setup.pdf"')
        expect(answer).to_contain_text('"code":"FILE_TYPE"')
    deliver(app)
    names = sorted(
        part.get_filename()
        for got in relay.received
        for part in got.message.iter_attachments()
    )
    assert names == ["cv.pdf", "履歴書.pdf"]
