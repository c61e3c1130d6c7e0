"""One message per send: the same content again within DEDUPE_WINDOW is one post.

Back and send again gives the hosted form a new one-use form token, and a
script retrying without an Idempotency-Key sends the same fields again: both
are the same submission, with the same receipt, on SQLite and PostgreSQL,
across processes sharing the database. Different content, another client or
another form is another submission, and so is the same content once the
window has passed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.ledger import dedupe_digest
from config import ConfigError, load_config

from .helpers import deliver, ledger_of, post_form, use_fake_clock
from .relay import Relay

SITE = "https://www.example.com"
RECEIPT = re.compile(r"[A-Z0-9]{4}-[A-Z0-9]{4}")
FIELDS = {"email": "ada@example.net", "message": "A question about engines."}
CLIENT = "192.0.2.7"


def client_of(app: Flask, ip: str = CLIENT) -> FlaskClient:
    """A test client whose requests come from `ip`."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def dedupe_app(
    make_app: Callable[..., Flask], relay: Relay, window: str = "600", **env: str
) -> Flask:
    return make_app(relay.env(DEDUPE_WINDOW=window, ALLOWED_ORIGINS=SITE, **env))


def send_hosted(client: FlaskClient, **fields: str) -> str:
    """Fill a freshly rendered hosted form (a new form token) and send it."""
    response = post_form(client, **fields)
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    page = client.get("/thanks").get_data(as_text=True)
    return RECEIPT.search(page).group(0)


def send_endpoint(
    client: FlaskClient, path: str = "/f/default", headers=None, **fields: str
) -> str:
    """Post the fields to /f/<form> as a page on SITE would; return the receipt."""
    sent = {"Origin": SITE, "Accept": "application/json", **(headers or {})}
    response = client.post(path, data={**FIELDS, **fields}, headers=sent)
    assert response.status_code // 100 == 2, response.get_data(as_text=True)[:300]
    return response.get_json()["id"]


SENDERS = {"hosted": send_hosted, "endpoint": send_endpoint}


@pytest.mark.parametrize("way", sorted(SENDERS))
def test_the_same_content_again_is_one_submission(make_app, relay, database_url, way):
    app = dedupe_app(make_app, relay, DATABASE_URL=database_url)
    client = client_of(app)
    send = SENDERS[way]
    first = send(client)
    again = send(client)  # hosted: a new page, so a new form token
    assert again == first
    assert [r.receipt for r in ledger_of(app).rows()] == [first]
    deliver(app)
    assert len(relay.received) == 1


@pytest.mark.parametrize("way", sorted(SENDERS))
def test_the_window_ends_after_dedupe_window_seconds(make_app, relay, way):
    app = dedupe_app(make_app, relay, window="600")
    clock = use_fake_clock(app)
    client = client_of(app)
    send = SENDERS[way]
    first = send(client)
    clock.advance(599.5)
    assert send(client) == first  # still inside: the same submission
    clock.advance(0.5)  # 600 s after the first: the window is over
    second = send(client)
    assert second != first
    clock.advance(1)
    assert send(client) == second  # the window runs from the second now
    assert len(ledger_of(app).rows()) == 2


HOSTED_CHANGES = [
    {"message": "A question about engines, and looms."},
    {"subject": "Hello again"},
    {"name": "Ada King"},
    {"email": "ada@example.org"},
    {"recipient": "support"},
]
ENDPOINT_CHANGES = [
    {"message": "Another question."},
    {"email": "ada@example.org"},
    {"phone": "555-0100"},  # one more field
    {"_subject": "Re: engines"},
]


@pytest.mark.parametrize("change", HOSTED_CHANGES)
def test_different_hosted_content_is_another_submission(make_app, relay, change):
    app = dedupe_app(make_app, relay)
    client = client_of(app)
    first = send_hosted(client)
    assert send_hosted(client, **change) != first
    assert len(ledger_of(app).rows()) == 2


@pytest.mark.parametrize("change", ENDPOINT_CHANGES)
def test_different_endpoint_content_is_another_submission(make_app, relay, change):
    app = dedupe_app(make_app, relay)
    client = client_of(app)
    first = send_endpoint(client)
    assert send_endpoint(client, **change) != first
    assert len(ledger_of(app).rows()) == 2


@pytest.mark.parametrize("way", sorted(SENDERS))
def test_another_client_with_the_same_content_is_another_submission(
    make_app, relay, way
):
    app = dedupe_app(make_app, relay)
    send = SENDERS[way]
    first = send(client_of(app))
    other = send(client_of(app, "192.0.2.8"))
    assert other != first
    assert len(ledger_of(app).rows()) == 2


def test_another_form_with_the_same_content_is_another_submission(
    make_app, relay, tmp_path
):
    forms = tmp_path / "forms.toml"
    forms.write_text(
        f'[forms.support]\nrecipients = ["support"]\nallowed_origins = ["{SITE}"]\n'
    )
    app = dedupe_app(make_app, relay, FORMS_FILE=str(forms))
    client = client_of(app)
    first = send_endpoint(client)
    assert send_endpoint(client, path="/f/support") != first
    assert len(ledger_of(app).rows()) == 2


def test_line_endings_and_surrounding_blanks_do_not_make_it_new(make_app, relay):
    app = dedupe_app(make_app, relay)
    client = client_of(app)
    first = send_endpoint(client, message="Line one\nLine two")
    assert send_endpoint(client, message="  Line one\r\nLine two \n") == first
    assert len(ledger_of(app).rows()) == 1


def test_window_zero_switches_content_dedupe_off(make_app, relay):
    app = dedupe_app(make_app, relay, window="0")
    client = client_of(app)
    assert send_endpoint(client) != send_endpoint(client)
    assert send_hosted(client) != send_hosted(client)
    assert len(ledger_of(app).rows()) == 4


def test_the_form_token_and_idempotency_key_still_dedupe_with_window_zero(
    make_app, relay
):
    app = dedupe_app(make_app, relay, window="0")
    client = client_of(app)
    key = {"Idempotency-Key": "order-1"}
    first = send_endpoint(client, headers=key)
    assert send_endpoint(client, headers=key, message="changed") == first
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="form_token" type="hidden" value="([^"]+)"', page)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    data = {
        "recipient": "sales",
        "subject": "Hi",
        "message": "Same page twice",
        "csrf_token": csrf.group(1),
        "form_token": token.group(1),
    }
    assert client.post("/", data=data).status_code == 303
    assert client.post("/", data=data).status_code == 303
    assert len(ledger_of(app).rows()) == 2


def test_a_repeat_at_the_rate_limit_gets_its_receipt_not_429(make_app, relay):
    app = dedupe_app(make_app, relay, RATE_LIMIT="1/minute")
    client = client_of(app)
    first = send_endpoint(client)
    assert send_endpoint(client) == first  # the same post: not a new one
    response = client.post(
        "/f/default",
        data={**FIELDS, "message": "Something else"},
        headers={"Origin": SITE, "Accept": "application/json"},
    )
    assert response.status_code == 429  # a new post is over the limit
    assert len(ledger_of(app).rows()) == 1


def test_two_processes_sharing_the_database_store_the_same_content_once(
    make_app, relay, database_url
):
    """Two apps (two engines, as two machines would have) race the same post."""
    apps = [dedupe_app(make_app, relay, DATABASE_URL=database_url) for _ in range(2)]
    receipts: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def run(app: Flask) -> None:
        try:
            client = client_of(app)
            start.wait(10)
            receipts.append(send_endpoint(client))
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(apps[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(set(receipts)) == 1, receipts
    assert len(ledger_of(apps[0]).rows()) == 1


def test_a_long_form_id_and_a_long_idempotency_key_are_stored(
    make_app, relay, database_url, tmp_path
):
    """40 + 128 characters once overflowed PostgreSQL's dedupe_key column."""
    form_id = "f" * 40
    forms = tmp_path / "forms.toml"
    forms.write_text(
        f'[forms.{form_id}]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n'
    )
    app = dedupe_app(
        make_app, relay, window="0", DATABASE_URL=database_url, FORMS_FILE=str(forms)
    )
    client = client_of(app)
    key = "k" * 128
    first = send_endpoint(
        client, path=f"/f/{form_id}", headers={"Idempotency-Key": key}
    )
    again = send_endpoint(
        client, path=f"/f/{form_id}", headers={"Idempotency-Key": key}
    )
    assert again == first
    (row,) = ledger_of(app).rows()
    assert row.dedupe_key == dedupe_digest(f"idem:{form_id}:{key}")
    assert len(row.dedupe_key) == 64


@pytest.mark.parametrize("value", ["-1", "ten", "1e3", "604801", "nan", "10s"])
def test_a_bad_dedupe_window_stops_start_up_naming_it(value):
    with pytest.raises(ConfigError, match="DEDUPE_WINDOW"):
        load_config({"DEDUPE_WINDOW": value})


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, 600.0), ("0", 0.0), ("90", 90.0)]
)
def test_dedupe_window_default_and_values(value, seconds):
    env = {} if value is None else {"DEDUPE_WINDOW": value}
    assert load_config(env)["DEDUPE_WINDOW"] == seconds
