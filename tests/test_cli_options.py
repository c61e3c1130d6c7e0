"""Every numeric command-line option refuses what is not a sensible number.

nan, infinities, negatives and huge values get click's usage error (exit 2,
one `Error:` line naming the option) on SQLite and PostgreSQL, and nothing in
the ledger changes; the largest allowed values run without a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import Result
from flask import Flask

from .helpers import deliver, ledger_of, post_form
from .relay import Relay

HUGE = "99999999999999999999"
BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "infinity", "-1", "1e400", HUGE]


@pytest.fixture
def cli_app(make_app: Callable[..., Flask], relay: Relay, database_url: str) -> Flask:
    """An app on the parametrized database with one sent message in it."""
    app = make_app(relay.env(DATABASE_URL=database_url))
    assert post_form(app.test_client()).status_code == 303
    assert deliver(app) == 1
    return app


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def states(app: Flask) -> list[str]:
    return [row.state for row in ledger_of(app).rows(limit=1000)]


def assert_usage_error(result: Result, option: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not a traceback
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert option in errors[0]


# (arguments before the value, the option the error must name)
OUTBOX_OPTIONS = {
    "purge": (["outbox", "purge", "--sent-older-than"], "--sent-older-than"),
    "list": (["outbox", "list", "--limit"], "--limit"),
    "retry": (["outbox", "retry"], "IDS"),
}


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("command", list(OUTBOX_OPTIONS))
def test_outbox_refuses_a_bad_number(cli_app, command, value):
    args, option = OUTBOX_OPTIONS[command]
    if command == "retry" and value.startswith("-"):
        args = [*args, "--"]  # else click reads "-1" as an option

    result = run(cli_app, *args, value)

    assert_usage_error(result, option)
    assert states(cli_app) == ["sent"]  # nothing purged, nothing requeued


@pytest.mark.parametrize("value", ["0", "-0"])
def test_list_limit_zero_is_refused(cli_app, value):
    assert_usage_error(run(cli_app, "outbox", "list", "--limit", value), "--limit")


def test_the_largest_allowed_values_run(cli_app):
    result = run(cli_app, "outbox", "retry", str(2**63 - 1))
    assert result.exit_code == 0, result.output
    assert "requeued 0 messages" in result.output

    result = run(cli_app, "outbox", "list", "--limit", "100000")
    assert result.exit_code == 0, result.output
    assert "sent" in result.output

    result = run(cli_app, "outbox", "purge", "--sent-older-than", "36500")
    assert (result.exit_code, result.output.strip()) == (0, "purged 0 sent messages")
    result = run(cli_app, "outbox", "purge", "--sent-older-than", "0")
    assert (result.exit_code, result.output.strip()) == (0, "purged 1 sent message")


def test_one_past_the_largest_is_refused(cli_app):
    assert_usage_error(run(cli_app, "outbox", "retry", str(2**63)), "IDS")
    assert_usage_error(run(cli_app, "outbox", "list", "--limit", "100001"), "--limit")
    assert_usage_error(
        run(cli_app, "outbox", "purge", "--sent-older-than", "36500.1"),
        "--sent-older-than",
    )


@pytest.fixture
def doctor_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


DOCTOR_BAD = [("--timeout", v) for v in [*BAD_NUMBERS, "0", "601"]] + [
    ("--wait", v) for v in [*BAD_NUMBERS, "86401"]
]


@pytest.mark.parametrize(("option", "value"), DOCTOR_BAD)
def test_doctor_refuses_a_bad_number(doctor_app, option, value):
    assert_usage_error(run(doctor_app, "doctor", option, value), option)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("bad host:xx", "is not an IP address"),
        ("127.0.0.1:xx", "port 'xx'"),
        ("127.0.0.1:0", "port '0'"),
        ("127.0.0.1:65536", "port '65536'"),
        (f"127.0.0.1:{HUGE}", "is not a number from 1 to 65535"),
        ("127.0.0.1:-1", "port '-1'"),
        ("dns.example.com", "is not an IP address"),
        ("[::1]:x", "port 'x'"),
        ("", "is not an IP address"),
    ],
)
def test_doctor_refuses_a_bad_dns_server(doctor_app, value, says):
    result = run(doctor_app, "doctor", "--dns-server", value)
    assert_usage_error(result, "--dns-server")
    assert says in result.output


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53"])
def test_doctor_takes_a_good_dns_server(doctor_app, value):
    with doctor_app.app_context():  # as the flask command pushes one
        result = run(doctor_app, "doctor", "--dns-server", value, "--timeout", "0.5")
    assert result.exit_code in (0, 1), result.output  # ran the checks
    assert "PASS  configuration" in result.output
