"""`flask --app wsgi tokens ...`: add, list and revoke tokens for /api/v1.

`tokens add NAME` prints the token once, as the last line of its output, so
a script can take it with `tail -n 1`; only its SHA-256 is stored, and no
other command or log line shows it again.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import click
from flask.cli import AppGroup

from .ledger.tokens import TokenExists, TokenStore
from .services import services

tokens = AppGroup("tokens", help="Manage tokens for the submissions API (/api/v1).")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def token_store() -> TokenStore:
    """The API tokens, on the app's ledger database and clock."""
    ledger = services().ledger
    return TokenStore(ledger.engine, ledger.clock)


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise click.BadParameter(
            "use 1 to 64 letters, digits, dots, dashes or underscores, "
            "starting with a letter or digit",
            param_hint="NAME",
        )
    return value


@tokens.command("add")
@click.argument("name")
@click.option("--write", is_flag=True, help="Also allow retry and delete.")
def add_command(name: str, write: bool) -> None:
    """Make a token (read-only unless --write); print it once, as the last line."""
    name = _name(name)
    try:
        record, token = token_store().add(name, can_write=write)
    except TokenExists:
        raise click.ClickException(
            f"a token named {name} exists (revoked tokens keep their names); "
            "choose another name"
        ) from None
    click.echo(f"added {record.scope} token {name}; it is shown only this once:")
    click.echo(token)


@tokens.command("list")
def list_command() -> None:
    """List the tokens' names, scopes and times (never the tokens)."""
    found = token_store().all()
    if not found:
        click.echo("no tokens: the API answers 401 to everyone")
        return
    click.echo(
        f"{'NAME':<24}  {'SCOPE':<5}  {'CREATED':<16}  {'LAST USED':<16}  REVOKED"
    )
    for t in found:
        click.echo(
            f"{t.name:<24}  {t.scope:<5}  {_when(t.created_at):<16}  "
            f"{_when(t.last_used_at):<16}  {_when(t.revoked_at, '-')}"
        )


@tokens.command("revoke")
@click.argument("name")
def revoke_command(name: str) -> None:
    """Revoke a token: it is refused (401) from the next request on."""
    if not token_store().revoke(name):
        raise click.ClickException(f"no live token named {name}")
    click.echo(f"revoked {name}")


def _when(epoch: float | None, none: str = "never") -> str:
    if epoch is None:
        return none
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
