"""Posting as another site's page would, and reading what came of it.

Every app here allows posts from https://www.example.com and redirects to
www.example.com; the relay knows sales=sales@example.com and
support=help@example.org. "Nothing stored" is checked in the ledger, "nothing
sent" by running a worker and looking at what the relay received.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, url_for
from flask.testing import FlaskClient

from ..helpers import deliver
from ..relay import Relay

SITE = "https://www.example.com"
PAGE = f"{SITE}/contact.html"
EVIL = "https://evil.example"
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
RECEIPT = re.compile(r"^[A-Z0-9]{4}-[A-Z0-9]{4}$")
RECEIPT_IN_TEXT = re.compile(r"[A-Z0-9]{4}-[A-Z0-9]{4}")
FIELDS = {"email": "ada@example.net", "message": "A question about engines."}


def post(
    client: FlaskClient,
    data: Any = None,
    *,
    path: str = "/f/default",
    headers: dict[str, str | None] | None = None,
    **kwargs: Any,
):
    """POST as a page on SITE would; a header set to None is left out."""
    sent = {"Origin": SITE, **(headers or {})}
    sent = {k: v for k, v in sent.items() if v is not None}
    return client.post(path, data=data, headers=sent, **kwargs)


def post_json(client: FlaskClient, fields: dict[str, Any], **kwargs: Any):
    """POST a JSON object (which also asks for a JSON answer)."""
    return post(client, json=fields, **kwargs)


def rows(app: Flask) -> list[Any]:
    return app.extensions["formpost"].ledger.rows()


def delivered(app: Flask, relay: Relay) -> list[Any]:
    """Run a worker until the queue is empty; return everything the relay has."""
    deliver(app)
    return relay.received


def only_message(app: Flask, relay: Relay):
    (got,) = delivered(app, relay)
    return got


def text_of(got) -> str:
    return got.message.get_body(("plain",)).get_content()


def html_of(got) -> str:
    return got.message.get_body(("html",)).get_content()


def thanks_url(app: Flask, form_id: str = "default") -> str:
    """Our own thank-you page, as an absolute URL."""
    with app.test_request_context():
        return url_for("endpoint.thanks", form_id=form_id, _external=True)


def kept(app: Flask) -> list[Any]:
    """The rows that keep a post: all but the spam verdict's drop tombstones."""
    return [r for r in rows(app) if r.state != "dropped"]


def assert_dropped_and_not_sent(app: Flask, relay: Relay) -> None:
    """Only tombstones of dropped posts (a honeypot) are stored; nothing sent."""
    assert rows(app) and all(r.state == "dropped" for r in rows(app))
    assert delivered(app, relay) == []


def assert_nothing_stored_or_sent(app: Flask, relay: Relay) -> None:
    assert rows(app) == []
    assert delivered(app, relay) == []


def assert_json_error(response, status: int, *keys: str) -> dict[str, str]:
    """Check the `{"ok": false, "fields": {...}}` shape; return the fields."""
    assert response.status_code == status
    assert response.is_json
    body = response.get_json()
    assert body["ok"] is False and body["success"] is False
    errors = body["fields"]
    assert errors and all(isinstance(v, str) and v for v in errors.values())
    assert body["message"] == " ".join(errors.values())
    assert [(e["field"] or "_form", e["message"]) for e in body["errors"]] == list(
        errors.items()
    )
    for key in keys:
        assert key in errors
    assert "Location" not in response.headers
    return errors


def assert_json_accepted(response) -> str:
    assert response.status_code == 200
    assert response.is_json
    body = response.get_json()
    assert body["ok"] is True and body["success"] is True
    assert RECEIPT.match(body["id"])
    assert set(body) == {"ok", "success", "id", "message"}
    assert "Location" not in response.headers
    return body["id"]
