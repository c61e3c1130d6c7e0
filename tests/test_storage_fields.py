"""The visitor's fields are stored as data beside the message (schema version 5)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask

from app.ledger import Content, Ledger, make_engine, migrate
from app.ledger.schema import BOUNDS

from .fakeclock import FakeClock
from .helpers import ledger_of, post_form
from .relay import Relay
from .storekit import endpoint, hosted, store

SITE = "https://www.example.com"


@pytest.fixture
def ledger(database_url) -> Ledger:
    engine = make_engine(database_url)
    migrate(engine)
    yield Ledger(engine, FakeClock())
    engine.dispose()


@pytest.fixture
def on_db(make_app: Callable[..., Flask], relay: Relay, database_url: str) -> Flask:
    return make_app(relay.env(DATABASE_URL=database_url, ALLOWED_ORIGINS=SITE))


def test_the_hosted_form_stores_its_four_fields_origin_and_agent(on_db):
    client = on_db.test_client()
    client.environ_base["HTTP_USER_AGENT"] = "Mozilla/5.0 (test)"
    client.environ_base["HTTP_ORIGIN"] = "http://localhost"
    response = post_form(
        client,
        name="Zoë Ådahl",
        email="zoe@example.net",
        subject="Spare parts",
        message="Line one\r\nline two",
    )
    assert response.status_code == 303
    (row,) = ledger_of(on_db).rows()
    assert json.loads(row.fields) == [
        ["name", "Zoë Ådahl"],
        ["email", "zoe@example.net"],
        ["subject", "Spare parts"],
        ["message", "Line one\nline two"],
    ]
    assert (row.name, row.email, row.message) == (
        "Zoë Ådahl",
        "zoe@example.net",
        "Line one\nline two",
    )
    assert row.user_agent == "Mozilla/5.0 (test)"
    assert row.origin == "http://localhost"


def test_an_endpoint_post_stores_its_fields_in_order_without_steering(on_db):
    client = on_db.test_client()
    response = client.post(
        "/f/default",
        data={
            "name": "Bob Stone",
            "email": "bob@example.org",
            "company": "Acme Widgets",
            "message": "Call me",
            "_next": f"{SITE}/thanks",
            "_subject": "Lead",
        },
        headers={"Origin": SITE, "User-Agent": "curl/8"},
    )
    assert response.status_code in (200, 303), response.get_data(as_text=True)
    (row,) = ledger_of(on_db).rows()
    stored = json.loads(row.fields)
    assert stored == [
        ["name", "Bob Stone"],
        ["email", "bob@example.org"],
        ["company", "Acme Widgets"],
        ["message", "Call me"],
    ]
    assert (row.name, row.email, row.message) == (
        "Bob Stone",
        "bob@example.org",
        "Call me",
    )
    assert (row.origin, row.user_agent) == (SITE, "curl/8")


def test_values_longer_than_their_columns_are_cut_to_fit(ledger):
    long = "x" * 5000
    post = hosted(name="N" * 300, email="e@example.com", origin=long, user_agent=long)
    receipt = store(ledger, post)
    row = ledger.row(receipt)
    for column in ("name", "origin", "user_agent"):
        assert len(getattr(row, column)) == BOUNDS[column], column
    assert row.name == "N" * BOUNDS["name"]


def test_every_bounded_content_column_is_cut_by_content(ledger):
    """A new bounded column must be cut where it is made, not refused later."""
    huge = Content(
        fields=(("a", "b" * 100_000),),
        name="n" * 10_000,
        email="e" * 10_000,
        message="m" * 100_000,
        origin="o" * 10_000,
        user_agent="u" * 10_000,
    ).columns()
    for column, value in huge.items():
        if column in BOUNDS:
            assert len(value) == BOUNDS[column], column


def test_a_post_without_fields_stores_empty_columns_as_none(ledger):
    receipt = store(ledger, hosted(name="", email="", message="only text"))
    row = ledger.row(receipt)
    assert (row.name, row.email, row.message) == (None, None, "only text")
    assert json.loads(row.fields)[3] == ["message", "only text"]


def test_a_nul_in_a_value_is_stored_on_both_databases(ledger):
    post = endpoint(
        (("name", "Nil"), ("note", "before\x00after"), ("message", "m\x00"))
    )
    receipt = store(ledger, post)
    detail = ledger.detail(receipt)
    assert detail.fields[1] == ("note", "before\x00after")  # JSON keeps it
    assert detail.row.message == "m\ufffd"
    assert [r.receipt for r in ledger.search("before").rows] == [receipt]
