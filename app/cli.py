"""Operator commands: `flask --app wsgi worker` and `flask --app wsgi outbox ...`."""

from __future__ import annotations

import math
import os
import signal
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .ledger import STATES, Detail, Ledger
from .ledger.content import load_fields
from .ledger.release import HELD
from .services import services
from .spam import Verdict

outbox = AppGroup("outbox", help="Inspect and manage the delivery queue.")
# Row ids are 64-bit on PostgreSQL and SQLite alike.
MAX_ID = 2**63 - 1
MAX_LIMIT = 100_000
MAX_DAYS = 36_500.0


class Seconds(click.FloatRange):
    """A finite number within a range: click's FloatRange lets nan and inf by."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        """Parse and range-check the value, refusing nan and infinities."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _ledger() -> Ledger:
    return services().ledger


def _age(seconds: float | None) -> str:
    """Format a duration compactly: 42s, 17m, 3h05m, 2d4h."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


@click.command("worker")
def worker_command() -> None:
    """Deliver queued messages until SIGTERM or Ctrl-C (then drain and exit)."""
    niceness = current_app.config["OUTBOX_NICE"]
    if niceness:
        # Delivery can wait a moment; a visitor waiting for "sent" cannot. On
        # a machine that also serves the web tier, a burst of posts gets the
        # CPU first and the queue drains in the time left over.
        os.nice(niceness)
    worker = services().worker()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        # Finish the message in flight, release the rest of the batch, exit.
        worker.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.run()


@outbox.command("status")
def status_command() -> None:
    """Show counts by state and the age of the oldest pending message."""
    stats = _ledger().stats()
    for state in STATES:
        click.echo(f"{state:<8} {stats.counts[state]:>8}")
    click.echo(f"oldest pending: {_age(stats.oldest_pending_age)}")
    others = _ledger().delivery_counts()
    if any(others.values()):
        # Webhooks, Apprise and autoresponses: `outbox deliveries ID` for one.
        click.echo(
            "other channels: "
            + ", ".join(f"{state} {n}" for state, n in others.items() if n)
        )
    relay = stats.relay
    if relay and relay["failing_since"] is not None:
        since = _age(_ledger().clock.now() - relay["failing_since"])
        click.echo(
            f"relay: FAILING for {since} ({relay['last_error_kind']}): "
            f"{relay['last_error']}"
        )
    elif relay:
        click.echo("relay: ok")
    else:
        click.echo("relay: no delivery attempted yet")


@outbox.command("list")
@click.option("--state", type=click.Choice(STATES), help="Only rows in this state.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    default=50,
    show_default=True,
    help="How many rows.",
)
def list_command(state: str | None, limit: int) -> None:
    """List submissions, newest first."""
    ledger = _ledger()
    now = ledger.clock.now()
    rows = ledger.rows(state=state, limit=limit)
    if not rows:
        click.echo("no submissions" + (f" in state {state}" if state else ""))
        return
    # Rows the spam verdict held back have no relay reply: their reasons instead.
    held = state in HELD
    click.echo(
        f"{'ID':>6}  {'RECEIPT':<9}  {'STATE':<7}  {'AGE':>5}  {'TRIES':>5}  "
        f"{'TO':<12}  {'SUBJECT':<30}  {'REASONS' if held else 'LAST REPLY'}"
    )
    for r in rows:
        subject = r.subject if len(r.subject) <= 30 else r.subject[:29] + "…"
        reply = (r.last_reply or "").replace("\n", " ")
        if held:
            reply = reason_codes(r.verdict)
        click.echo(
            f"{r.id:>6}  {r.receipt:<9}  {r.state:<7}  {_age(now - r.created_at):>5}  "
            f"{r.attempts:>5}  {r.recipient_alias[:12]:<12}  {subject:<30}  "
            f"{reply[:60]}"
        )


def reason_codes(stored: str | None) -> str:
    """The stored verdict's reason codes, comma-separated ("-" for none)."""
    verdict = Verdict.from_json(stored)
    return ",".join(verdict.codes) if verdict and verdict.codes else "-"


def _resolve(key: str) -> str | None:
    """The receipt a row ID (digits, as `list` shows) or a receipt names."""
    key = key.strip()
    if key.isascii() and key.isdigit():
        number = int(key)
        return _ledger().receipt_of(number) if 1 <= number <= MAX_ID else None
    if len(key) > 16:
        return None
    found = _ledger().row(key.upper())
    return None if found is None else found.receipt


def _named(key: str, receipt: str) -> str:
    """The row as the operator named it, with its receipt when named by ID."""
    return receipt if key.strip().upper() == receipt else f"{key} ({receipt})"


def _refuse(message: str) -> NoReturn:
    """Say why on stderr and exit 1 (no traceback, no "Error:" prefix)."""
    click.echo(message, err=True)
    raise SystemExit(1)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@outbox.command("show")
@click.argument("key", metavar="ID")
def show_command(key: str) -> None:
    """Show one submission (row ID or receipt): fields, state, verdict, timeline."""
    receipt = _resolve(key)
    detail = _ledger().detail(receipt) if receipt else None
    if detail is None:
        _refuse(f"no submission {key}")
    for line in describe(detail):
        click.echo(line)


def describe(detail: Detail) -> list[str]:
    """The lines `outbox show` prints for a submission."""
    r = detail.row
    lines = [
        f"receipt     {r.receipt}",
        f"id          {r.id}",
        f"form        {r.form_id}",
        f"state       {'erased' if detail.erased else r.state}",
        f"to          {r.recipient_alias}",
        f"subject     {r.subject or '-'}",
        f"received    {_when(r.created_at)}",
        f"from        {' '.join(x for x in (r.name, r.email) if x) or '-'}",
        f"client ip   {r.client_ip or '-'}",
        f"origin      {r.origin or '-'}",
        f"user agent  {r.user_agent or '-'}",
        f"attempts    {r.attempts}",
        f"last reply  {(r.last_reply or '-').replace(chr(10), ' ')}",
    ]
    if detail.erased:
        lines.append(f"erased      {_when(r.erased_at)}")
    fields = detail.fields if detail.fields is not None else load_fields(r.fields)
    if fields:
        lines.append("fields:")
        lines += [f"  {name}: {value}" for name, value in fields]
    verdict = Verdict.from_json(r.verdict)
    if verdict is None:
        lines.append("verdict     - (stored without one)")
    else:
        lines.append(f"verdict     {verdict.name} (score {verdict.score:g})")
        if verdict.reasons:
            lines.append(
                f"  {'LAYER':<10} {'RULE':<22} {'VALUE':<24} {'THRESHOLD':<20} SCORE"
            )
        for reason in verdict.reasons:
            weight = f"{reason.score:g}"
            if reason.action != "score":
                weight += f" ({reason.action})"
            lines.append(
                f"  {reason.layer:<10} {reason.rule:<22} {reason.value or '-':<24} "
                f"{reason.threshold or '-':<20} {weight}"
            )
    if detail.attempts:
        lines.append("timeline:")
        for attempt in detail.attempts:
            kind = f" ({attempt.error_kind})" if attempt.error_kind else ""
            reply = (attempt.reply or "").replace("\n", " ")
            lines.append(f"  {_when(attempt.at)}  {attempt.outcome}{kind}  {reply}")
    return lines


@outbox.command("release")
@click.argument("keys", nargs=-1, required=True, metavar="ID...")
def release_command(keys: tuple[str, ...]) -> None:
    """Deliver spam or dropped submissions after all (row IDs or receipts).

    Releases nothing unless every ID names a submission in state spam or
    dropped that still holds its message.
    """
    ledger = _ledger()
    receipts: list[str] = []
    problems: list[str] = []
    for key in keys:
        receipt = _resolve(key)
        detail = ledger.detail(receipt) if receipt else None
        found = detail.row if detail else None
        if detail is None:
            problems.append(f"{key}: no such submission")
        elif found.state not in HELD:
            problems.append(
                f"{_named(key, found.receipt)} is {found.state}, "
                "only spam or dropped submissions can be released"
            )
        elif not detail.raw:
            problems.append(
                f"{_named(key, found.receipt)} was dropped without its message, "
                "there is nothing to deliver"
            )
        else:
            receipts.append(found.receipt)
    if problems:
        _refuse("nothing released:\n  " + "\n  ".join(problems))
    receipts = list(dict.fromkeys(receipts))
    # Who, as far as the shell knows: the timeline says who overruled a verdict.
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    by = "outbox release" + (f" (user {user[:64]})" if user else "")
    count = services().release(receipts, by=by)
    for receipt in receipts:
        shown = ledger.row(receipt)
        if shown is not None and shown.state not in HELD:
            click.echo(f"released {receipt} ({shown.form_id}: {shown.subject})")
        else:  # changed by someone else meanwhile
            click.echo(f"not released {receipt}", err=True)
    click.echo(f"released {count} message{'s' if count != 1 else ''}")
    if count < len(receipts):
        raise SystemExit(1)


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=click.IntRange(1, MAX_ID))
@click.option("--all-failed", is_flag=True, help="Requeue every failed message.")
def retry_command(ids: tuple[int, ...], all_failed: bool) -> None:
    """Move failed messages back to the queue, due now.

    Their failed or disabled deliveries on other channels (webhooks, Apprise,
    autoresponse) too; a disabled webhook endpoint is enabled again.
    """
    if bool(ids) == all_failed:
        raise click.UsageError("give message IDs or --all-failed (not both)")
    ledger = _ledger()
    count = ledger.requeue(None if all_failed else ids)
    others = ledger.retry_deliveries(
        ids=None if all_failed else list(ids), failed_only=True
    )
    click.echo(f"requeued {count} message{'s' if count != 1 else ''}")
    if others:
        click.echo(f"requeued {others} deliver{'ies' if others != 1 else 'y'}")
    if ids and count < len(ids):
        click.echo("(only failed messages can be retried)", err=True)


@outbox.command("deliveries")
@click.argument("submission")
def deliveries_command(submission: str) -> None:
    """Show a submission's deliveries beyond the email (ID or receipt)."""
    ledger = _ledger()
    receipt = (
        ledger.receipt_of(int(submission))
        if submission.isdigit() and int(submission) <= MAX_ID
        else submission.upper()
    )
    if receipt is None or ledger.row(receipt) is None:
        raise click.ClickException(f"no submission {submission}")
    rows = ledger.deliveries(receipt)
    if not rows:
        click.echo(f"{receipt}: email only, no other deliveries")
        return
    now = ledger.clock.now()
    click.echo(
        f"{'ID':>6}  {'KIND':<12}  {'STATE':<8}  {'TRIES':>5}  {'NEXT':>5}  "
        f"{'TARGET':<30}  LAST ERROR"
    )
    for d in rows:
        due = _age(d.next_attempt_at - now) if d.state == "pending" else "-"
        error = (d.disabled_reason or d.last_error or "").replace("\n", " ")
        click.echo(
            f"{d.id:>6}  {d.kind:<12}  {d.state:<8}  {d.attempts:>5}  {due:>5}  "
            f"{d.label[:30]:<30}  {error[:60]}"
        )


@outbox.command("purge")
@click.option(
    "--sent-older-than",
    "days",
    type=Seconds(0, MAX_DAYS),
    required=True,
    help="Delete sent messages older than this many days.",
)
def purge_command(days: float) -> None:
    """Delete delivered messages past their retention (pending/failed are kept)."""
    count = _ledger().purge_sent(days * 86400)
    click.echo(f"purged {count} sent message{'s' if count != 1 else ''}")


def init_app(app: Flask) -> None:
    """Register the commands."""
    from .doctor import doctor_command
    from .explain import explain_command
    from .tokens import tokens
    from .users import users

    app.cli.add_command(worker_command)
    app.cli.add_command(outbox)
    app.cli.add_command(doctor_command)
    app.cli.add_command(explain_command)
    app.cli.add_command(users)
    app.cli.add_command(tokens)
