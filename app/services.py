"""The services one Formpost app runs on, built once, found through `services()`.

create_app builds a `Services` and keeps it in `app.extensions["formpost"]`;
views, the CLI, health, metrics and the doctor reach it through `services()`,
as flaskr's views reach the database through `get_db()`. The delivery
worker is built from it in one place, `Services.worker()`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from typing import Any

from flask import current_app

from config import Recipient

from .clamd import ClamdSettings
from .clock import Clock
from .formdefs import FormDef
from .ledger import Ledger, Limits
from .maildir import MaildirTransport, default_maildir
from .outbox import OutboxSettings, Worker
from .owners import Owners
from .signing import Signer, SigningTransport
from .smtp import SMTPSettings, SMTPTransport
from .transport import Transport

EXTENSION = "formpost"


@dataclass(frozen=True)
class Services:
    """Everything the request path, the CLI and the workers share."""

    ledger: Ledger
    transport: Transport
    outbox: OutboxSettings
    forms: Mapping[str, FormDef]
    mail_from: Address
    recipients: Mapping[str, Recipient]
    recipient_daily_quota: int
    backlog_limit: int
    owners: Owners
    dedupe_window: float = 0.0
    # Scan posted files with clamd (CLAMD_SOCKET / CLAMD_HOST); None: no scan.
    clamd: ClamdSettings | None = None

    @property
    def clock(self) -> Clock:
        """The clock the ledger (and so every worker) runs on."""
        return self.ledger.clock

    def limits(self, rate: tuple[tuple[int, int], ...]) -> Limits:
        """The limits a visitor's post must stay within, with this form's rate."""
        return Limits(
            rate=rate,
            recipient_daily=self.recipient_daily_quota,
            backlog=self.backlog_limit,
            dedupe_window=self.dedupe_window,
        )

    def worker(self, rand: Callable[[], float] = random.random) -> Worker:
        """Build a delivery worker over this ledger and transport."""
        return Worker(
            ledger=self.ledger,
            transport=self.transport,
            settings=self.outbox,
            clock=self.clock,
            rand=rand,
        )


def services() -> Services:
    """Return the current app's services (inside an app context)."""
    return current_app.extensions[EXTENSION]


def make_transport(config: Mapping[str, Any], instance_path: str) -> Transport:
    """Build the SMTP transport, or the Maildir one when no SMTP_HOST is set.

    With DKIM configured, every message is signed on its way out.
    """
    transport: Transport
    if config.get("SMTP_HOST"):
        transport = SMTPTransport(SMTPSettings.from_config(config))
    else:
        path = config.get("MAILDIR_PATH") or default_maildir(instance_path)
        transport = MaildirTransport(path)
    if config.get("DKIM_DOMAIN"):
        signer = Signer(
            config["DKIM_DOMAIN"], config["DKIM_SELECTOR"], config["DKIM_PRIVATE_KEY"]
        )
        transport = SigningTransport(transport, signer)
    return transport
