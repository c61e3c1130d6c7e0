"""Operator commands: `flask --app wsgi worker` and `flask --app wsgi outbox ...`."""

from __future__ import annotations

import math
import os
import signal
from types import FrameType
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .ledger import STATES, Ledger
from .services import services

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
    click.echo(
        f"{'ID':>6}  {'RECEIPT':<9}  {'STATE':<7}  {'AGE':>5}  {'TRIES':>5}  "
        f"{'TO':<12}  {'SUBJECT':<30}  LAST REPLY"
    )
    for r in rows:
        subject = r.subject if len(r.subject) <= 30 else r.subject[:29] + "…"
        reply = (r.last_reply or "").replace("\n", " ")
        click.echo(
            f"{r.id:>6}  {r.receipt:<9}  {r.state:<7}  {_age(now - r.created_at):>5}  "
            f"{r.attempts:>5}  {r.recipient_alias[:12]:<12}  {subject:<30}  "
            f"{reply[:60]}"
        )


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
    from .tokens import tokens
    from .users import users

    app.cli.add_command(worker_command)
    app.cli.add_command(outbox)
    app.cli.add_command(doctor_command)
    app.cli.add_command(users)
    app.cli.add_command(tokens)
