"""What clients of POST /f/<form> read back: the JSON contract, and the bodies
we refuse with a clear answer instead of a 500, a wrong 413, or altered text.

The JSON shapes are the ones the drop-in snippets of Formspree, Web3Forms and
FormSubmit read (tests/test_snippets_browser.py drives those snippets in a
browser); here every case is checked with Flask's test client against the
real ledger and the real relay.
"""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import pytest

from ..helpers import deliver
from .posting import (
    FIELDS,
    HTML,
    JSON,
    RECEIPT,
    SITE,
    assert_nothing_stored_or_sent,
    kept,
    post,
    rows,
)

JSON_ACCEPT = JSON
HTML_ACCEPT = HTML


def refusal(response, status: int) -> dict[str, Any]:
    """Check the JSON refusal shape every snippet can read; return the body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert set(body) == {"ok", "success", "message", "errors", "fields"}
    assert body["ok"] is False and body["success"] is False
    assert isinstance(body["errors"], list) and body["errors"]
    for error in body["errors"]:
        assert set(error) == {"field", "code", "message"}
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", error["code"])
        assert error["message"].endswith(".")
    assert body["message"] == " ".join(e["message"] for e in body["errors"])
    return body


# -- success ------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    [
        {"json": FIELDS},
        {"data": FIELDS, "headers": JSON_ACCEPT},
        {
            "data": {**FIELDS, "attachment": (io.BytesIO(b""), "")},
            "headers": JSON_ACCEPT,
            "content_type": "multipart/form-data",
        },
    ],
    ids=["json", "urlencoded", "multipart"],
)
def test_json_success_is_200_with_ok_success_id_and_message(app, client, how):
    """Web3Forms' snippet checks status 200; FormSubmit's reads success/message."""
    response = post(client, **how)
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True and body["success"] is True
    assert body["message"] == "Thank you! Your message has been received."
    (row,) = rows(app)
    assert body["id"] == row.receipt and RECEIPT.match(body["id"])


def test_honeypot_json_answer_is_the_same_shape(app, client):
    real = post(client, json=FIELDS).get_json()
    bot = post(client, json={**FIELDS, "botcheck": "on"})
    assert bot.status_code == 200
    assert set(bot.get_json()) == set(real) and bot.get_json()["success"] is True
    assert len(kept(app)) == 1


# -- refusals: the list Formspree's snippet maps, the sentence the others show --


def test_422_lists_each_field_with_code_and_message(build, relay):
    app = build()
    response = post(
        app.test_client(),
        json={"email": "ada@example", "message": ""},
    )
    body = refusal(response, 422)
    assert body["errors"] == [
        {
            "field": "email",
            "code": "TYPE_EMAIL",
            "message": "Enter an email address like name@example.com.",
        }
    ]
    assert body["fields"] == {"email": "Enter an email address like name@example.com."}
    assert body["message"] == "Enter an email address like name@example.com."
    assert_nothing_stored_or_sent(app, relay)


def test_several_problems_are_all_listed_and_said(make_app, relay, tmp_path):
    forms = tmp_path / "forms.toml"
    forms.write_text(
        '[forms.support]\nrecipients = ["sales"]\n'
        f'allowed_origins = ["{SITE}"]\nrequired = ["phone"]\n',
        encoding="utf-8",
    )
    app = make_app(relay.env(FORMS_FILE=str(forms)))
    response = app.test_client().post(
        "/f/support",
        json={"email": "nope", "message": "hi"},
        headers={"Origin": SITE},
    )
    body = refusal(response, 422)
    assert [(e["field"], e["code"]) for e in body["errors"]] == [
        ("email", "TYPE_EMAIL"),
        ("phone", "REQUIRED_FIELD_MISSING"),
    ]
    assert "name@example.com" in body["message"] and "phone" in body["message"]


def test_whole_post_errors_have_a_null_field(app, client):
    body = refusal(post(client, json={"message": "  "}), 422)
    assert body["errors"] == [
        {
            "field": None,
            "code": "EMPTY",
            "message": "The form arrived empty. Please fill it in and send it again.",
        }
    ]
    assert body["fields"] == {"_form": body["errors"][0]["message"]}


@pytest.mark.parametrize(
    ("status", "settings", "request_", "code"),
    [
        (
            403,
            {},
            {"headers": {"Origin": "https://evil.example"}},
            "ORIGIN_NOT_ALLOWED",
        ),
        (400, {}, {"json": {**FIELDS, "to": "x@evil.test"}}, "UNKNOWN_RECIPIENT"),
        (429, {"RATE_LIMIT": "1/minute"}, {}, "RATE_LIMITED"),
    ],
    ids=["403", "400", "429"],
)
def test_every_refusal_has_the_snippet_shape(build, status, settings, request_, code):
    app = build(**settings)
    client = app.test_client()
    if status == 429:
        assert post(client, json=FIELDS).status_code == 200
    kwargs = {"json": FIELDS, **request_}
    headers = {"Origin": SITE, **kwargs.pop("headers", {})}
    body = refusal(client.post("/f/default", headers=headers, **kwargs), status)
    assert body["errors"][0]["code"] == code


# -- files, and what was too large ------------------------------------------------

FILE_100K = b"%PDF-1.4\n" + b"x" * 100_000


@pytest.mark.parametrize("accept", ["json", "html"])
def test_a_100kb_file_is_415_naming_the_field_not_413(app, client, relay, accept):
    """The default MAX_CONTENT_LENGTH is 64 kB: the file is found first."""
    data = {**FIELDS, "cv": (io.BytesIO(FILE_100K), "cv.pdf")}
    headers = JSON_ACCEPT if accept == "json" else HTML_ACCEPT
    response = post(client, data, headers=headers, content_type="multipart/form-data")
    if accept == "json":
        body = refusal(response, 415)
        assert body["errors"] == [
            {
                "field": "cv",
                "code": "FILES_NOT_ACCEPTED",
                "message": "Files are not accepted by this form. Remove the "
                "file and send the form again.",
            }
        ]
    else:
        assert response.status_code == 415
        page = response.get_data(as_text=True)
        assert "<strong>cv</strong>" in page
        assert "Files are not accepted by this form" in page
    assert_nothing_stored_or_sent(app, relay)


def test_a_file_before_the_fields_is_named_too(app, client, relay):
    data = {"cv": (io.BytesIO(FILE_100K), "cv.pdf"), **FIELDS}
    response = post(
        client, data, headers=JSON_ACCEPT, content_type="multipart/form-data"
    )
    assert refusal(response, 415)["fields"] == {
        "cv": "Files are not accepted by this form. Remove the file and send "
        "the form again."
    }
    assert_nothing_stored_or_sent(app, relay)


def test_an_empty_file_part_with_data_is_still_a_file(app, client, relay):
    data = {**FIELDS, "cv": (io.BytesIO(b"data"), "")}
    response = post(
        client, data, headers=JSON_ACCEPT, content_type="multipart/form-data"
    )
    assert refusal(response, 415)["errors"][0]["field"] == "cv"
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize(
    "how",
    [
        {"json": {**FIELDS, "message": "x" * 70_000}},
        {"data": {**FIELDS, "message": "x" * 70_000}, "headers": JSON_ACCEPT},
        {
            "data": {**FIELDS, "message": "x" * 70_000},
            "headers": JSON_ACCEPT,
            "content_type": "multipart/form-data",
        },
    ],
    ids=["json", "urlencoded", "multipart"],
)
def test_413_says_the_whole_post_and_the_limit_in_kb(app, client, relay, how):
    body = refusal(post(client, **how), 413)
    assert body["errors"] == [
        {
            "field": None,
            "code": "TOO_LARGE",
            "message": "The whole post is larger than 64 kB, the most this form "
            "accepts. Please shorten your message and send it again.",
        }
    ]
    assert_nothing_stored_or_sent(app, relay)


def test_413_page_says_the_configured_limit(build, relay):
    app = build(MAX_CONTENT_LENGTH="10240")
    response = post(app.test_client(), {**FIELDS, "message": "x" * 11_000})
    assert response.status_code == 413
    assert "larger than 10 kB" in response.get_data(as_text=True)
    assert_nothing_stored_or_sent(app, relay)


# -- bodies that used to be 500s (or silently altered): 400, nothing stored --

NOT_UTF8 = (
    "The form was not sent as UTF-8 text. Please send it again from a current "
    "browser, or encode it as UTF-8."
)
BAD_BODIES = [
    pytest.param(
        b'{"message": "a\\ud800b"}',
        "application/json",
        "INVALID_CHARACTER",
        id="json-lone-high-surrogate",
    ),
    pytest.param(
        b'{"message": "a\\udc00b"}',
        "application/json",
        "INVALID_CHARACTER",
        id="json-lone-low-surrogate",
    ),
    pytest.param(
        b'{"a\\ud800": "x", "message": "hi"}',
        "application/json",
        "INVALID_CHARACTER",
        id="json-surrogate-key",
    ),
    pytest.param(
        b'{"message": ["a", "\\ud800"]}',
        "application/json",
        "INVALID_CHARACTER",
        id="json-surrogate-in-list",
    ),
    pytest.param(
        b'{"message": "a\xed\xa0\x80b"}',
        "application/json",
        "INVALID_UTF8",
        id="json-encoded-surrogate",
    ),
    pytest.param(
        b'{"message": "caf\xe9"}', "application/json", "INVALID_UTF8", id="json-latin-1"
    ),
    pytest.param(
        b"[" * 1000 + b"]" * 1000, "application/json", "TOO_DEEP", id="json-1000-deep"
    ),
    pytest.param(
        b'{"message": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        "application/json",
        "TOO_DEEP",
        id="json-1000-deep-value",
    ),
    pytest.param(
        b"[" * 30_000 + b"]" * 30_000,  # just under the 64 kB limit
        "application/json",
        "TOO_DEEP",
        id="json-30000-deep",
    ),
    pytest.param(
        b"message=caf%E9",
        "application/x-www-form-urlencoded",
        "INVALID_UTF8",
        id="form-percent-latin-1",
    ),
    pytest.param(
        b"message=a%ED%A0%80b",
        "application/x-www-form-urlencoded",
        "INVALID_UTF8",
        id="form-percent-surrogate",
    ),
    pytest.param(
        b"message=caf\xe9",
        "application/x-www-form-urlencoded",
        "INVALID_UTF8",
        id="form-raw-latin-1",
    ),
    pytest.param(
        b"mess%FFage=hi",
        "application/x-www-form-urlencoded",
        "INVALID_UTF8",
        id="form-name-not-utf8",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "code"), BAD_BODIES)
def test_bad_bodies_are_400_as_json(app, client, relay, body, content_type, code):
    response = post(client, body, headers=JSON_ACCEPT, content_type=content_type)
    answer = refusal(response, 400)
    assert [(e["field"], e["code"]) for e in answer["errors"]] == [(None, code)]
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    BAD_BODIES[:1] + BAD_BODIES[6:7] + BAD_BODIES[9:10],
)
def test_bad_bodies_are_400_as_a_page(app, client, relay, body, content_type, code):
    response = post(client, body, headers=HTML_ACCEPT, content_type=content_type)
    if content_type == "application/json":
        # A JSON body gets a JSON answer whatever it accepts.
        assert response.status_code == 400 and response.is_json
    else:
        assert response.status_code == 400
        assert response.mimetype == "text/html"
        assert NOT_UTF8 in response.get_data(as_text=True)
    assert_nothing_stored_or_sent(app, relay)


def test_multipart_value_not_utf8_is_400(app, client, relay):
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="message"\r\n\r\n'
        ).encode()
        + b"caf\xe9\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    response = post(
        client,
        body,
        headers=JSON_ACCEPT,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert refusal(response, 400)["errors"][0]["code"] == "INVALID_UTF8"
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize(
    "body",
    [
        b'--b\r\nContent-Disposition: form-data; name="message"\r\n\r\nhi',
        b"--b\r\nX-No-Disposition: 1\r\n\r\nhi\r\n--b--\r\n",
    ],
    ids=["cut-short", "no-disposition"],
)
def test_malformed_multipart_is_400(app, client, relay, body):
    response = post(
        client,
        body,
        headers=JSON_ACCEPT,
        content_type="multipart/form-data; boundary=b",
    )
    assert refusal(response, 400)["errors"][0]["code"] == "MALFORMED_MULTIPART"
    assert_nothing_stored_or_sent(app, relay)


def test_good_utf8_still_arrives_exactly(app, client, relay):
    text = "Grüße 你好 👋 \u00e9\u0301"
    assert post(client, json={"message": text}).status_code == 200
    body = "message=" + "".join(f"%{b:02X}" for b in text.encode())
    response = post(
        client,
        body,
        headers=JSON_ACCEPT,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    deliver(app)
    texts = [m.message.get_body(("plain",)).get_content() for m in relay.received]
    assert texts == [f"message: {text}\n", f"message: {text}\n"]


def test_json_dumped_by_a_client_round_trips(app, client, relay):
    """The escape \\u00e9 (a real character) is fine; only lone surrogates fail."""
    raw = json.dumps({"message": "café 👋"})  # ASCII with \\u escapes, pairs too
    response = post(client, raw, content_type="application/json")
    assert response.status_code == 200
    deliver(app)
    (got,) = relay.received
    assert got.message.get_body(("plain",)).get_content() == "message: café 👋\n"


def test_nesting_past_the_limit_is_400_whatever_the_recursion_limit(app, client):
    """33 levels: refused by depth before parsing, not by the parser's recursion."""
    body = '{"message": ' + "[" * 32 + '"x"' + "]" * 32 + "}"
    answer = refusal(post(client, body, content_type="application/json"), 400)
    assert answer["errors"][0]["code"] == "TOO_DEEP"
    assert rows(app) == []


def test_brackets_inside_strings_are_text(app, client, relay):
    text = "[" * 40 + "{ not structure }" + "]" * 40
    response = post(client, json={"message": text, "note": '\\"[[['})
    assert response.status_code == 200
    deliver(app)
    (got,) = relay.received
    assert got.message.get_body(("plain",)).get_content() == (
        f'message: {text}\nnote: \\"[[[\n'
    )


@pytest.mark.parametrize(
    "body",
    [
        '{"m": "' + "[" * 40 + '\\"a' * 20_000,  # never closed, many escapes
        '{"m": [' + '"\\"[", ' * 8_000 + '"x"]}',  # brackets in strings
    ],
    ids=["unterminated", "bracket-strings"],
)
def test_hostile_json_is_answered_quickly(app, client, body):
    started = time.monotonic()
    response = post(client, body, content_type="application/json")
    # Depth is checked on the parsed value: no scan of the text that could
    # go quadratic on escapes (a regex over strings took 18 s on the first).
    assert time.monotonic() - started < 5
    assert response.status_code in (200, 400)
    assert response.is_json
