"""Deliver the channels beyond the email: webhooks, Apprise, autoresponses.

Runs beside the email's delivery loop in every worker (outbox.Worker starts
it on its own thread): claims due deliveries under a lease, sends each
batch concurrently (one slow endpoint does not hold back the others), and
records each outcome with the email's backoff and retry window. A worker
killed mid-send loses nothing: the lease runs out and another worker sends
the delivery again, with the same webhook-id.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from typing import Any

from . import metrics
from .clock import Clock
from .compose import compose_autoresponse, new_message_id
from .errors import DeliveryError, PermanentError, StorageError, TransientError
from .formdefs import FormDef
from .i18n import catalogue, mail_locale
from .ledger import ClaimedDelivery, Ledger
from .message import UnsafeHeaderError
from .notify import fields_of, resolve
from .outbox import EXPIRED, OutboxSettings, retry_delay
from .transport import Transport, send_one
from .webhooks import Gone, build, send

log = logging.getLogger("formpost.notify")
# Apprise logs the URLs it sends to, which hold tokens, and so does urllib3
# (under requests, which only Apprise uses here) at DEBUG: their lines are
# kept out of ours, and ours say what happened without the URL.
for _name in ("apprise", "urllib3"):
    logging.getLogger(_name).setLevel(logging.CRITICAL + 1)

BATCH = 8  # deliveries claimed at once, sent concurrently
# Where a hosted-page submission finds its channels: the default form's.
FORM_OF = {"hosted": "default"}
CHAT_MESSAGE_MAX = 1500


@dataclass(frozen=True)
class NotifySettings:
    """WEBHOOK_* and PUBLIC_URL, as parsed by config.py."""

    webhook_timeout: float = 10.0
    allow_private: bool = False
    public_url: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NotifySettings:
        """Take the values from a parsed config."""
        return cls(
            webhook_timeout=config["WEBHOOK_TIMEOUT"],
            allow_private=config["WEBHOOK_ALLOW_PRIVATE"],
            public_url=config["PUBLIC_URL"],
        )


class _Failed(Exception):
    """A delivery that cannot be made as configured: dead-letter it."""


class Notifier:
    """Claims and sends deliveries; any number may run, on any number of machines."""

    def __init__(
        self,
        ledger: Ledger,
        transport: Transport,
        forms: Mapping[str, FormDef],
        mail_from: Address,
        outbox: OutboxSettings,
        settings: NotifySettings,
        clock: Clock,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.ledger = ledger
        self.transport = transport
        self.forms = forms
        self.mail_from = mail_from
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self._pool = ThreadPoolExecutor(BATCH, thread_name_prefix="notify")

    def run(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set."""
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # noqa: BLE001 - keep the loop alive, say why
                log.exception("notifications: delivery round failed")
                worked = 0
            if not worked:
                self.clock.wait(self.outbox.poll_interval, stop)
        self._pool.shutdown(wait=True)

    def run_once(self) -> int:
        """Claim one batch, send it concurrently; return how many were claimed."""
        rows = self.ledger.claim_deliveries(BATCH, self.outbox.lease)
        for _ in self._pool.map(self.deliver, rows):
            pass
        return len(rows)

    def deliver(self, row: ClaimedDelivery) -> None:
        """Attempt one delivery and record what became of it.

        The receiver's answer is kept in the ledger (the console shows it);
        the log says only its status, since a receiver may echo the fields.
        """
        summary = None
        try:
            values = self._attempt(row)
            if values["state"] == "disabled":
                summary = "endpoint disabled (410 Gone earlier)"
        except _Failed as exc:
            values = {"state": "failed", "last_error": str(exc)}
        except Gone as exc:
            reason = f"endpoint disabled: {exc.reply}"
            self.ledger.disable_target(row.target, reason)
            values = {"state": "disabled", "last_error": reason}
            summary = "endpoint disabled: HTTP 410"
        except PermanentError as exc:
            values = {"state": "failed", "last_error": f"{exc.kind}: {exc.reply}"}
        except DeliveryError as exc:
            values = self._retry_or_expire(row, f"{exc.kind}: {exc.reply}")
            if exc.code is not None and row.kind == "webhook":
                summary = f"{exc.kind}: HTTP {exc.code}"
        except StorageError as exc:
            # Left `sending`: the lease runs out and it is attempted again.
            log.error("delivery %d: could not read what to send: %s", row.id, exc)
            return
        outcome = values["state"]
        if summary is None:
            summary = values.get("last_error")
        try:
            held = self.ledger.settle_delivery(row, values)
        except StorageError as exc:
            # The lease runs out and the delivery is attempted again.
            log.error("delivery %d: outcome not recorded: %s", row.id, exc)
            return
        if not held:
            log.warning("delivery %d: outcome not recorded, lease lost", row.id)
            return
        metrics.notification(row.kind, outcome)
        level = logging.INFO if outcome in ("sent", "pending") else logging.WARNING
        log.log(
            level,
            "delivery %d %s %s attempt=%d: %s%s",
            row.id,
            row.kind,
            row.label,
            row.attempts,
            "delivered" if outcome == "sent" else outcome,
            f" ({summary})" if summary else "",
            extra={"delivery": row.id, "channel": row.kind, "outcome": outcome},
        )

    def _retry_or_expire(self, row: ClaimedDelivery, error: str) -> dict[str, Any]:
        s = self.outbox
        age = self.clock.now() - row.queued_at
        if age >= s.give_up_after:
            return {"state": "failed", "last_error": f"{EXPIRED}: {error}"}
        delay = retry_delay(row.attempts, s.retry_base, s.retry_max, self.rand)
        return {
            "state": "pending",
            "next_attempt_at": self.clock.now() + delay,
            "last_error": error,
        }

    def _attempt(self, row: ClaimedDelivery) -> dict[str, Any]:
        source = self.ledger.delivery_source(row.submission_id)
        if source is None or source.erased_at is not None:
            raise _Failed("the submission was erased before delivery")
        form = self.forms.get(FORM_OF.get(source.form_id, source.form_id))
        channel = resolve(form.notify, row.kind, row.target) if form else None
        if channel is None:
            raise _Failed("this channel is no longer in the form's configuration")
        if channel.webhook is not None:
            reason = self.ledger.disabled_reason(row.target)
            if reason is not None:
                return {"state": "disabled", "last_error": reason}
            data = {
                "receipt": source.receipt,
                "form": source.form_id,
                "created_at": datetime.fromtimestamp(
                    source.created_at, UTC
                ).isoformat(),
                "fields": fields_of(source.fields),
            }
            request = build(
                channel.webhook.url,
                channel.webhook.secret,
                row.webhook_id,
                self.clock.now(),
                data,
            )
            send(request, self.settings.webhook_timeout, self.settings.allow_private)
            return self._sent()
        if channel.apprise_url is not None:
            self._apprise(channel.apprise_url, source, form)
            return self._sent()
        return self._autoresponse(source, form)

    def _sent(self) -> dict[str, Any]:
        return {"state": "sent", "sent_at": self.clock.now(), "last_error": None}

    def _apprise(self, url: str, source: Any, form: FormDef | None) -> None:
        import apprise

        title, body = chat_text(
            source,
            self.settings.public_url,
            bool(form and form.notify.full_message),
            # The owner's words follow the form's language, as its email's do.
            mail_locale(form.language if form else None),
        )
        notifier = apprise.Apprise()
        if not notifier.add(url):
            raise _Failed("Apprise does not accept this URL")
        try:
            ok = notifier.notify(body=body, title=title)
        except Exception as exc:  # noqa: BLE001 - a plugin's own error: retry
            raise TransientError(f"apprise raised {type(exc).__name__}") from exc
        if not ok:
            raise TransientError("the service did not accept the notification")

    def _autoresponse(self, source: Any, form: FormDef | None) -> dict[str, Any]:
        reply = form.notify.autoresponse if form else None
        if reply is None or not source.email:
            raise _Failed("no autoresponse configured, or no checked address")
        try:
            envelope = compose_autoresponse(
                to=source.email,
                subject=reply.subject,
                body=reply.body,
                mail_from=self.mail_from,
                message_id=new_message_id(self.mail_from),
                date=datetime.now(UTC),
            )
        except UnsafeHeaderError as exc:
            raise _Failed(f"cannot compose the autoresponse: {exc}") from exc
        send_one(self.transport, envelope)
        return self._sent()


def chat_text(
    source: Any, public_url: str | None, full: bool, locale: str = "en"
) -> tuple[str, str]:
    """The short chat message: subject, sender, console link (and all, if asked).

    Its words are in `locale` (the form's language); what was sent is as sent.
    """
    words = catalogue(locale)
    sender = source.name or ""
    if source.email:
        sender = f"{sender} <{source.email}>" if sender else source.email
    lines = [
        # TRANSLATORS: first line of a chat notification (Apprise).
        words.gettext("New submission on %(form)s: %(subject)s")
        % {"form": source.form_id, "subject": source.subject}
    ]
    if sender:
        lines.append(words.gettext("From: %(sender)s") % {"sender": sender})
    path = f"/admin/s/{source.receipt}"
    lines.append(
        f"{public_url.rstrip('/')}{path}"
        if public_url
        else words.gettext("Receipt %(receipt)s (%(path)s)")
        % {"receipt": source.receipt, "path": path}
    )
    if full:
        fields = fields_of(source.fields)
        text = "\n".join(f"{name}: {value}" for name, value in fields)
        lines += ["", text or (source.message or "")]
    body = "\n".join(lines)
    if len(body) > CHAT_MESSAGE_MAX:
        body = body[: CHAT_MESSAGE_MAX - 1] + "…"
    return source.subject or words.gettext("New submission"), body
