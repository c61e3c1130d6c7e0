"""The services one Formpost app runs on, built once, found through `services()`.

create_app builds a `Services` and keeps it in `app.extensions["formpost"]`;
views, the CLI, health, metrics and the doctor reach it through `services()`,
as flaskr's views reach the database through `get_db()`. The delivery
worker is built from it in one place, `Services.worker()`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any

from flask import current_app

from config import Recipient

from .clamd import ClamdSettings
from .clock import Clock
from .formdefs import FormDef
from .ledger import Channel, Filters, Ledger, Limits
from .ledger.release import HELD
from .maildir import MaildirTransport, default_maildir
from .notifier import FORM_OF, Notifier, NotifySettings
from .notify import plan
from .outbox import OutboxSettings, Worker
from .owners import Owners
from .signing import Signer, SigningTransport
from .smtp import SMTPSettings, SMTPTransport
from .spam.settings import SpamSettings
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
    # SPAM_*: the hosted form's spam settings, and what FORMS_FILE overrides.
    spam_defaults: SpamSettings = field(default_factory=SpamSettings)

    def spam_settings(self, form_id: str) -> SpamSettings:
        """Return the spam settings of a form (the hosted form: the default's)."""
        # As channels(): the hosted page is the default form, even where
        # FORMS_FILE names a form "hosted".
        form = self.forms.get(FORM_OF.get(form_id, form_id))
        return form.spam if form is not None else self.spam_defaults

    notify: NotifySettings = NotifySettings()
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
        """Build a delivery worker over this ledger and transport.

        It delivers the other channels too (webhooks, Apprise, autoresponses),
        on a thread of its own.
        """
        return Worker(
            ledger=self.ledger,
            transport=self.transport,
            settings=self.outbox,
            clock=self.clock,
            rand=rand,
            notifier=self.notifier(rand),
        )

    def notifier(self, rand: Callable[[], float] = random.random) -> Notifier:
        """Build the loop that delivers webhooks, Apprise and autoresponses."""
        return Notifier(
            ledger=self.ledger,
            transport=self.transport,
            forms=self.forms,
            mail_from=self.mail_from,
            outbox=self.outbox,
            settings=self.notify,
            clock=self.clock,
            rand=rand,
        )

    def channels(self, form_id: str, email: str | None) -> list[Channel]:
        """The deliveries beyond the email a submission to this form gets.

        `email` is the address the form validated (the autoresponse goes only
        there). The hosted page uses the default form's channels.
        """
        form = self.forms.get(FORM_OF.get(form_id, form_id))
        return plan(form, email, self.clock.now()) if form is not None else []

    def create_deliveries(self, receipt: str) -> int:
        """Create the deliveries of a stored submission, e.g. one just released
        from quarantine; idempotent, nothing for spam/dropped/erased rows.
        """
        row = self.ledger.row(receipt)
        if row is None:
            return 0
        return self.ledger.create_deliveries(
            receipt, self.channels(row.form_id, row.email)
        )

    def release(self, receipts: Sequence[str], by: str | None = None) -> int:
        """Deliver held (spam or dropped) submissions after all; return how many.

        Each released one also gets its other channels (webhooks, chat), as
        an accepted post does; not the autoresponse: the visitor wrote long
        ago, and an address a spam verdict held back is not answered.
        """
        held = [
            receipt
            for receipt in receipts
            if (row := self.ledger.row(receipt)) is not None and row.state in HELD
        ]
        done = self.ledger.release_spam(receipts, by=by)
        for receipt in held:
            row = self.ledger.row(receipt)
            if row is not None and row.state == "pending":
                self.ledger.create_deliveries(receipt, self.channels(row.form_id, None))
        return done

    def release_matching(self, filters: Filters, by: str | None = None) -> int:
        """Release every held submission matching `filters`; return how many."""
        receipts = [r.receipt for r in self.ledger.iterate(filters) if r.state in HELD]
        return self.release(receipts, by=by)


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
