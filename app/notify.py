"""A form's channels beyond the email, as the ledger stores and the worker finds them.

`plan()` turns a form's configuration (formdefs.Notify) and a submission's
validated address into ledger Channels when the submission is stored; the
worker finds the configured channel again by its `target` (`resolve()`): a
digest of the channel, never its URL, which may hold a secret. A channel
removed from the configuration since is not found, and its delivery fails
saying so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from .formdefs import FormDef, Notify, Webhook
from .ledger import Channel

DAY = 86400


def _digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode()).hexdigest()[:32]


def address_digest(address: str) -> str:
    """A digest of the normalised address: the key of once-a-day autoresponses."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


def webhook_label(url: str) -> str:
    """Scheme and host of a webhook URL: what the console shows (no path)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def apprise_label(url: str) -> str:
    """The scheme of an Apprise URL: the rest holds tokens."""
    return url.partition("://")[0][:20] + "://…"


AUTORESPONSE_TARGET = _digest("autoresponse", "visitor")


def plan(form: FormDef, email: str | None, now: float) -> list[Channel]:
    """The channels a submission to `form` gets besides the email.

    The autoresponse only with a validated address (`email`, as the form
    checked it), keyed once per address and UTC day across forms.
    """
    notify = form.notify
    channels = [
        Channel("webhook", _digest("webhook", w.url), webhook_label(w.url))
        for w in notify.webhooks
    ]
    channels += [
        Channel("apprise", _digest("apprise", url), apprise_label(url))
        for url in notify.apprise
    ]
    if notify.autoresponse is not None and email:
        once = f"{int(now // DAY)}:{address_digest(email)}"
        channels.append(
            Channel("autoresponse", AUTORESPONSE_TARGET, "autoresponse", once)
        )
    return channels


@dataclass(frozen=True)
class Resolved:
    """The configured channel behind a delivery's target."""

    kind: str
    webhook: Webhook | None = None
    apprise_url: str | None = None


def resolve(notify: Notify, kind: str, target: str) -> Resolved | None:
    """Find the channel with this target in the form's configuration, or None."""
    if kind == "webhook":
        for webhook in notify.webhooks:
            if _digest("webhook", webhook.url) == target:
                return Resolved(kind, webhook=webhook)
    elif kind == "apprise":
        for url in notify.apprise:
            if _digest("apprise", url) == target:
                return Resolved(kind, apprise_url=url)
    elif kind == "autoresponse" and notify.autoresponse is not None:
        return Resolved(kind)
    return None


def fields_of(stored: str | None) -> list[list[str]]:
    """The stored fields (a JSON list of [name, value] pairs), or none."""
    if not stored:
        return []
    try:
        pairs = json.loads(stored)
    except ValueError:
        return []
    return [[str(name), str(value)] for name, value in pairs]
