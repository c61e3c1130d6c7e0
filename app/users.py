"""`flask --app wsgi users ...`: add, list, remove owners and set their passwords.

Passwords are asked twice at a prompt that does not echo, or read from a file
(`--password-file`, for scripts and secrets managers; its final newline is
not part of the password). They never appear in the command line, the
output or the logs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from flask.cli import AppGroup

from .ledger.owners import OwnerExists
from .owners import MIN_PASSWORD, AccountError, Owners, normalise_email
from .services import services

users = AppGroup("users", help="Manage the console's owner accounts.")

password_file = click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the password from this file instead of asking.",
)


def _owners() -> Owners:
    return services().owners


def _password(path: Path | None) -> str:
    if path is None:
        return click.prompt(
            f"Password (at least {MIN_PASSWORD} characters)",
            hide_input=True,
            confirmation_prompt="Repeat the password",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read the password file: {exc}") from None
    return text.removesuffix("\n").removesuffix("\r")


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except AccountError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None


@users.command("add")
@click.argument("email")
@password_file
def add_command(email: str, password_file: Path | None) -> None:
    """Create an owner who can log in to the console at /admin."""
    email = _email(email)
    try:
        _owners().add(email, _password(password_file))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    except OwnerExists:
        raise click.ClickException(
            f"{email} is already an owner; use `users set-password {email}`"
        ) from None
    click.echo(f"added {email}")


@users.command("list")
def list_command() -> None:
    """List the owners with when they were added and last logged in."""
    owners = _owners().all()
    if not owners:
        click.echo("no owners: the console is off until one is added")
        return
    click.echo(f"{'EMAIL':<40}  {'ADDED':<16}  LAST LOG-IN")
    for owner in owners:
        click.echo(
            f"{owner.email:<40}  {_when(owner.created_at):<16}  "
            f"{_when(owner.last_login_at)}"
        )


@users.command("remove")
@click.argument("email")
def remove_command(email: str) -> None:
    """Delete an owner; their sessions end at once."""
    email = _email(email)
    if not _owners().remove(email):
        raise click.ClickException(f"no owner {email}")
    click.echo(f"removed {email}")


@users.command("set-password")
@click.argument("email")
@password_file
def set_password_command(email: str, password_file: Path | None) -> None:
    """Set a new password; every session of this owner ends."""
    email = _email(email)
    try:
        found = _owners().set_password(email, _password(password_file))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException(f"no owner {email}")
    click.echo(f"password set for {email}")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
