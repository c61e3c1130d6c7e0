"""API tokens: the store (app/ledger/tokens.py) and `flask --app wsgi tokens ...`."""

from __future__ import annotations

import hashlib
import logging

import pytest
from sqlalchemy import text

from app.ledger.tokens import PREFIX, TOUCH_EVERY, TokenStore

from .helpers import ledger_of, use_fake_clock


@pytest.fixture
def app(make_app, database_url):
    return make_app({"DATABASE_URL": database_url})


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(args=["tokens", *args])


@pytest.fixture
def store(app) -> TokenStore:
    ledger = ledger_of(app)
    return TokenStore(ledger.engine, ledger.clock)


def stored_rows(app) -> list[dict]:
    with ledger_of(app).engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_tokens ORDER BY id")).all()
    return [dict(row._mapping) for row in rows]


def test_add_prints_the_token_last_and_stores_only_its_sha256(app, cli):
    result = cli("add", "ci")
    assert result.exit_code == 0, result.output
    token = result.output.splitlines()[-1]
    assert token.startswith(PREFIX) and len(token) == len(PREFIX) + 43
    (row,) = stored_rows(app)
    assert row["name"] == "ci"
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert not bool(row["can_write"])
    assert all(token not in str(value) for value in row.values())


def test_each_token_is_new(cli):
    first = cli("add", "one").output.splitlines()[-1]
    second = cli("add", "two").output.splitlines()[-1]
    assert first != second


def test_write_makes_a_write_token(app, cli, store):
    token = cli("add", "deploy", "--write").output.splitlines()[-1]
    assert bool(stored_rows(app)[0]["can_write"])
    assert store.authenticate(token).scope == "write"


def test_names_are_unique_even_once_revoked(app, cli):
    assert cli("add", "ci").exit_code == 0
    again = cli("add", "ci", "--write")
    assert again.exit_code != 0 and "exists" in again.output
    assert cli("revoke", "ci").exit_code == 0
    assert cli("add", "ci").exit_code != 0
    assert len(stored_rows(app)) == 1


@pytest.mark.parametrize(
    "name", ["", "two words", "-dash", ".dot", "x" * 65, "café", "a/b", "a\nb"]
)
def test_bad_names_are_refused(app, cli, name):
    result = cli("add", name)
    assert result.exit_code != 0 and "NAME" in result.output
    assert stored_rows(app) == []


def test_list_shows_names_scopes_and_times_never_a_token(app, cli, store):
    assert "no tokens" in cli("list").output
    clock = use_fake_clock(app)
    store.clock = clock
    read = cli("add", "reader").output.splitlines()[-1]
    write = cli("add", "writer", "--write").output.splitlines()[-1]
    store.authenticate(write)
    cli("revoke", "reader")
    output = cli("list").output
    lines = output.splitlines()
    assert lines[0].split() == ["NAME", "SCOPE", "CREATED", "LAST", "USED", "REVOKED"]
    reader = next(line for line in lines if line.startswith("reader"))
    writer = next(line for line in lines if line.startswith("writer"))
    assert " read " in reader and "never" in reader
    assert not reader.rstrip().endswith("-")  # revoked: a time
    assert " write " in writer and "never" not in writer
    assert writer.rstrip().endswith("-")  # not revoked
    assert read not in output and write not in output
    for row in stored_rows(app):
        assert row["token_hash"] not in output


def test_revoke_refuses_the_token_from_then_on(cli, store):
    token = cli("add", "ci").output.splitlines()[-1]
    assert store.authenticate(token) is not None
    result = cli("revoke", "ci")
    assert result.exit_code == 0 and "revoked ci" in result.output
    assert store.authenticate(token) is None
    assert cli("revoke", "ci").exit_code != 0  # already revoked
    assert cli("revoke", "nobody").exit_code != 0


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t[:-1],
        lambda t: t + "x",
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t[len(PREFIX) :],
        lambda t: t.upper(),
        lambda t: t + "x" * 200,
        lambda t: "",
    ],
    ids=["short", "long", "one-char", "no-prefix", "upper", "huge", "empty"],
)
def test_only_the_exact_token_authenticates(store, change):
    _, token = store.add("ci", can_write=False)
    assert store.authenticate(token) is not None
    assert store.authenticate(change(token)) is None


def test_last_used_is_written_at_most_once_a_minute(app, store):
    clock = use_fake_clock(app)
    store.clock = clock
    record, token = store.add("ci", can_write=False)
    assert record.last_used_at is None
    first = clock.now()
    store.authenticate(token)
    assert store.by_name("ci").last_used_at == first
    clock.advance(TOUCH_EVERY - 1)
    store.authenticate(token)
    assert store.by_name("ci").last_used_at == first
    clock.advance(1)
    store.authenticate(token)
    assert store.by_name("ci").last_used_at == first + TOUCH_EVERY


def test_no_token_reaches_the_logs(app, cli, caplog):
    caplog.set_level(logging.DEBUG)
    token = cli("add", "ci", "--write").output.splitlines()[-1]
    client = app.test_client()
    for value in (token, token + "x"):
        headers = {"Authorization": f"Bearer {value}"}
        client.get("/api/v1/submissions", headers=headers)
        client.delete("/api/v1/submissions/NONE-SUCH", headers=headers)
    cli("list")
    assert caplog.records  # the requests were logged
    assert token not in caplog.text
