"""Drop-in field names, and copies only to configured recipients."""

from __future__ import annotations

import re

import pytest
from werkzeug.datastructures import MultiDict

from .posting import (
    FIELDS,
    HTML,
    JSON,
    PAGE,
    RECEIPT_IN_TEXT,
    SITE,
    assert_json_accepted,
    assert_json_error,
    assert_nothing_stored_or_sent,
    delivered,
    html_of,
    kept,
    only_message,
    post,
    post_json,
    rows,
    text_of,
)

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
    # The bot's post is kept as dropped (an owner may release a false drop),
    # and never delivered.
    states = {r.state: r for r in rows(app)}
    assert set(states) == {"sent", "dropped"}
    assert states["dropped"].message == "buy now"


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
    assert len(kept(app)) == 1


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
