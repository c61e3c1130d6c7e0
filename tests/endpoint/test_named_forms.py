"""Named forms from FORMS_FILE: their own recipients, origins, subjects and limits."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from .posting import (
    FIELDS,
    JSON,
    SITE,
    assert_dropped_and_not_sent,
    assert_json_accepted,
    assert_json_error,
    assert_nothing_stored_or_sent,
    delivered,
    only_message,
    post,
    rows,
    text_of,
    thanks_url,
)

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
    assert_dropped_and_not_sent(forms_app, relay)
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
