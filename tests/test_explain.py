"""explain: a post through every gate, nothing stored, sent or taken."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.explain import read_post
from app.ledger.schema import counters, limit_buckets, submissions

from .endpoint.posting import FIELDS, JSON, post
from .helpers import deliver, ledger_of

SITE = "https://www.example.com"
FORMS = """
[forms.contact]
recipients = ["sales"]
allowed_origins = ["https://www.example.com"]
rate_limit = "2/minute"

[forms.contact.spam]
max_links = 1
blocked_words = ["casino"]
blocked_email_domains = ["spam.example"]
blocked_networks = ["198.51.100.0/24"]
"""


@pytest.fixture
def app(make_app, relay, database_url, tmp_path):
    forms = tmp_path / "forms.toml"
    forms.write_text(FORMS, encoding="utf-8")
    return make_app(
        relay.env(
            DATABASE_URL=database_url,
            FORMS_FILE=str(forms),
            RATE_LIMIT="2/minute",
            DEDUPE_WINDOW="600",
            ALLOWED_ORIGINS=SITE,
        )
    )


def explain(app, tmp_path, body: str | None, *args: str, form: str = "contact"):
    argv = ["explain", form, "--origin", SITE, "--ip", "203.0.113.9", *args]
    if body is not None:
        path = tmp_path / "post.txt"
        path.write_text(body, encoding="utf-8")
        argv += ["--file", str(path)]
    return app.test_cli_runner().invoke(args=argv)


def counts(app) -> tuple[int, ...]:
    with ledger_of(app).engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(submissions)).scalar_one(),
            conn.execute(select(func.count()).select_from(limit_buckets)).scalar_one(),
            conn.execute(select(func.sum(counters.c.value))).scalar() or 0,
        )


GOOD = "name=Ada\nemail=ada@example.net\nmessage=A question about engines.\n"


@pytest.mark.parametrize(
    ("body", "code", "wanted"),
    [
        pytest.param(
            GOOD,
            0,
            ["ok  origin", "verdict  accept (score 0)", "stored and delivered"],
            id="clean",
        ),
        pytest.param(
            "email=ada@example.net\nmessage=see https://a.example https://b.example\n",
            0,
            [
                "links 2 links (at most 1): score 2.5",
                "verdict  accept",
            ],
            id="one-link-over-still-accepted",
        ),
        pytest.param(
            "email=ada@example.net\nmessage=Best casino https://a.example "
            "https://b.example https://c.example\n",
            1,
            [
                "blocked_word casino (blocked_words): quarantine",
                "verdict  quarantine",
                "stored as spam",
                "raise max_links to 3 in [forms.contact.spam]",
                "remove 'casino' from blocked_words in [forms.contact.spam]",
            ],
            id="quarantine",
        ),
        pytest.param(
            "email=bot@mail.spam.example\nmessage=Hello there\n",
            1,
            ["blocked_email_domain mail.spam.example (spam.example): quarantine"],
            id="domain",
        ),
        pytest.param(
            "email=ada@example.net\nmessage=Hi\n_gotcha=on\n",
            1,
            [
                "honeypot filled (left empty): drop",
                "verdict  drop",
                "stored as dropped",
            ],
            id="honeypot",
        ),
        pytest.param(
            "email=not an address\nmessage=Hi\n",
            1,
            ["NO  fields", "email:", "correct the fields", "spam     not reached"],
            id="invalid",
        ),
    ],
)
def test_each_post_gets_each_gates_answer(app, tmp_path, body, code, wanted):
    result = explain(app, tmp_path, body)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    for line in wanted:
        assert line in result.output, result.output
    assert result.exit_code == code


def test_it_stores_sends_and_takes_nothing(app, relay, tmp_path):
    before = counts(app)
    for _ in range(3):
        result = explain(app, tmp_path, GOOD)
        assert result.exit_code == 0, result.output
        assert "rate 2/60 s per client: 2 of 2 left" in result.output
    explain(app, tmp_path, "email=ada@example.net\nmessage=casino\n")
    explain(app, tmp_path, "email=a@example.net\n_gotcha=1\nmessage=x\n")
    assert counts(app) == before
    assert deliver(app) == 0 and relay.received == []


def test_it_reads_the_limits_and_dedupe_as_they_stand(app, tmp_path):
    client = app.test_client()
    sent = post(client, FIELDS, path="/f/contact", headers=JSON)
    assert sent.status_code == 200
    receipt = sent.get_json()["id"]
    body = "\n".join(f"{k}={v}" for k, v in FIELDS.items())
    # The same content again from another client: no repeat, one token less
    # for 203.0.113.9 only if it was that client (the test client is 127.0.0.1).
    result = explain(app, tmp_path, body, "--ip", "127.0.0.1")
    assert f"repeats {receipt}" in result.output
    assert "rate 2/60 s per client: 1 of 2 left" in result.output
    post(client, {**FIELDS, "message": "another"}, path="/f/contact", headers=JSON)
    result = explain(app, tmp_path, GOOD, "--ip", "127.0.0.1")
    assert "NO  limits" in result.output
    assert "none left" in result.output
    assert "refused with 429" in result.output
    assert result.exit_code == 1


def test_a_blocked_network_and_a_foreign_origin(app, tmp_path):
    argv = ["explain", "contact", "--origin", "https://evil.example"]
    path = tmp_path / "p.txt"
    path.write_text(GOOD, encoding="utf-8")
    result = app.test_cli_runner().invoke(
        args=[*argv, "--ip", "198.51.100.7", "--file", str(path)]
    )
    assert "NO  origin" in result.output
    assert "add https://evil.example to allowed_origins in [forms.contact]" in (
        result.output
    )
    assert "blocked_network 198.51.100.7 (198.51.100.0/24): drop" in result.output
    assert "refused with 403" in result.output
    assert result.exit_code == 1


def test_remote_layers_say_when_they_are_off(app, tmp_path):
    result = explain(app, tmp_path, GOOD)
    assert "captcha: off (no captcha in the form's spam settings)" in result.output
    assert "rspamd: off (RSPAMD_URL is not set)" in result.output


def test_the_default_form_points_at_the_environment(app, tmp_path):
    body = "email=a@example.net\nmessage=" + " ".join(
        f"https://s{i}.example" for i in range(4)
    )
    result = explain(app, tmp_path, body, form="default")
    assert "raise SPAM_MAX_LINKS to 4 in the environment (SPAM_*)" in result.output


@pytest.mark.parametrize(
    ("raw", "fmt", "pairs"),
    [
        (
            b"a=1&b=two+words&c=%E2%82%AC",
            "auto",
            [("a", "1"), ("b", "two words"), ("c", "€")],
        ),
        (
            b'{"a": "1", "b": ["x", "y"], "c": true}',
            "auto",
            [("a", "1"), ("b", "x, y"), ("c", "yes")],
        ),
        (
            b"# a comment\nname = Ada\n\nmessage=line one\n  line two\nx=a=b\n",
            "auto",
            [("name", "Ada"), ("message", "line one\nline two"), ("x", "a=b")],
        ),
        (b"a=%41", "lines", [("a", "%41")]),
        (b"a=%41", "urlencoded", [("a", "A")]),
    ],
)
def test_the_file_formats(raw, fmt, pairs):
    assert read_post(raw, fmt) == pairs


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nosuch", "--origin", SITE, "--ip", "1.2.3.4"], "no form 'nosuch'"),
        (["contact", "--origin", "nope", "--ip", "1.2.3.4"], "--origin"),
        (["contact", "--origin", SITE, "--ip", "1.2.3"], "not an IP address"),
        (["contact", "--ip", "1.2.3.4"], "--origin"),
    ],
)
def test_bad_arguments_are_usage_errors(app, args, words):
    result = app.test_cli_runner().invoke(args=["explain", *args])
    assert result.exit_code == 2
    assert words in result.output


def test_a_bad_file_is_a_usage_error(app, tmp_path):
    for body in ("{not json", "name\nmessage=x\n"):
        result = explain(app, tmp_path, body)
        assert result.exit_code == 2, result.output


def test_json_file(app, tmp_path):
    body = json.dumps({"email": "ada@example.net", "message": "Hello"})
    result = explain(app, tmp_path, body)
    assert result.exit_code == 0, result.output
