"""Every steering field of Formspree, Web3Forms and FormSubmit: recognised,
never shown in the email body, and either honoured or ignored as docs/forms.md
says. Posts go through the real app, ledger and relay.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.fieldmap import IGNORED

from .helpers import deliver
from .relay import Received, Relay

SITE = "https://www.example.com"
FORMS_DOC = Path(__file__).resolve().parents[1] / "docs" / "forms.md"
BASE = {"name": "Ada", "email": "ada@example.net", "message": "A question."}

# name -> (service, a value a page would send)
STEERING = {
    # Web3Forms
    "access_key": ("Web3Forms", "0b1c2d3e-STEER-access-key"),
    "from_name": ("Web3Forms", "STEER Mission Control"),
    "botcheck": ("Web3Forms", ""),
    "redirect": ("Web3Forms", "https://www.example.com/sent.html"),
    "subject": ("Web3Forms", "STEER New Submission from Web3Forms"),
    "replyto": ("Web3Forms", "steer-reply@example.net"),
    "ccemail": ("Web3Forms", "support"),
    # FormSubmit
    "_template": ("FormSubmit", "STEER-table"),
    "_captcha": ("FormSubmit", "STEER-false"),
    "_autoresponse": ("FormSubmit", "STEER Thanks for writing!"),
    "_webhook": ("FormSubmit", "http://127.0.0.1:9/STEER-hook"),
    "_blacklist": ("FormSubmit", "STEER-spam, STEER-casino"),
    "_url": ("FormSubmit", "https://www.example.com/STEER-contact"),
    "_honey": ("FormSubmit", ""),
    # Formspree
    "_language": ("Formspree", "STEER-de"),
    "_format": ("Formspree", "STEER-plain"),
}


@pytest.fixture
def app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    return make_app(relay.env(ALLOWED_ORIGINS=SITE, REDIRECT_HOSTS="www.example.com"))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, data: dict[str, str], accept: str = "text/html"):
    return client.post(
        "/f/default", data=data, headers={"Origin": SITE, "Accept": accept}
    )


def one_mail(app: Flask, relay: Relay) -> Received:
    assert deliver(app) == 1
    (got,) = relay.received
    return got


def body_field_names(got: Received) -> tuple[list[str], list[str]]:
    """The field names listed in the text part and in the HTML table."""
    text = got.message.get_body(("plain",)).get_content()
    html = got.message.get_body(("html",)).get_content()
    listed = text.split("\n\n", 1)[1]  # after the "From: ..." line
    names = [line.split(":", 1)[0] for line in listed.splitlines() if ": " in line]
    return names, re.findall(r"<th[^>]*>([^<]*)</th>", html)


@pytest.mark.parametrize("name", sorted(STEERING))
def test_steering_field_never_lands_in_the_body(app, client, relay, name):
    value = STEERING[name][1]
    assert post(client, {**BASE, name: value}).status_code == 303
    got = one_mail(app, relay)
    text_names, html_names = body_field_names(got)
    assert text_names == html_names == ["name", "email", "message"]
    if "STEER" in value and name != "subject":
        # Ignored fields leave no trace in the message at all.
        assert b"STEER" not in got.data


@pytest.mark.parametrize("name", ["access_key", "from_name", *sorted(IGNORED)])
def test_ignored_fields_change_nothing(app, client, relay, name):
    """The same post with and without the field gives the same email."""
    assert (
        post(client, {**BASE, name: STEERING.get(name, ("", "x"))[1]}).status_code
        == 303
    )
    assert post(client, BASE).status_code == 303
    assert deliver(app) == 2
    with_it, without = relay.received
    assert with_it.rcpt_tos == without.rcpt_tos == ["sales@example.com"]
    for header in ("From", "To", "Cc", "Reply-To", "Subject"):
        assert with_it.message[header] == without.message[header]
    for part in ("plain", "html"):
        assert (
            with_it.message.get_body((part,)).get_content()
            == without.message.get_body((part,)).get_content()
        )


def test_replyto_is_honoured(app, client, relay):
    assert (
        post(client, {"message": "hi", "replyto": "steer@example.net"}).status_code
        == 303
    )
    assert one_mail(app, relay).message["Reply-To"].addresses[0].addr_spec == (
        "steer@example.net"
    )


def test_subject_is_honoured(app, client, relay):
    data = {**BASE, "subject": "New Submission from Web3Forms"}
    assert post(client, data).status_code == 303
    assert one_mail(app, relay).message["Subject"] == "New Submission from Web3Forms"


def test_redirect_is_honoured_within_the_allow_list(client):
    ok = post(client, {**BASE, "redirect": "https://www.example.com/sent.html"})
    assert ok.headers["Location"] == "https://www.example.com/sent.html"
    other = post(client, {**BASE, "redirect": "https://evil.example/"})
    assert other.status_code == 303
    assert other.headers["Location"].startswith("http://localhost/f/default/thanks")


@pytest.mark.parametrize("name", ["botcheck", "_honey"])
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_honeypots_filled_store_only_a_tombstone(app, client, relay, name, accept):
    real = post(client, BASE, accept)
    bot = post(client, {**BASE, name: "on"}, accept)
    assert bot.status_code == real.status_code
    states = [r.state for r in app.extensions["formpost"].ledger.rows()]
    assert states == ["dropped", "pending"]
    assert deliver(app) == 1


def test_ccemail_uses_the_cc_allow_list(app, client, relay):
    data = {**BASE, "ccemail": "support, victim@evil.test"}
    assert post(client, data).status_code == 303
    got = one_mail(app, relay)
    assert got.rcpt_tos == ["sales@example.com", "help@example.org"]
    assert got.message["Cc"] == "help@example.org"
    assert b"evil.test" not in got.data


def test_from_name_does_not_change_the_sender(app, client, relay):
    assert post(client, {**BASE, "from_name": "Mission Control"}).status_code == 303
    (sender,) = one_mail(app, relay).message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Contact form",
        "forms@formpost.test",
    )


def test_autoresponse_mails_nobody_but_the_recipient(app, client, relay):
    data = {**BASE, "_autoresponse": "Thanks, we will write back."}
    assert post(client, data).status_code == 303
    assert one_mail(app, relay).rcpt_tos == ["sales@example.com"]


class _Hook(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, list[str]]]:
    """A listening webhook receiver on loopback that records every request."""
    hits: list[str] = []
    handler = type("Hook", (_Hook,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_webhook_is_never_called(app, client, relay, hook):
    url, hits = hook
    assert post(client, {**BASE, "_webhook": url}).status_code == 303
    one_mail(app, relay)
    assert hits == []


def test_the_forms_doc_names_every_steering_field():
    """docs/forms.md says, for each field, which service uses it and what we do."""
    text = FORMS_DOC.read_text(encoding="utf-8")
    section = text.split("## Other services' steering fields", 1)[1].split("\n## ")[0]
    rows = {
        m[1]: m[2]
        for m in re.finditer(r"^\| `([^`]+)` \| ([^|]+) \|", section, re.MULTILINE)
    }
    for name, (service, _) in STEERING.items():
        assert name in rows, name
        assert service in rows[name], name
    for name in IGNORED:
        assert name in rows, name
