"""The submissions API under /api/v1, with real tokens on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.ledger import Ledger
from app.ledger.tokens import TokenStore

from .fakeclock import FakeClock
from .helpers import (
    ledger_of,
    mark_failed,
    mark_retry,
    mark_sent,
    spam_verdict,
    store_verdict,
    use_fake_clock,
)
from .storekit import endpoint, hosted, store

LIST = "/api/v1/submissions"


@dataclass
class Api:
    app: Flask
    client: FlaskClient
    ledger: Ledger
    clock: FakeClock
    read: str
    write: str
    revoked: str

    def call(self, method: str, path: str, token: str | None = None, **kw):
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, headers=headers, **kw)

    def get(self, path: str, **params):
        return self.call("GET", path, self.read, query_string=params)


def tokens_for(app: Flask) -> tuple[str, str, str]:
    ledger = ledger_of(app)
    tokens = TokenStore(ledger.engine, ledger.clock)
    read = tokens.add("reader", can_write=False)[1]
    write = tokens.add("writer", can_write=True)[1]
    revoked = tokens.add("old", can_write=True)[1]
    tokens.revoke("old")
    return read, write, revoked


@pytest.fixture
def api(make_app, database_url) -> Api:
    app = make_app({"DATABASE_URL": database_url})
    clock = use_fake_clock(app)
    return Api(app, app.test_client(), ledger_of(app), clock, *tokens_for(app))


def stored(api: Api, n: int = 0, form: str = "hosted", **kw) -> str:
    """Store a submission a second after the last one; return its receipt."""
    api.clock.advance(1)
    if form == "hosted":
        return store(api.ledger, hosted(n, **kw))
    return store(api.ledger, endpoint((("name", f"N{n}"),), form_id=form, **kw))


def in_state(api: Api, state: str) -> str:
    """Store a submission and bring it to `state` as a worker would."""
    receipt = stored(api, 99)
    if state == "pending":
        return receipt
    if state == "deleted":
        api.ledger.erase([receipt])
        return receipt
    if state in ("spam", "dropped"):
        store_verdict(api.ledger, receipt, state=state)
        return receipt
    claimed = api.ledger.claim(batch=500, lease=60)
    (row,) = [r for r in claimed if r.receipt == receipt]
    api.ledger.release([r for r in claimed if r is not row])
    if state == "sent":
        mark_sent(api.ledger, row)
    elif state == "failed":
        mark_failed(api.ledger, row, "permanent", "550 no such user")
    return receipt


def state_of(api: Api, receipt: str) -> str:
    return api.ledger.row(receipt).state


# -- authentication and authorisation -----------------------------------------

ROUTES = [
    ("GET", "/api/v1/submissions"),
    ("GET", "/api/v1/submissions/<receipt>"),
    ("POST", "/api/v1/submissions/<receipt>/retry"),
    ("POST", "/api/v1/submissions/<receipt>/release"),
    ("DELETE", "/api/v1/submissions/<receipt>"),
]
WRITES = [(m, p) for m, p in ROUTES if m != "GET"]


def route(path: str, receipt: str) -> str:
    return path.replace("<receipt>", receipt)


def test_the_tests_cover_every_api_route(api):
    rules = {
        (method, rule.rule)
        for rule in api.app.url_map.iter_rules()
        if rule.rule.startswith("/api")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert rules == set(ROUTES)


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "unauthorized"),
        ("", "unauthorized"),
        ("Bearer", "unauthorized"),
        ("Basic d3JpdGVyOnNlY3JldA==", "unauthorized"),
        ("Token {write}", "unauthorized"),
        ("Bearer {write} extra", "unauthorized"),
        ("Bearer fp_wrong", "invalid_token"),
        ("Bearer {write}x", "invalid_token"),
        ("Bearer {revoked}", "invalid_token"),
    ],
    ids=[
        "none",
        "empty",
        "no-token",
        "basic",
        "other-scheme",
        "two-words",
        "unknown",
        "altered",
        "revoked",
    ],
)
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_live_token_is_401(api, method, path, authorization, code):
    receipt = in_state(api, "failed")
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(
            write=api.write, revoked=api.revoked
        )
    response = api.call(method, route(path, receipt), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="formpost"')
    assert response.json["error"]["code"] == code
    assert response.headers["Cache-Control"] == "no-store"
    assert state_of(api, receipt) == "failed"  # nothing was done


def test_the_scheme_is_case_insensitive(api):
    response = api.call("GET", LIST, headers={"Authorization": f"bearer {api.read}"})
    assert response.status_code == 200


@pytest.mark.parametrize("known", [True, False], ids=["known", "unknown"])
@pytest.mark.parametrize(("method", "path"), WRITES)
def test_a_read_token_is_403_on_every_write_route(api, method, path, known):
    receipt = in_state(api, "failed") if known else "NONE-SUCH"
    response = api.call(method, route(path, receipt), api.read)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    if known:
        assert state_of(api, receipt) == "failed"


@pytest.mark.parametrize("token", ["read", "write"])
def test_both_tokens_read(api, token):
    receipt = stored(api)
    for path in (LIST, f"{LIST}/{receipt}"):
        response = api.call("GET", path, getattr(api, token))
        assert response.status_code == 200, response.json


@pytest.mark.parametrize(("method", "path"), ROUTES[1:])
@pytest.mark.parametrize("receipt", ["NONE-SUCH", "x" * 300, "K7M2-Q9XD"])
def test_an_unknown_receipt_is_404(api, method, path, receipt):
    stored(api)
    response = api.call(method, route(path, receipt), api.write)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


# -- listing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "１０"}, "limit"),
        ({"state": "lost"}, "state"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01"}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no offset
        ({"since": "2026-13-01T00:00:00Z"}, "since"),
        ({"since": "-5"}, "since"),
        ({"since": "nan"}, "since"),
        ({"since": "1e9"}, "since"),
        ({"until": "2026-01-01T25:00:00Z"}, "until"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "0"}, "cursor"),
        ({"cursor": "-3"}, "cursor"),
        ({"cursor": "9" * 30}, "cursor"),
        ({"status": "sent"}, "status"),
    ],
)
def test_a_bad_parameter_is_400_naming_it(api, params, parameter):
    response = api.get(LIST, **params)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["parameter"] == parameter
    assert parameter in error["message"]
    assert error["code"] in ("bad_parameter", "bad_cursor")


def test_pages_follow_next_without_repeats_or_gaps(api):
    receipts = [stored(api, n) for n in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        body = api.get(LIST, **params).json
        assert len(body["submissions"]) <= 3
        seen += [s["id"] for s in body["submissions"]]
        pages += 1
        if pages == 1:
            stored(api, 100)  # a new post meanwhile is not repeated below
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == receipts[::-1]
    assert pages == 3


def test_the_default_limit_is_50(api):
    for n in range(51):
        stored(api, n)
    body = api.get(LIST).json
    assert len(body["submissions"]) == 50 and body["next"] is not None
    assert len(api.get(LIST, limit="100").json["submissions"]) == 51


def test_filters(api):
    hosted_old = stored(api, 1, message="walrus carpentry")
    start = api.clock.now() + 0.5
    site = stored(api, 2, form="site")
    failed = in_state(api, "failed")

    def ids(**params):
        response = api.get(LIST, **params)
        assert response.status_code == 200, response.json
        return [s["id"] for s in response.json["submissions"]]

    assert ids() == [failed, site, hosted_old]
    assert ids(form="site") == [site]
    assert ids(form="nowhere") == []
    assert ids(state="failed") == [failed]
    assert ids(q="walrus") == [hosted_old]
    assert ids(q="walrus", form="site") == []
    assert ids(since=str(int(start) + 1)) == [failed, site]
    assert ids(since=f"{start:.3f}") == [failed, site]
    rfc = datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")
    assert ids(since=rfc) == [failed, site]
    assert ids(until=rfc) == [hosted_old]
    offset = datetime.fromtimestamp(start, UTC).astimezone().isoformat()
    assert ids(since=offset) == [failed, site]
    assert ids(form="", state="", q="", since="", limit="") == ids()


# -- the JSON --------------------------------------------------------------------

KEYS = {
    "id",
    "form",
    "recipient",
    "state",
    "created_at",
    "subject",
    "name",
    "email",
    "message",
    "fields",
    "origin",
    "client_ip",
    "user_agent",
    "attempts",
    "last_attempt_at",
    "last_reply",
    "sent_at",
    "erased_at",
    "verdict",
}
FIELDS = (
    ("name", "Zoë Ådahl"),
    ("email", "zoe@example.net"),
    ("company", "Acme <Widgets> & Co"),
    ("empty", ""),
    ("message", "two\nlines"),
)


def parse_time(value: str) -> float:
    assert value.endswith("Z")
    return datetime.fromisoformat(value).timestamp()


def test_the_json_of_a_submission(api):
    api.clock.advance(0.25)
    created = api.clock.now()
    post = endpoint(
        FIELDS,
        form_id="site",
        subject="Quote",
        client_ip="203.0.113.9",
        origin="https://www.example.com",
        user_agent="Mozilla/5.0 Test",
    )
    receipt = store(api.ledger, post)
    (row,) = api.ledger.claim(batch=1, lease=60)
    api.clock.advance(2)
    mark_retry(api.ledger, row, "transient", "451 try later", delay=60)

    (listed,) = api.get(LIST).json["submissions"]
    single = api.get(f"{LIST}/{receipt}").json
    assert set(listed) == KEYS
    assert set(single) == KEYS | {"timeline", "deliveries"}
    assert single["deliveries"] == []  # email only
    assert {k: single[k] for k in KEYS} == listed
    assert listed["id"] == receipt
    assert listed["form"] == "site"
    assert listed["recipient"] == "sales"
    assert listed["state"] == "pending"
    assert abs(parse_time(listed["created_at"]) - created) < 0.001
    assert listed["subject"] == "Quote"
    assert (listed["name"], listed["email"]) == ("Zoë Ådahl", "zoe@example.net")
    assert listed["message"] == "two\nlines"
    assert listed["fields"] == [list(pair) for pair in FIELDS]
    assert listed["origin"] == "https://www.example.com"
    assert listed["client_ip"] == "203.0.113.9"
    assert listed["user_agent"] == "Mozilla/5.0 Test"
    assert listed["attempts"] == 1
    assert listed["last_reply"] == "451 try later"
    # Claimed (the attempt began) at `created`, settled two seconds later.
    assert parse_time(listed["last_attempt_at"]) == pytest.approx(created, abs=1e-3)
    assert listed["sent_at"] is None and listed["erased_at"] is None
    assert listed["verdict"] is None  # stored without one
    (attempt,) = single["timeline"]
    assert attempt["outcome"] == "retry"
    assert attempt["error_kind"] == "transient"
    assert attempt["reply"] == "451 try later"
    assert parse_time(attempt["at"]) == pytest.approx(created + 2, abs=1e-3)


# -- spam: the verdict, the filter, release ---------------------------------------


def test_spam_and_dropped_are_listed_only_when_asked_for(api):
    kept = stored(api, 1)
    spam = in_state(api, "spam")
    dropped = in_state(api, "dropped")

    def ids(**params):
        return [s["id"] for s in api.get(LIST, **params).json["submissions"]]

    assert ids() == [kept]
    assert ids(state="spam") == [spam]
    assert ids(state="dropped") == [dropped]


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_a_held_submission_carries_its_verdict_and_every_reason(api, state):
    receipt = in_state(api, state)
    (listed,) = api.get(LIST, state=state).json["submissions"]
    single = api.get(f"{LIST}/{receipt}").json
    verdict = spam_verdict("drop" if state == "dropped" else "quarantine")
    assert listed["state"] == single["state"] == state
    assert listed["verdict"] == single["verdict"]
    assert listed["verdict"] == {
        "name": verdict.name,
        "score": 7.5,
        "reasons": [
            {
                "layer": r.layer,
                "rule": r.rule,
                "value": r.value,
                "threshold": r.threshold,
                "score": r.score,
                "action": r.action,
            }
            for r in verdict.reasons
        ],
    }


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_release_makes_it_due_now_keeping_the_verdict(api, state):
    receipt = in_state(api, state)
    api.clock.advance(60)
    response = api.call("POST", f"{LIST}/{receipt}/release", api.write)
    assert response.status_code == 202
    body = response.json
    assert body["id"] == receipt and body["state"] == "pending"
    assert body["verdict"]["reasons"]  # what was overruled stays
    (entry,) = body["timeline"]
    assert entry["outcome"] == "released"
    assert entry["reply"] == "released by API token writer"
    (claimed,) = api.ledger.claim(batch=5, lease=60)
    assert claimed.receipt == receipt


@pytest.mark.parametrize("state", ["pending", "sending", "sent", "failed", "deleted"])
def test_release_is_409_for_any_other_state(api, state):
    receipt = in_state(api, state)
    response = api.call("POST", f"{LIST}/{receipt}/release", api.write)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "conflict"
    assert f"is {state}" in response.json["error"]["message"]
    assert state_of(api, receipt) == state


def test_release_of_a_tombstone_without_its_message_is_409(api):
    receipt = stored(api, 1)
    store_verdict(api.ledger, receipt, state="dropped", keep_message=False)
    response = api.call("POST", f"{LIST}/{receipt}/release", api.write)
    assert response.status_code == 409
    assert "nothing to deliver" in response.json["error"]["message"]
    assert state_of(api, receipt) == "dropped"


def test_a_read_token_cannot_release(api):
    receipt = in_state(api, "spam")
    response = api.call("POST", f"{LIST}/{receipt}/release", api.read)
    assert response.status_code == 403
    assert state_of(api, receipt) == "spam"


# -- retry and delete ---------------------------------------------------------------


@pytest.mark.parametrize("state", ["failed", "pending"])
def test_retry_makes_it_due_now(api, state):
    receipt = in_state(api, state)
    api.clock.advance(3600)
    response = api.call("POST", f"{LIST}/{receipt}/retry", api.write)
    assert response.status_code == 202
    assert response.json["id"] == receipt and response.json["state"] == "pending"
    assert "timeline" in response.json
    (claimed,) = api.ledger.claim(batch=5, lease=60)  # due now
    assert claimed.receipt == receipt


@pytest.mark.parametrize("state", ["sending", "sent", "deleted"])
def test_retry_is_409_once_sending_or_done(api, state):
    receipt = in_state(api, state)
    response = api.call("POST", f"{LIST}/{receipt}/retry", api.write)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "conflict"
    assert state in response.json["error"]["message"]
    assert state_of(api, receipt) == state


@pytest.mark.parametrize("state", ["pending", "sending", "sent", "failed"])
def test_delete_leaves_a_tombstone_and_again_is_204(api, state):
    receipt = in_state(api, state)
    other = stored(api, 5)
    response = api.call("DELETE", f"{LIST}/{receipt}", api.write)
    assert response.status_code == 204 and response.data == b""
    gone = api.get(f"{LIST}/{receipt}").json
    assert gone["state"] == "deleted" and gone["erased_at"] is not None
    assert gone["fields"] is None
    assert (gone["name"], gone["email"], gone["message"]) == (None, None, None)
    assert gone["client_ip"] is None and gone["user_agent"] is None
    assert api.call("DELETE", f"{LIST}/{receipt}", api.write).status_code == 204
    assert state_of(api, other) == "pending"  # only that one


def test_writes_need_no_csrf_token(api):
    # Every write above is sent like this; here against a failed one, twice.
    receipt = in_state(api, "failed")
    api.app.config["WTF_CSRF_ENABLED"] = True
    response = api.call("POST", f"{LIST}/{receipt}/retry", api.write)
    assert response.status_code == 202


# -- headers on every answer, and the switch ---------------------------------------

ANSWERS = [
    ("GET", LIST, "read", 200),
    ("GET", LIST + "?limit=0", "read", 400),
    ("GET", LIST, None, 401),
    ("GET", LIST, "revoked", 401),
    ("GET", f"{LIST}/<receipt>", "read", 200),
    ("GET", f"{LIST}/NONE-SUCH", "read", 404),
    ("HEAD", LIST, "read", 200),
    ("POST", f"{LIST}/<receipt>/retry", "write", 202),
    ("POST", f"{LIST}/<receipt>/retry", "read", 403),
    ("DELETE", f"{LIST}/<receipt>", "write", 204),
    ("DELETE", f"{LIST}/<receipt>", None, 401),
    ("OPTIONS", LIST, None, 401),
    ("OPTIONS", f"{LIST}/<receipt>", "write", 200),
    ("PUT", LIST, "write", 405),
    ("GET", "/api/v1/nothing", "read", 404),
    ("GET", "/api", None, 404),
]


@pytest.mark.parametrize(("method", "path", "token", "status"), ANSWERS)
def test_every_answer_is_no_store_json_without_cors_or_cookies(
    api, method, path, token, status
):
    receipt = in_state(api, "failed")
    response = api.call(
        method,
        route(path, receipt),
        getattr(api, token) if token else None,
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == status
    assert response.headers["Cache-Control"] == "no-store"
    assert not [h for h, _ in response.headers if h.lower().startswith("access-")]
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if status >= 400:
        error = response.json["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    elif method in ("GET", "POST"):
        assert response.mimetype == "application/json"


@pytest.mark.parametrize(("method", "path"), [*ROUTES, ("GET", "/api/v1/nothing")])
def test_admin_enabled_false_removes_the_api(make_app, database_url, method, path):
    app = make_app({"DATABASE_URL": database_url, "ADMIN_ENABLED": "false"})
    read, write, _ = tokens_for(app)
    receipt = store(ledger_of(app), hosted())
    response = app.test_client().open(
        route(path, receipt),
        method=method,
        headers={"Authorization": f"Bearer {write}"},
    )
    assert response.status_code == 404
    assert not response.is_json  # the site's own 404 page: no API here at all
    assert ledger_of(app).row(receipt).state == "pending"


def test_a_database_that_is_gone_is_503_json(make_app, tmp_path):
    path = tmp_path / "gone.db"
    app = make_app({"DATABASE_URL": f"sqlite:///{path}"})
    _, write, _ = tokens_for(app)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {write}"}
    assert client.get(LIST, headers=headers).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    response = client.get(LIST, headers=headers)
    assert response.status_code == 503
    assert response.json["error"]["code"] == "unavailable"
    assert response.headers["Cache-Control"] == "no-store"
