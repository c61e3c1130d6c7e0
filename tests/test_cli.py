"""The operator commands (`flask outbox ...`), run for real on both databases.

Rows enter the ledger the way production puts them there (the hosted form, or
Ledger.enqueue with a composed Envelope) and change state only through a
worker talking to the real test relay. Time is a fake clock where ages matter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from app.compose import Submission, compose, new_message_id

from .helpers import (
    deliver,
    ledger_of,
    post_form,
    spam_verdict,
    store_verdict,
    use_fake_clock,
)
from .relay import Relay

REPO = Path(__file__).resolve().parents[1]
DAY = 86400.0
NO_SUCH_USER = "550 5.1.1 No such user"
LONG_SUBJECT = "Quarterly maintenance schedule for the Analytical Engine"


@pytest.fixture
def cli_app(make_app: Callable[..., Flask], relay: Relay, database_url: str) -> Flask:
    """An app on the parametrized database, delivering to the test relay."""
    return make_app(relay.env(DATABASE_URL=database_url))


def queue(app: Flask, subject: str = "Hello", alias: str = "sales") -> str:
    """Compose and enqueue a message as the form would; return its receipt."""
    cfg = app.config
    mail_from = cfg["MAIL_FROM"]
    msg = compose(
        Submission(
            recipient=cfg["MAIL_RECIPIENTS"][alias].address,
            subject=subject,
            message="A question about engines.",
        ),
        mail_from=mail_from,
        message_id=new_message_id(mail_from),
        date=datetime.now(UTC),
    )
    return ledger_of(app).enqueue(msg, form_id="hosted", alias=alias, subject=subject)


def row(app: Flask, receipt: str):
    """Return the ledger row with this receipt."""
    (found,) = [r for r in ledger_of(app).rows(limit=1000) if r.receipt == receipt]
    return found


def states(app: Flask) -> dict[str, str]:
    """Map every receipt in the ledger to its state."""
    return {r.receipt: r.state for r in ledger_of(app).rows(limit=1000)}


def run(app: Flask, *args: str) -> Result:
    """Invoke `flask outbox ARGS` in-process and insist the output is readable."""
    result = app.test_cli_runner().invoke(args=["outbox", *args])
    assert_readable(result.output)
    if result.exit_code == 0:
        assert result.exception is None
    return result


def assert_readable(output: str) -> None:
    """No tracebacks, Python reprs or stray Nones in what an operator reads."""
    for marker in ("Traceback", "Error:", "Row(", "None", "{'", "datetime("):
        if marker == "Error:" and output.startswith("Usage:"):
            continue  # click's own usage error ("Error: give message IDs ...")
        assert marker not in output, output


def count_line(output: str, state: str) -> int:
    match = re.search(rf"^{state}\s+(\d+)$", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def list_line(output: str, receipt: str) -> str:
    (line,) = [line for line in output.splitlines() if receipt in line]
    return line


def make_failed(app: Flask, relay: Relay, subject: str = "Hello") -> str:
    """Queue a message the relay refuses with a 5xx: it ends up failed."""
    receipt = queue(app, subject)
    relay.reply_next("RCPT", NO_SUCH_USER)
    assert deliver(app) == 1
    assert row(app, receipt).state == "failed"
    return receipt


def make_sent(app: Flask, subject: str = "Hello") -> str:
    receipt = queue(app, subject)
    assert deliver(app) == 1
    assert row(app, receipt).state == "sent"
    return receipt


# -- status --------------------------------------------------------------------


def test_status_on_an_empty_ledger(cli_app):
    result = run(cli_app, "status")
    assert result.exit_code == 0
    for state in ("pending", "sending", "sent", "failed"):
        assert count_line(result.output, state) == 0
    assert "oldest pending: -" in result.output
    assert "relay: no delivery attempted yet" in result.output


def test_status_counts_every_state_and_the_oldest_pending_age(cli_app, relay):
    """One row per state; a worker holds the `sending` one under its lease."""
    clock = use_fake_clock(cli_app)
    make_failed(cli_app, relay)
    make_sent(cli_app)
    queue(cli_app)  # claimed below: sending
    clock.advance(10)
    queue(cli_app)  # stays pending
    held = ledger_of(cli_app).claim(batch=1, lease=300)
    assert len(held) == 1
    clock.advance(125)

    result = run(cli_app, "status")

    assert result.exit_code == 0
    assert count_line(result.output, "pending") == 1
    assert count_line(result.output, "sending") == 1
    assert count_line(result.output, "sent") == 1
    assert count_line(result.output, "failed") == 1
    # The oldest undelivered row is the one in flight, queued 135 s ago.
    assert "oldest pending: 2m" in result.output
    assert "relay: ok" in result.output


def test_status_reports_a_failing_relay_with_the_error_kind(cli_app, relay):
    receipt = queue(cli_app)
    relay.stop()
    assert deliver(cli_app) == 1
    pending = row(cli_app, receipt)
    assert (pending.state, pending.attempts) == ("pending", 1)

    result = run(cli_app, "status")

    assert result.exit_code == 0
    assert count_line(result.output, "pending") == 1
    (line,) = [x for x in result.output.splitlines() if x.startswith("relay:")]
    assert line.startswith("relay: FAILING for ")
    assert "(transient)" in line
    assert "network error during connect" in line


def test_status_relay_failure_age_follows_the_ledger_clock(cli_app, relay):
    clock = use_fake_clock(cli_app)
    queue(cli_app)
    relay.stop()
    deliver(cli_app)
    clock.advance(2 * 3600 + 5 * 60)

    result = run(cli_app, "status")

    assert "relay: FAILING for 2h05m (transient)" in result.output


# -- list ----------------------------------------------------------------------


def test_list_on_an_empty_ledger_says_so(cli_app):
    result = run(cli_app, "list")
    assert result.exit_code == 0
    assert result.output.strip() == "no submissions"

    filtered = run(cli_app, "list", "--state", "failed")
    assert filtered.output.strip() == "no submissions in state failed"


def test_list_shows_each_row_newest_first(cli_app, relay):
    clock = use_fake_clock(cli_app)
    client = cli_app.test_client()
    assert post_form(client, subject=LONG_SUBJECT).status_code == 303
    with client.session_transaction() as session:
        failed = session["receipt"]
    relay.reply_next("RCPT", NO_SUCH_USER)
    assert deliver(cli_app) == 1
    clock.advance(3 * 3600 + 5 * 60)
    pending = queue(cli_app, "Short one", alias="support")
    clock.advance(42)

    result = run(cli_app, "list")

    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "ID", "RECEIPT", "STATE", "AGE", "TRIES", "TO", "SUBJECT", "LAST", "REPLY"
    ]  # fmt: skip
    assert len(lines) == 3
    assert pending in lines[1] and failed in lines[2]  # newest first

    fields = list_line(result.output, failed).split()
    assert fields[:6] == [
        str(row(cli_app, failed).id), failed, "failed", "3h05m", "1", "sales"
    ]  # fmt: skip
    line = list_line(result.output, failed)
    assert LONG_SUBJECT[:29] + "…" in line
    assert LONG_SUBJECT not in line
    assert NO_SUCH_USER in line

    fields = list_line(result.output, pending).split()
    assert fields[:6] == [
        str(row(cli_app, pending).id), pending, "pending", "42s", "0", "support"
    ]  # fmt: skip
    assert list_line(result.output, pending).rstrip().endswith("Short one")


def test_list_state_filter(cli_app, relay):
    failed = make_failed(cli_app, relay)
    sent = make_sent(cli_app)
    pending = queue(cli_app)

    only_failed = run(cli_app, "list", "--state", "failed").output
    assert failed in only_failed
    assert sent not in only_failed and pending not in only_failed

    only_sent = run(cli_app, "list", "--state", "sent").output
    assert sent in only_sent
    assert failed not in only_sent and pending not in only_sent
    assert "250" in list_line(only_sent, sent)

    assert (
        "no submissions in state sending"
        in run(cli_app, "list", "--state", "sending").output
    )


def test_list_rejects_an_unknown_state(cli_app):
    result = run(cli_app, "list", "--state", "lost")
    assert result.exit_code == 2
    assert "Usage:" in result.output


# -- spam: list, show, release -----------------------------------------------------


def make_spam(app: Flask, subject: str = "Cheap SEO", state: str = "spam") -> str:
    """Queue a message and hold it back as the spam verdict would."""
    receipt = queue(app, subject)
    store_verdict(ledger_of(app), receipt, state=state)
    return receipt


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_list_spam_shows_the_reason_codes(cli_app, relay, state):
    held = make_spam(cli_app, state=state)
    pending = queue(cli_app)
    output = run(cli_app, "list", "--state", state).output
    assert "REASONS" in output.splitlines()[0]
    assert list_line(output, held).endswith("links,altcha_missing")
    assert pending not in output


def test_show_prints_the_row_and_every_reason(cli_app, relay):
    receipt = make_spam(cli_app)
    by_id = run(cli_app, "show", str(row(cli_app, receipt).id))
    by_receipt = run(cli_app, "show", receipt.lower())
    assert by_id.exit_code == by_receipt.exit_code == 0
    assert by_id.output == by_receipt.output
    out = by_id.output
    assert re.search(rf"^receipt\s+{receipt}$", out, re.MULTILINE)
    assert re.search(r"^state\s+spam$", out, re.MULTILINE)
    assert re.search(r"^subject\s+Cheap SEO$", out, re.MULTILINE)
    assert re.search(r"^verdict\s+quarantine \(score 7.5\)$", out, re.MULTILINE)
    for reason in spam_verdict().reasons:
        line = list_line(out, f" {reason.rule} ")
        assert line.split() == [
            reason.layer,
            reason.rule,
            *reason.value.split(),
            *reason.threshold.split(),
            f"{reason.score:g}",
        ]


def test_show_of_a_row_without_a_verdict_says_so(cli_app, relay):
    receipt = make_sent(cli_app)
    out = run(cli_app, "show", receipt).output
    assert re.search(r"^verdict\s+- \(stored without one\)$", out, re.MULTILINE)
    assert re.search(r"^state\s+sent$", out, re.MULTILINE)
    assert " sent  250" in out  # the timeline


@pytest.mark.parametrize("key", ["999999", "ZZZZ-ZZZZ", "x" * 40])
def test_show_of_an_unknown_id_fails_clearly(cli_app, key):
    result = run(cli_app, "show", key)
    assert result.exit_code == 1
    assert f"no submission {key}" in result.output


@pytest.mark.parametrize("state", ["spam", "dropped"])
def test_release_then_a_worker_delivers_it_to_the_relay(
    cli_app, relay, state, monkeypatch
):
    monkeypatch.setenv("USER", "ada")
    receipt = make_spam(cli_app, state=state)
    assert deliver(cli_app) == 0
    result = run(cli_app, "release", receipt)
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        f"released {receipt} (hosted: Cheap SEO)",
        "released 1 message",
    ]
    assert deliver(cli_app) == 1
    assert row(cli_app, receipt).state == "sent"
    (received,) = relay.received
    assert received.message["Subject"] == "Cheap SEO"
    timeline = run(cli_app, "show", receipt).output
    assert "released  released by outbox release (user ada)" in timeline


def test_release_takes_several_ids_and_receipts(cli_app, relay):
    first, second = make_spam(cli_app), make_spam(cli_app, state="dropped")
    result = run(cli_app, "release", str(row(cli_app, first).id), second)
    assert result.exit_code == 0
    assert "released 2 messages" in result.output
    assert states(cli_app)[first] == states(cli_app)[second] == "pending"


@pytest.mark.parametrize("other", ["sent", "pending", "failed", "unknown"])
def test_release_refuses_rows_not_held_and_releases_nothing(cli_app, relay, other):
    held = make_spam(cli_app)
    if other == "sent":
        key = make_sent(cli_app)
    elif other == "failed":
        key = make_failed(cli_app, relay)
    elif other == "pending":
        key = queue(cli_app)
    else:
        key = "ZZZZ-ZZZZ"
    before = states(cli_app)
    result = run(cli_app, "release", held, key)
    assert result.exit_code == 1
    assert "nothing released" in result.output
    if other == "unknown":
        assert f"{key}: no such submission" in result.output
    else:
        assert f"{key} is {other}, only spam or dropped" in result.output
        row_id = row(cli_app, key).id
        by_id = run(cli_app, "release", str(row_id))
        assert by_id.exit_code == 1
        assert f"{row_id} ({key}) is {other}" in by_id.output
    assert states(cli_app) == before
    sent_before = len(relay.received)
    deliver(cli_app)
    assert row(cli_app, held).state == "spam"
    assert len(relay.received) == sent_before + (other == "pending")


def test_release_refuses_a_dropped_tombstone_without_its_message(cli_app, relay):
    receipt = queue(cli_app)
    store_verdict(ledger_of(cli_app), receipt, state="dropped", keep_message=False)
    result = run(cli_app, "release", receipt)
    assert result.exit_code == 1
    assert "dropped without its message" in result.output
    assert row(cli_app, receipt).state == "dropped"


def test_release_needs_an_id(cli_app):
    result = run(cli_app, "release")
    assert result.exit_code == 2
    assert "Usage:" in result.output


# -- retry ---------------------------------------------------------------------


def test_retry_an_id_requeues_it_and_the_next_delivery_sends_it(cli_app, relay):
    receipt = make_failed(cli_app, relay)
    assert relay.received == []
    failed_row = row(cli_app, receipt)

    result = run(cli_app, "retry", str(failed_row.id))

    assert result.exit_code == 0
    assert result.output.strip() == "requeued 1 message"
    assert row(cli_app, receipt).state == "pending"
    assert deliver(cli_app) == 1
    sent_row = row(cli_app, receipt)
    assert sent_row.state == "sent"
    assert sent_row.attempts == failed_row.attempts + 1 == 2
    assert len(relay.received) == 1
    assert relay.received[0].message["Message-ID"] == sent_row.message_id


def test_retry_all_failed_requeues_only_failed_rows(cli_app, relay):
    failed = [make_failed(cli_app, relay) for _ in range(2)]
    sent = make_sent(cli_app)
    before = len(relay.received)

    result = run(cli_app, "retry", "--all-failed")

    assert result.exit_code == 0
    assert result.output.strip() == "requeued 2 messages"
    assert states(cli_app) == {failed[0]: "pending", failed[1]: "pending", sent: "sent"}
    assert deliver(cli_app) == 2
    assert set(states(cli_app).values()) == {"sent"}
    assert len(relay.received) == before + 2


@pytest.mark.parametrize("args", [[], ["1", "--all-failed"]], ids=["none", "both"])
def test_retry_needs_ids_or_all_failed_but_not_both(cli_app, relay, args):
    receipt = make_failed(cli_app, relay)
    args = [str(row(cli_app, receipt).id) if a == "1" else a for a in args]

    result = run(cli_app, "retry", *args)

    assert result.exit_code == 2
    assert "Usage:" in result.output
    assert "--all-failed" in result.output
    assert row(cli_app, receipt).state == "failed"


def test_retry_of_a_row_that_is_not_failed_requeues_nothing(cli_app, relay):
    sent = make_sent(cli_app)
    pending = queue(cli_app)
    ids = [str(row(cli_app, r).id) for r in (sent, pending)]

    result = run(cli_app, "retry", *ids, "99999")

    assert result.exit_code == 0
    assert result.stdout.strip() == "requeued 0 messages"
    assert "only failed messages can be retried" in result.stderr
    assert states(cli_app) == {sent: "sent", pending: "pending"}


# -- purge ---------------------------------------------------------------------


def test_purge_deletes_only_sent_rows_older_than_the_cutoff(cli_app, relay):
    """Old failed and pending rows survive any purge; sent rows go by sent_at."""
    clock = use_fake_clock(cli_app)
    relay.refuse_recipient("help@example.org", "451 4.2.2 Mailbox full")
    old_failed = make_failed(cli_app, relay)
    old_sent = queue(cli_app)
    old_pending = queue(cli_app, alias="support")  # deferred on every attempt
    assert deliver(cli_app) == 2
    clock.advance(4 * DAY)  # less than the 5-day give-up age
    new_sent = queue(cli_app)
    assert deliver(cli_app) == 2  # the old pending one is tried (and deferred) again
    clock.advance(0.5 * DAY)
    assert states(cli_app) == {
        old_failed: "failed",
        old_sent: "sent",
        old_pending: "pending",
        new_sent: "sent",
    }

    result = run(cli_app, "purge", "--sent-older-than", "3")
    assert result.exit_code == 0
    assert result.output.strip() == "purged 1 sent message"
    assert set(states(cli_app)) == {old_failed, old_pending, new_sent}

    result = run(cli_app, "purge", "--sent-older-than", "1")
    assert result.output.strip() == "purged 0 sent messages"

    result = run(cli_app, "purge", "--sent-older-than", "0.25")
    assert result.output.strip() == "purged 1 sent message"
    assert states(cli_app) == {old_failed: "failed", old_pending: "pending"}

    result = run(cli_app, "purge", "--sent-older-than", "0")
    assert result.output.strip() == "purged 0 sent messages"
    assert states(cli_app) == {old_failed: "failed", old_pending: "pending"}


@pytest.mark.parametrize("args", [[], ["--sent-older-than", "-1"]])
def test_purge_needs_a_non_negative_age(cli_app, relay, args):
    sent = make_sent(cli_app)
    result = run(cli_app, "purge", *args)
    assert result.exit_code == 2
    assert "--sent-older-than" in result.output
    assert sent in states(cli_app)


# -- the real command line -----------------------------------------------------


@pytest.mark.slow
def test_flask_outbox_status_as_a_subprocess(make_app, tmp_path):
    """`flask --app wsgi outbox status` from the repo root, dev mode, no relay."""
    instance = tmp_path / "instance"
    url = f"sqlite:///{tmp_path}/cli.db"
    app = make_app({"DATABASE_URL": url, "INSTANCE_PATH": str(instance)})
    queue(app, alias="demo")
    queue(app, alias="demo")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(
            ("SMTP_", "MAIL_", "DATABASE_", "SECRET_KEY", "FORMPOST_", "FLASK_")
        )
    }
    env.update(
        DATABASE_URL=url, INSTANCE_PATH=str(instance), FORMPOST_ENV_FILE=os.devnull
    )

    proc = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "outbox", "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    assert count_line(proc.stdout, "pending") == 2
    for state in ("sending", "sent", "failed"):
        assert count_line(proc.stdout, state) == 0
    assert "relay: no delivery attempted yet" in proc.stdout
    assert_readable(proc.stdout)
    assert "Traceback" not in proc.stderr
