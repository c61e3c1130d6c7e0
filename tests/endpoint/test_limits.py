"""Idempotency keys, and the limits counted in the ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from ..helpers import deliver, post_form
from .posting import (
    FIELDS,
    JSON,
    assert_json_accepted,
    assert_json_error,
    delivered,
    post,
    post_json,
    rows,
)

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
