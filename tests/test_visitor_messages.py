"""Messages on the hosted form are written for people: how long to wait, and
what an email address should look like (never a validator's internals)."""

from __future__ import annotations

import html
from collections.abc import Callable

import pytest
from flask import Flask

from app.hosted import too_fast

from .helpers import CSRF_RE, FORM_TOKEN_RE, deliver, post_form, use_fake_clock
from .relay import Relay


@pytest.fixture
def slow_app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    return make_app(relay.env(MIN_FILL_SECONDS="5"))


def fields_of(page: str) -> dict[str, str]:
    return {
        "csrf_token": CSRF_RE.search(page).group(1),
        "form_token": FORM_TOKEN_RE.search(page).group(1),
        "recipient": "support",
        "subject": "Hello",
        "message": "Typed remarkably fast.",
    }


def notice(response) -> str:
    return html.unescape(response.get_data(as_text=True))


@pytest.mark.parametrize(
    ("after", "wait"),
    [(0.0, "5 more seconds"), (3.2, "2 more seconds"), (4.5, "1 more second,")],
)
def test_too_fast_says_how_long_to_wait(slow_app, relay, after, wait):
    clock = use_fake_clock(slow_app)
    client = slow_app.test_client()
    data = fields_of(client.get("/").get_data(as_text=True))
    clock.advance(after)
    quick = client.post("/", data=data)
    assert quick.status_code == 400
    text = notice(quick)
    assert f"That was quick! Please check your message, wait {wait}" in text
    assert "Typed remarkably fast." in text  # the input is kept
    assert slow_app.extensions["formpost"].ledger.rows() == []

    clock.advance(5.0 - after)  # waiting as told is enough
    later = client.post("/", data=data)
    assert later.status_code == 303
    assert deliver(slow_app, clock) == 1


def test_a_bad_token_waits_the_whole_minimum(slow_app):
    use_fake_clock(slow_app)
    client = slow_app.test_client()
    data = fields_of(client.get("/").get_data(as_text=True))
    data["form_token"] = "forged"
    assert "wait 5 more seconds" in notice(client.post("/", data=data))


@pytest.mark.parametrize(
    ("wait", "said"),
    [
        (0.2, "wait 1 more second,"),
        (1.0, "wait 1 more second,"),
        (1.01, "wait 2 more seconds"),
    ],
)
def test_too_fast_rounds_up(wait, said):
    assert said in too_fast(wait)


@pytest.mark.parametrize(
    "address",
    ["not-an-email", "ada@example", "ada@@example.com", "ada@exa mple.com", "@x.org"],
)
def test_bad_email_on_the_hosted_form_shows_an_example(app, client, address):
    response = post_form(client, email=address)
    assert response.status_code == 400
    page = notice(response)
    assert "Enter an email address like name@example.com." in page
    # Nothing from email_validator's own explanations.
    for internal in ("The part after the @-sign", "An email address must", "DNS"):
        assert internal not in page


@pytest.fixture
def app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    return make_app(relay.env())


@pytest.fixture
def client(app: Flask):
    return app.test_client()
