"""POST /f/<form> end to end: other sites' forms in, the real SMTP relay out.

Every app here allows posts from https://www.example.com and redirects to
www.example.com; the relay knows sales=sales@example.com and
support=help@example.org. "Nothing stored" is checked in the ledger, "nothing
sent" by running a worker and looking at what the relay received.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from .helpers import CSRF_RE, FORM_TOKEN_RE, deliver, post_form
from .relay import Relay

SITE = "https://www.example.com"
PAGE = f"{SITE}/contact.html"
EVIL = "https://evil.example"
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
RECEIPT = re.compile(r"^[A-Z0-9]{4}-[A-Z0-9]{4}$")
RECEIPT_IN_TEXT = re.compile(r"[A-Z0-9]{4}-[A-Z0-9]{4}")
FIELDS = {"email": "ada@example.net", "message": "A question about engines."}


@pytest.fixture
def build(make_app: Callable[..., Flask], relay: Relay) -> Callable[..., Flask]:
    """Build an app for www.example.com's forms, with settings overridden."""

    def factory(**overrides: str) -> Flask:
        env = {"ALLOWED_ORIGINS": SITE, "REDIRECT_HOSTS": "www.example.com"}
        env.update(overrides)
        return make_app(relay.env(**env))

    return factory


@pytest.fixture
def app(build: Callable[..., Flask]) -> Flask:
    return build()


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


# -- content types ------------------------------------------------------------


@pytest.mark.parametrize("accept", ["json", "html"])
@pytest.mark.parametrize("encoding", ["urlencoded", "multipart", "json"])
def test_accepted_content_types(app, client, relay, encoding, accept):
    headers = JSON if accept == "json" else HTML
    if encoding == "json":
        response = post_json(client, FIELDS, headers=headers)
    else:
        content_type = (
            "multipart/form-data"
            if encoding == "multipart"
            else "application/x-www-form-urlencoded"
        )
        response = post(client, FIELDS, headers=headers, content_type=content_type)
    if encoding == "json" or accept == "json":
        receipt = assert_json_accepted(response)
    else:
        assert response.status_code == 303
        receipt = re.search(r"receipt=([A-Z0-9-]+)", response.location).group(1)
    (row,) = rows(app)
    assert row.receipt == receipt and row.form_id == "default"
    got = only_message(app, relay)
    assert got.rcpt_tos == ["sales@example.com"]
    assert "message: A question about engines." in text_of(got)


def test_an_empty_file_input_is_not_an_upload(app, client, relay):
    """Browsers send a file part with no name when nothing was chosen."""
    data = {**FIELDS, "attachment": (io.BytesIO(b""), "")}
    response = post(client, data, headers=JSON, content_type="multipart/form-data")
    assert_json_accepted(response)
    assert len(rows(app)) == 1


def test_multipart_with_a_file_is_415_and_nothing_stored(app, client, relay):
    data = {**FIELDS, "attachment": (io.BytesIO(b"%PDF-1.4"), "cv.pdf")}
    response = post(client, data, headers=JSON, content_type="multipart/form-data")
    assert_json_error(response, 415, "attachment")
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_other_body_types_are_415(app, client, relay, content_type):
    response = post(client, "message=hi", headers=JSON, content_type=content_type)
    assert_json_error(response, 415, "_form")
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize(
    "body", ['["message", "hi"]', '"hi"', "42", "null", "{not json"]
)
def test_json_that_is_not_an_object_is_400(app, client, relay, body):
    response = post(client, body, content_type="application/json")
    assert_json_error(response, 400, "_form")
    assert rows(app) == []


@pytest.mark.parametrize(
    "value", [{"nested": "object"}, [{"a": 1}], [["x"]]], ids=["dict", "dicts", "lists"]
)
def test_json_nested_values_are_422_naming_the_field(app, client, value):
    response = post_json(client, {**FIELDS, "extra": value})
    assert_json_error(response, 422, "extra")
    assert rows(app) == []


def test_json_scalars_and_lists_become_text(app, client, relay):
    fields = {"message": "hi", "agree": True, "spam": False, "n": 3, "tags": ["a", 2]}
    assert_json_accepted(post_json(client, {**fields, "nothing": None}))
    text = text_of(only_message(app, relay))
    for line in ("agree: yes", "spam: no", "n: 3", "tags: a, 2", "nothing: "):
        assert line in text.splitlines()


# -- origin checks ------------------------------------------------------------


ALLOWED_SOURCES = [
    pytest.param({"Origin": SITE}, id="origin"),
    pytest.param({"Origin": SITE, "Referer": PAGE}, id="origin-and-referer"),
    pytest.param({"Origin": None, "Referer": PAGE}, id="referer-only"),
]
REFUSED_SOURCES = [
    pytest.param({"Origin": EVIL}, id="other-origin"),
    pytest.param({"Origin": None, "Referer": f"{EVIL}/page"}, id="referer-other"),
    pytest.param({"Origin": None}, id="neither"),
    pytest.param({"Origin": "null"}, id="null"),
    pytest.param({"Origin": "null", "Referer": PAGE}, id="null-with-referer"),
    pytest.param({"Origin": EVIL, "Referer": PAGE}, id="origin-beats-referer"),
    pytest.param({"Origin": f"{SITE}.evil.example"}, id="suffix"),
    pytest.param({"Origin": "http://www.example.com"}, id="scheme"),
    pytest.param({"Origin": f"{SITE}:8443"}, id="port"),
    pytest.param({"Origin": "https://example.com"}, id="parent-domain"),
    pytest.param({"Origin": "https://www.example.co"}, id="prefix"),
    pytest.param({"Origin": f"{SITE}@evil.example"}, id="userinfo"),
    pytest.param(
        {"Origin": None, "Referer": f"{SITE}@evil.example/x"}, id="referer-userinfo"
    ),
    pytest.param(
        {"Origin": None, "Referer": f"{SITE}.evil.example/"}, id="referer-suffix"
    ),
]


@pytest.mark.parametrize("source", ALLOWED_SOURCES)
def test_posts_from_allowed_pages_are_accepted(app, client, relay, source):
    assert_json_accepted(post(client, FIELDS, headers={**JSON, **source}))
    assert len(delivered(app, relay)) == 1


@pytest.mark.parametrize("source", REFUSED_SOURCES)
def test_posts_from_other_pages_are_403(app, client, relay, source):
    response = post(client, FIELDS, headers={**JSON, **source})
    assert_json_error(response, 403, "origin")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert_nothing_stored_or_sent(app, relay)


def test_refused_origin_gets_an_html_page_without_a_link_to_it(client):
    response = post(client, FIELDS, headers={**HTML, "Origin": EVIL, "Referer": EVIL})
    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert "<html" in page and "This site may not post to this form." in page
    assert "evil.example" not in page


# -- compatibility fields -----------------------------------------------------


@pytest.mark.parametrize("field", ["_replyto", "email", "replyto", "Email", "REPLYTO"])
def test_reply_to_fields(app, client, relay, field):
    data = {field: "ada@example.net", "name": "Ada Lovelace", "message": "hi"}
    assert_json_accepted(post(client, data, headers=JSON))
    msg = only_message(app, relay).message
    assert msg["Reply-To"] == "Ada Lovelace <ada@example.net>"
    assert msg["From"] == "Contact form <forms@formpost.test>"


def test_reply_to_without_a_name_is_the_bare_address(app, client, relay):
    assert_json_accepted(post_json(client, {"_replyto": "ada@example.net", "m": "x"}))
    assert only_message(app, relay).message["Reply-To"] == "ada@example.net"


def test_no_address_means_no_reply_to(app, client, relay):
    assert_json_accepted(post_json(client, {"name": "Ada", "message": "hi"}))
    assert only_message(app, relay).message["Reply-To"] is None


@pytest.mark.parametrize("field", ["_subject", "subject", "title", "Subject"])
def test_subject_fields(app, client, relay, field):
    assert_json_accepted(post_json(client, {field: "Engines", "message": "hi"}))
    assert only_message(app, relay).message["Subject"] == "Engines"


def test_subject_falls_back_to_the_form_name(app, client, relay):
    assert_json_accepted(post_json(client, FIELDS))
    msg = only_message(app, relay).message
    assert msg["Subject"] == "New submission (default)"


@pytest.mark.parametrize("field", ["_next", "redirect", "redirectTo", "REDIRECTTO"])
def test_redirect_fields(client, field):
    response = post(client, {**FIELDS, field: "/thanks.html"}, headers=HTML)
    assert response.status_code == 303
    assert response.location == f"{SITE}/thanks.html"


@pytest.mark.parametrize("field", ["toemail", "to", "recipient"])
@pytest.mark.parametrize(
    "value", ["support", "help@example.org", "SUPPORT", " support "]
)
def test_recipient_fields_choose_a_configured_recipient(
    app, client, relay, field, value
):
    assert_json_accepted(post(client, {**FIELDS, field: value}, headers=JSON))
    (row,) = rows(app)
    assert row.recipient_alias == "support"
    got = only_message(app, relay)
    assert got.rcpt_tos == ["help@example.org"]
    assert got.message["To"] == "help@example.org"
    assert value.strip() not in text_of(got)  # a steering field, not content


@pytest.mark.parametrize("field", ["toemail", "to", "recipient"])
@pytest.mark.parametrize(
    "value", ["victim@evil.test", "sales@evil.test", "help@example.org.evil.test"]
)
def test_recipient_fields_refuse_anything_else(app, client, relay, field, value):
    response = post(client, {**FIELDS, field: value}, headers=JSON)
    assert_json_error(response, 400, field)
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize("field", ["content", "message", "body"])
def test_main_text_fields(app, client, relay, field):
    """The main text alone is a complete post; its lines survive as typed."""
    text = "First line <b>\r\nSecond & last"
    assert_json_accepted(post(client, {field: text}, headers=JSON))
    got = only_message(app, relay)
    assert f"{field}: First line <b>\n    Second & last" in text_of(got)
    assert "First line &lt;b&gt;<br>\nSecond &amp; last" in html_of(got)


@pytest.mark.parametrize("field", ["_gotcha", "_honey", "botcheck", "honeypot"])
@pytest.mark.parametrize("accept", ["json", "html"])
def test_honeypots_are_answered_like_success(app, client, relay, field, accept):
    headers = {**(JSON if accept == "json" else HTML), "Referer": PAGE}
    real = post(client, FIELDS, headers=headers)
    bot = post(client, {**FIELDS, "message": "buy now", field: "x"}, headers=headers)
    assert bot.status_code == real.status_code == (200 if accept == "json" else 303)
    assert shape(bot) == shape(real)
    (got,) = delivered(app, relay)
    assert "buy now" not in text_of(got)
    assert len(rows(app)) == 1


def shape(response) -> tuple:
    """A response with its receipt (and request id) masked: what a bot compares."""

    def mask(text: str) -> str:
        return RECEIPT_IN_TEXT.sub("R", text)

    headers = sorted(
        (k, "id" if k == "X-Request-ID" else mask(v))
        for k, v in response.headers.items()
    )
    return response.status_code, headers, mask(response.get_data(as_text=True))


@pytest.mark.parametrize("field", ["_gotcha", "honeypot"])
def test_honeypot_with_next_is_answered_like_success(app, client, relay, field):
    data = {**FIELDS, "_next": "/thanks.html"}
    real = post(client, data, headers=HTML)
    bot = post(client, {**data, field: "x"}, headers=HTML)
    assert real.location == f"{SITE}/thanks.html"
    assert shape(bot) == shape(real)
    assert len(rows(app)) == 1


def test_honeypot_left_empty_is_not_in_the_email(app, client, relay):
    assert_json_accepted(post_json(client, {**FIELDS, "_gotcha": "", "honeypot": ""}))
    text = text_of(only_message(app, relay))
    assert "_gotcha" not in text and "honeypot" not in text


def test_fields_arrive_in_submitted_order_and_escaped(app, client, relay):
    data = MultiDict(
        [
            ("zeta", "last letter"),
            ("name", "Ada"),
            ("_template", "table"),
            ("email", "ada@example.net"),
            ("<script>", "x"),
            ("topic", "engines"),
            ("_captcha", "false"),
            ("message", "<script>alert(1)</script>"),
            ("_next", "/thanks.html"),
            ("to", "support"),
            ("topic", "looms"),
            ("alpha", "first letter"),
        ]
    )
    assert post(client, data, headers=HTML).status_code == 303
    got = only_message(app, relay)
    assert text_of(got).splitlines() == [
        "From: Ada <ada@example.net>",
        "",
        "zeta: last letter",
        "name: Ada",
        "email: ada@example.net",
        "<script>: x",
        "topic: engines, looms",
        "message: <script>alert(1)</script>",
        "alpha: first letter",
    ]
    html = html_of(got)
    headings = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert headings == ["zeta", "name", "email", "&lt;script&gt;", "topic"] + [
        "message",
        "alpha",
    ]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    for hidden in ("_template", "_captcha", "_next", "thanks.html"):
        assert hidden not in text_of(got) and hidden not in html


# -- copies -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["_cc", "cc"])
@pytest.mark.parametrize("value", ["support", "help@example.org"])
def test_cc_to_a_configured_recipient_is_added(app, client, relay, field, value):
    assert_json_accepted(post(client, {**FIELDS, field: value}, headers=JSON))
    got = only_message(app, relay)
    assert got.rcpt_tos == ["sales@example.com", "help@example.org"]
    assert got.message["Cc"] == "help@example.org"
    assert got.message["To"] == "sales@example.com"


@pytest.mark.parametrize(
    "value",
    [
        "victim@evil.test",
        "sales@evil.test",
        "victim@evil.test, bcc@evil.test",
        "Victim <victim@evil.test>",
    ],
)
def test_cc_outside_the_allow_list_never_reaches_the_envelope(
    app, client, relay, value
):
    assert_json_accepted(post(client, {**FIELDS, "_cc": value}, headers=JSON))
    got = only_message(app, relay)
    assert got.rcpt_tos == ["sales@example.com"]
    assert got.message["Cc"] is None
    assert b"evil.test" not in got.data


def test_cc_mixing_allowed_and_outside_keeps_only_the_allowed(app, client, relay):
    data = {**FIELDS, "_cc": "victim@evil.test, support, sales"}
    assert_json_accepted(post(client, data, headers=JSON))
    got = only_message(app, relay)
    assert got.rcpt_tos == ["sales@example.com", "help@example.org"]
    assert b"evil.test" not in got.data


# -- redirects ----------------------------------------------------------------


OPEN_REDIRECTS = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "data:text/html,x",
    "https://www.example.com.evil.example/",
    "https://www.example.com@evil.example/",
    "https://evil.example/?www.example.com",
    "/ok\r\nLocation: https://evil.example",
    "https:evil.example",
    "http://www.example.com:80@evil.example/",
    "https:///evil.example",
    "/\t/evil.example",
    "ftp://www.example.com/",
    "thanks.html",
]


@pytest.mark.parametrize("value", OPEN_REDIRECTS)
def test_open_redirect_attempts_land_on_our_thanks_page(app, client, relay, value):
    response = post(client, {**FIELDS, "_next": value}, headers=HTML)
    assert response.status_code == 303
    assert response.location.startswith(thanks_url(app) + "?")
    assert "evil" not in response.location
    assert "\n" not in response.location and "\r" not in response.location
    assert len(rows(app)) == 1  # the post itself is fine


def test_fullwidth_look_alike_in_next_lands_on_our_thanks_page(app, client):
    value = "https://www.example.com\uff03@evil.example/"
    response = post(client, {**FIELDS, "_next": value}, headers=HTML)
    assert response.status_code == 303
    assert response.location.startswith(thanks_url(app) + "?")


@pytest.mark.parametrize(
    ("value", "location"),
    [
        ("/thanks.html", f"{SITE}/thanks.html"),
        ("/done?x=1&y=2", f"{SITE}/done?x=1&y=2"),
        (f"{SITE}/done?x=1", f"{SITE}/done?x=1"),
        ("HTTPS://WWW.EXAMPLE.COM/Done", f"{SITE}/Done"),
    ],
)
def test_allowed_redirects(client, value, location):
    response = post(client, {**FIELDS, "_next": value}, headers=HTML)
    assert response.status_code == 303
    assert response.location == location


def test_relative_redirect_uses_the_referer_origin(client):
    data = {**FIELDS, "_next": "/thanks.html"}
    response = post(client, data, headers={**HTML, "Origin": None, "Referer": PAGE})
    assert response.location == f"{SITE}/thanks.html"


def test_thanks_page_links_back_to_the_posting_site(app, client):
    response = post(client, FIELDS, headers=HTML)
    assert response.status_code == 303
    page = client.get(response.location)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    receipt = re.search(r"receipt=([A-Z0-9-]+)", response.location).group(1)
    assert f"<strong>{receipt}</strong>" in text
    assert f'href="{SITE}/"' in text


def test_thanks_page_ignores_a_forged_back_link(app, client):
    page = client.get(thanks_url(app) + f"?receipt=<b>&back={EVIL}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "evil.example" not in text and "<b>" not in text


# -- content negotiation ------------------------------------------------------


def test_json_answer_is_never_a_redirect(app, client):
    """A JSON body (or Accept) gets 200 and the receipt even with `_next`."""
    for response in (
        post_json(client, {**FIELDS, "_next": "/thanks.html"}),
        post(client, {**FIELDS, "_next": "/thanks.html"}, headers=JSON),
    ):
        receipt = assert_json_accepted(response)
        assert receipt in {row.receipt for row in rows(app)}


ERRORS = [
    # status, settings, successful posts first, the post, what the page says
    pytest.param(
        400,
        {},
        0,
        {"data": {**FIELDS, "to": "victim@evil.test"}},
        "Unknown recipient",
        id="400",
    ),
    pytest.param(
        403,
        {},
        0,
        {"data": FIELDS, "headers": {"Origin": EVIL}},
        "may not post",
        id="403",
    ),
    pytest.param(
        413,
        {"MAX_CONTENT_LENGTH": "2048"},
        0,
        {"data": {**FIELDS, "message": "x" * 4000}},
        "larger than 2 kB",
        id="413",
    ),
    pytest.param(
        415,
        {},
        0,
        {"data": "message=hi", "content_type": "text/plain"},
        "multipart/form-data",
        id="415",
    ),
    pytest.param(
        422,
        {},
        0,
        {"data": {**FIELDS, "email": "not an address"}},
        "Enter an email address like name@example.com",
        id="422",
    ),
    pytest.param(
        429,
        {"RATE_LIMIT": "1/minute"},
        1,
        {"data": FIELDS},
        "Too many messages from your address",
        id="429",
    ),
    pytest.param(
        503,
        {"BACKLOG_LIMIT": "1"},
        1,
        {"data": FIELDS},
        "receiving too many messages",
        id="503",
    ),
]


def _error_response(build, settings, prior, request, accept):
    app = build(**settings)
    client = app.test_client()
    for _ in range(prior):
        assert_json_accepted(post(client, FIELDS, headers=JSON))
    headers = {**accept, "Referer": PAGE, **request.get("headers", {})}
    kwargs = {k: v for k, v in request.items() if k != "headers"}
    return app, post(client, headers=headers, **kwargs)


@pytest.mark.parametrize(("status", "settings", "prior", "request_", "text"), ERRORS)
def test_errors_as_json(build, status, settings, prior, request_, text):
    app, response = _error_response(build, settings, prior, request_, JSON)
    errors = assert_json_error(response, status)
    assert any(text.lower() in message.lower() for message in errors.values())
    assert len(rows(app)) == prior
    if status in (429, 503):
        assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize(("status", "settings", "prior", "request_", "text"), ERRORS)
def test_errors_as_html_pages(build, status, settings, prior, request_, text):
    app, response = _error_response(build, settings, prior, request_, HTML)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<html" in page
    assert text.lower() in page.lower()
    if status == 403:
        assert PAGE not in page  # the link back is only to an allowed page
    else:
        assert f'<a href="{PAGE}">' in page
    assert len(rows(app)) == prior


def test_html_error_links_to_the_origin_without_a_referer(client):
    response = post(client, {"message": ""}, headers=HTML)
    assert response.status_code == 422
    assert f'<a href="{SITE}/">' in response.get_data(as_text=True)


def test_unknown_form_is_404(client):
    response = post(client, FIELDS, path="/f/nope", headers=JSON)
    assert_json_error(response, 404, "_form")
    page = post(client, FIELDS, path="/f/nope", headers=HTML)
    assert page.status_code == 404
    text = page.get_data(as_text=True)
    assert "<html" in text and "There is no form with this address." in text


# -- CORS ---------------------------------------------------------------------


def preflight(client: FlaskClient, origin: str | None, **headers: str):
    sent = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, idempotency-key",
        **headers,
    }
    if origin is not None:
        sent["Origin"] = origin
    return client.options("/f/default", headers=sent)


def vary(response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",")}


def test_preflight_from_an_allowed_origin(client):
    response = preflight(client, SITE)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "idempotency-key" in allowed and "content-type" in allowed
    assert "origin" in vary(response)


@pytest.mark.parametrize(
    ("origin", "headers"),
    [
        (EVIL, {}),
        ("null", {}),
        (None, {}),
        (f"{SITE}.evil.example", {}),
        ("http://www.example.com", {}),
    ],
)
def test_preflight_from_another_origin_is_403_without_cors(client, origin, headers):
    response = preflight(client, origin, **headers)
    assert response.status_code == 403
    for header in (
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
    ):
        assert header not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"Access-Control-Request-Method": "PUT"},
        {"Access-Control-Request-Headers": "x-forwarded-for"},
    ],
)
def test_preflight_for_other_methods_or_headers_is_403(client, headers):
    response = preflight(client, SITE, **headers)
    assert response.status_code == 403
    assert "Access-Control-Allow-Methods" not in response.headers


def test_preflight_for_an_unknown_form_is_403(client):
    response = client.options("/f/nope", headers={"Origin": SITE})
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("data", "status"), [(FIELDS, 200), ({"message": ""}, 422)], ids=["ok", "error"]
)
def test_answers_to_allowed_origins_carry_cors_headers(client, data, status):
    response = post(client, data, headers=JSON)
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert "origin" in vary(response)
    assert "*" not in response.headers.getlist("Access-Control-Allow-Origin")


def test_answers_to_other_origins_vary_but_carry_no_cors(client):
    response = post(client, FIELDS, headers={**JSON, "Origin": EVIL})
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "origin" in vary(response)


# -- idempotency --------------------------------------------------------------


def test_same_idempotency_key_twice_is_one_submission(app, client, relay):
    headers = {"Idempotency-Key": "abc"}
    first = post_json(client, FIELDS, headers=headers)
    second = post_json(client, FIELDS, headers=headers)
    assert first.status_code == second.status_code == 200
    assert assert_json_accepted(first) == assert_json_accepted(second)
    assert len(rows(app)) == 1
    assert len(delivered(app, relay)) == 1


def test_different_idempotency_keys_are_two_submissions(app, client, relay):
    first = post_json(client, FIELDS, headers={"Idempotency-Key": "abc"})
    second = post_json(client, FIELDS, headers={"Idempotency-Key": "abd"})
    assert assert_json_accepted(first) != assert_json_accepted(second)
    assert len(rows(app)) == 2
    assert len(delivered(app, relay)) == 2


@pytest.mark.parametrize(
    "key", ["k" * 200, "has space", ""], ids=["long", "sp", "empty"]
)
def test_malformed_idempotency_key_is_400(app, client, relay, key):
    response = post_json(client, FIELDS, headers={"Idempotency-Key": key})
    assert_json_error(response, 400, "Idempotency-Key")
    assert rows(app) == []


# -- limits, counted in the ledger (SQLite and PostgreSQL) --------------------


OTHER_CLIENT = {"REMOTE_ADDR": "10.0.0.2"}


@pytest.fixture
def limits_db(database_url: str) -> str:
    """The ledger database the limits are counted in: SQLite and PostgreSQL."""
    return database_url


def test_rate_limit_per_client(build, limits_db):
    app = build(DATABASE_URL=limits_db, RATE_LIMIT="2/minute")
    client = app.test_client()
    for _ in range(2):
        assert_json_accepted(post(client, FIELDS, headers=JSON))
    response = post(client, FIELDS, headers=JSON)
    assert_json_error(response, 429, "_form")
    assert 0 < int(response.headers["Retry-After"]) <= 60
    other = post(client, FIELDS, headers=JSON, environ_base=OTHER_CLIENT)
    assert_json_accepted(other)
    assert len(rows(app)) == 3


def test_recipient_daily_quota(build, limits_db):
    app = build(DATABASE_URL=limits_db, RECIPIENT_DAILY_QUOTA="2")
    client = app.test_client()
    to_sales = {**FIELDS, "to": "sales"}
    for _ in range(2):
        assert_json_accepted(post(client, to_sales, headers=JSON))
    response = post(client, to_sales, headers=JSON, environ_base=OTHER_CLIENT)
    errors = assert_json_error(response, 429, "_form")
    assert "recipient" in errors["_form"]
    assert int(response.headers["Retry-After"]) > 0
    assert_json_accepted(post(client, {**FIELDS, "to": "support"}, headers=JSON))
    assert sorted(r.recipient_alias for r in rows(app)) == ["sales", "sales", "support"]


def test_backlog_limit(build, relay, limits_db):
    app = build(DATABASE_URL=limits_db, BACKLOG_LIMIT="2")
    client = app.test_client()
    for _ in range(2):
        assert_json_accepted(post(client, FIELDS, headers=JSON))
    response = post(client, FIELDS, headers=JSON, environ_base=OTHER_CLIENT)
    assert_json_error(response, 503, "_form")
    assert int(response.headers["Retry-After"]) > 0
    assert deliver(app) == 2
    assert_json_accepted(post(client, FIELDS, headers=JSON))
    assert len(rows(app)) == 3


def test_every_receipt_given_is_a_stored_row(build, limits_db):
    """Whatever the limits answer, a 200 receipt always names a ledger row."""
    app = build(DATABASE_URL=limits_db, RATE_LIMIT="2/minute")
    client = app.test_client()
    answers = [post(client, FIELDS, headers=JSON) for _ in range(3)]
    given = {r.get_json()["id"] for r in answers if r.status_code == 200}
    assert given <= {row.receipt for row in rows(app)}
    assert [r.status_code for r in answers] == [200, 200, 429]


def test_idempotent_retry_at_the_rate_limit_gets_its_receipt(build, database_url):
    app = build(DATABASE_URL=database_url, RATE_LIMIT="2/minute")
    client = app.test_client()
    first = post_json(client, FIELDS, headers={"Idempotency-Key": "a"})
    assert_json_accepted(post_json(client, FIELDS, headers={"Idempotency-Key": "b"}))
    retry = post_json(client, FIELDS, headers={"Idempotency-Key": "a"})
    assert assert_json_accepted(retry) == assert_json_accepted(first)


def test_hosted_form_is_rate_limited(build, limits_db):
    app = build(DATABASE_URL=limits_db, RATE_LIMIT="2/minute")
    client = app.test_client()
    for _ in range(2):
        assert post_form(client).status_code == 303
    response = post_form(client, message="Third time lucky?")
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    page = response.get_data(as_text=True)
    assert "Too many messages from your address" in page
    assert "Third time lucky?" in page
    assert len(rows(app)) == 2


# -- named forms --------------------------------------------------------------


HELP_SITE = "https://help.example.net"
FORMS_TOML = """
[forms.support]
recipients = ["support"]
allowed_origins = ["https://help.example.net"]
redirect_hosts = ["help.example.net"]
subject = "[Website] {subject}"
required = ["email", "message"]
honeypot = "fax_number"

[forms.newsletter]
recipients = ["sales"]
allowed_origins = ["https://www.example.com"]
subject = "[Signup]"
rate_limit = "1/minute"
"""


@pytest.fixture
def forms_app(build, tmp_path) -> Flask:
    path = tmp_path / "forms.toml"
    path.write_text(FORMS_TOML, encoding="utf-8")
    return build(FORMS_FILE=str(path))


def post_support(client: FlaskClient, data: dict[str, str], **headers: str):
    sent = {**JSON, "Origin": HELP_SITE, **headers}
    return post(client, data, path="/f/support", headers=sent)


def test_named_form_uses_its_recipients_and_subject(forms_app, relay):
    client = forms_app.test_client()
    data = {**FIELDS, "subject": "Login trouble"}
    assert_json_accepted(post_support(client, data))
    assert_json_accepted(post_support(client, FIELDS))
    first, second = delivered(forms_app, relay)
    assert first.rcpt_tos == second.rcpt_tos == ["help@example.org"]
    assert first.message["Subject"] == "[Website] Login trouble"
    assert second.message["Subject"] == "[Website] New submission (support)"
    assert {r.form_id for r in rows(forms_app)} == {"support"}


def test_named_form_subject_prefix(forms_app, relay):
    client = forms_app.test_client()
    data = {"email": "ada@example.net", "subject": "Weekly"}
    assert_json_accepted(post(client, data, path="/f/newsletter", headers=JSON))
    assert only_message(forms_app, relay).message["Subject"] == "[Signup] Weekly"


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({"message": "hi"}, {"email"}),
        ({"email": "ada@example.net", "message": "  "}, {"message"}),
        ({"name": "Ada"}, {"email", "message"}),
    ],
)
def test_named_form_required_fields(forms_app, relay, data, missing):
    response = post_support(forms_app.test_client(), data)
    errors = assert_json_error(response, 422, *missing)
    assert all(errors[name].startswith(f"Please fill in {name}") for name in missing)
    assert_nothing_stored_or_sent(forms_app, relay)


def test_named_form_refuses_recipients_outside_it(forms_app, relay):
    """`sales` is configured, but not one of this form's recipients."""
    for value in ("sales", "sales@example.com"):
        response = post_support(forms_app.test_client(), {**FIELDS, "to": value})
        assert_json_error(response, 400, "to")
    assert_nothing_stored_or_sent(forms_app, relay)


def test_named_form_copies_only_its_own_recipients(forms_app, relay):
    data = {**FIELDS, "_cc": "sales"}
    assert_json_accepted(post_support(forms_app.test_client(), data))
    assert only_message(forms_app, relay).rcpt_tos == ["help@example.org"]


def test_named_form_has_its_own_origins_and_redirect_hosts(forms_app):
    client = forms_app.test_client()
    response = post_support(client, FIELDS, Origin=SITE)
    assert_json_error(response, 403, "origin")
    data = {**FIELDS, "_next": f"{HELP_SITE}/done"}
    ok = post_support(client, data, Accept="text/html")
    assert ok.location == f"{HELP_SITE}/done"
    data = {**FIELDS, "_next": f"{SITE}/done"}
    other = post_support(client, data, Accept="text/html")
    assert other.location.startswith(thanks_url(forms_app, "support") + "?")


def test_named_form_own_honeypot(forms_app, relay):
    client = forms_app.test_client()
    assert_json_accepted(post_support(client, {**FIELDS, "fax_number": "555"}))
    assert_nothing_stored_or_sent(forms_app, relay)
    assert_json_accepted(post_support(client, {**FIELDS, "fax_number": ""}))
    assert "fax_number" not in text_of(only_message(forms_app, relay))


def test_named_form_own_rate_limit(forms_app):
    """The newsletter allows one post a minute; the default form is off."""
    client = forms_app.test_client()
    data = {"email": "ada@example.net"}
    assert_json_accepted(post(client, data, path="/f/newsletter", headers=JSON))
    refused = post(client, data, path="/f/newsletter", headers=JSON)
    assert_json_error(refused, 429, "_form")
    for _ in range(2):
        assert_json_accepted(post(client, FIELDS, headers=JSON))


# -- the hosted form's own spam checks ---------------------------------------


def test_hosted_honeypot_is_answered_like_success(app, client, relay):
    response = post_form(client, website="https://spam.example")
    assert response.status_code == 303
    assert response.headers["Location"] == "/thanks"
    assert client.get("/thanks").status_code == 200
    assert_nothing_stored_or_sent(app, relay)


def test_hosted_form_minimum_fill_time(build, relay):
    app = build(MIN_FILL_SECONDS="2")
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    data = {
        "csrf_token": CSRF_RE.search(page).group(1),
        "form_token": FORM_TOKEN_RE.search(page).group(1),
        "recipient": "support",
        "subject": "Hello",
        "message": "Typed remarkably fast.",
    }
    quick = client.post("/", data=data)
    assert quick.status_code == 400
    text = quick.get_data(as_text=True)
    assert "That was quick" in text and "Typed remarkably fast." in text
    assert rows(app) == []
    time.sleep(2.1)
    later = client.post("/", data=data)
    assert later.status_code == 303
    assert later.headers["Location"] == "/thanks"
    assert only_message(app, relay).rcpt_tos == ["help@example.org"]
