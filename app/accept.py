"""The one accept path. Every way in ends here: parse, accept, respond.

The hosted form, `/f/<form>` and the doctor's send test each parse their
input into a `Post`, then call `accept()`, which composes the message, runs
the spam gate (app/spam/gate.py), checks the limits, stores it durably with
its verdict and counts and logs it. Every verdict stores one row (pending,
`spam` or `dropped`), so the visitor's answer and its timing
are the same for all three. `decoy()` is left for a post that cannot even
be composed (the hosted form's honeypot filled on an invalid form).
A new gate (attachments, more channels) is added here, once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import g, has_request_context
from flask_babel import force_locale, gettext

from . import metrics
from .clamd import scan_files
from .compose import MailText, Submission, compose, new_message_id
from .languages import DEFAULT_LOCALE, html_tag
from .ledger import Channel, Content, Limits, new_receipt
from .message import Envelope, normalize_newlines
from .services import Services
from .spam import ACCEPT, SpamContext, Verdict, decide
from .spam.gate import body_digest, evaluate
from .uploads import Upload

log = logging.getLogger("formpost.accept")


@dataclass(frozen=True)
class Post:
    """A parsed, validated submission, and where it may go.

    `recipient` and `cc` are aliases from the configuration, never addresses
    a visitor typed. `limits` None means no visitor sent it (the doctor's
    test), so no rate, quota or backlog applies.
    """

    form_id: str
    recipient: str
    subject: str
    # The locale of the email's labels: the form's, never the visitor's.
    language: str = DEFAULT_LOCALE
    message: str = ""
    name: str = ""
    email: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    cc: tuple[str, ...] = ()
    dedupe_key: str | None = None
    client_ip: str | None = None
    limits: Limits | None = None
    origin: str | None = None
    user_agent: str | None = None
    # What the spam gate sees beyond the fields above: everything posted
    # (steering fields and tokens included), whether the honeypot was
    # filled, and the hosted form's fill time. `scored` False: no visitor
    # sent it (the doctor's test), so no gate runs.
    pairs: tuple[tuple[str, str], ...] = ()
    honeypot_filled: bool = False
    fill_seconds: float | None = None
    scored: bool = True
    # Deliveries beyond the email (webhooks, Apprise, autoresponse), planned
    # by the caller from the form's configuration (Services.channels).
    channels: tuple[Channel, ...] = ()
    # Received files, in temporary files the caller closes after accept().
    files: tuple[Upload, ...] = ()

    def spam_context(self, message_bytes: bytes = b"") -> SpamContext:
        """Return what the spam layers see of this post."""
        return SpamContext(
            form_id=self.form_id,
            pairs=self.pairs or self.content().fields,
            subject=self.subject,
            name=self.name,
            email=self.email,
            message=self.message,
            client_ip=self.client_ip,
            origin=self.origin,
            user_agent=self.user_agent,
            honeypot_filled=self.honeypot_filled,
            fill_seconds=self.fill_seconds,
            message_bytes=message_bytes,
        )

    def content(self) -> Content:
        """Return what the visitor sent, as the ledger stores it beside the message.

        The fields in submitted order: a /f/ post's own (steering fields are
        already out), or the hosted form's four.
        """
        fields = self.fields or (
            ("name", self.name),
            ("email", self.email),
            ("subject", self.subject),
            ("message", self.message),
        )
        return Content(
            fields=fields,
            name=self.name or None,
            email=self.email or None,
            message=self.message or None,
            origin=self.origin,
            user_agent=self.user_agent,
        )


def _norm(value: str) -> str:
    # What a person sees as the same text: line endings, Unicode form and
    # surrounding blanks do not make a post different.
    return unicodedata.normalize("NFC", normalize_newlines(value)).strip()


def content_fingerprint(post: Post) -> str | None:
    """Return a digest of what the post says, from whom, to which form.

    Two posts with the same digest within DEDUPE_WINDOW are one submission:
    the same visitor sending the same text again (back and send, a reload).
    None when the client is unknown: then different people could match.
    """
    if post.client_ip is None:
        return None
    content = [
        "v1",
        post.form_id,
        post.client_ip,
        post.recipient,
        sorted(post.cc),
        _norm(post.subject),
        _norm(post.name),
        _norm(post.email).lower(),
        _norm(post.message),
        sorted((name, _norm(value)) for name, value in post.fields),
    ]
    if post.files:
        # The same text with other files is another submission.
        content.append(sorted(upload.sha256 for upload in post.files))
    encoded = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def compose_post(services: Services, post: Post) -> Envelope:
    """Compose the message the post would be delivered as."""
    recipients = services.recipients
    mail_from = services.mail_from
    return compose(
        Submission(
            recipient=recipients[post.recipient].address,
            subject=post.subject,
            message=post.message,
            name=post.name,
            email=post.email,
            fields=post.fields,
            cc=tuple(recipients[alias].address for alias in post.cc),
        ),
        mail_from=mail_from,
        message_id=new_message_id(mail_from),
        date=datetime.now(UTC),
        words=mail_text(post.language),
    )


def accept(services: Services, post: Post) -> str:
    """Compose, judge, check the limits and commit the post; return its receipt.

    The spam verdict picks the stored state (pending, spam, dropped); the
    limits and dedupe apply to all three alike, in the storing
    transaction. A repeat (the same form token or Idempotency-Key, or the
    same content from the same client within DEDUPE_WINDOW) gets the first
    post's receipt and stores nothing. Only a committed post gets a
    receipt. Raise LimitExceeded when a limit refuses it and StorageError
    when nothing could be stored; handlers.py turns both into answers.
    """
    message = compose_post(services, post)
    verdict = judge(services, post, message.data)
    digest = body_digest(post.message) if post.message.strip() else None
    receipt = services.ledger.enqueue(
        message,
        form_id=post.form_id,
        alias=post.recipient,
        subject=post.subject,
        dedupe_key=post.dedupe_key,
        client_ip=post.client_ip,
        limits=post.limits,
        fingerprint=content_fingerprint(post)
        if post.limits is not None and post.limits.dedupe_window
        else None,
        content=post.content(),
        verdict=verdict.name,
        verdict_json=verdict.to_json() if post.scored else None,
        body_digest=digest,
        channels=post.channels,
        files=post.files,
    )
    metrics.submission(post.form_id, OUTCOMES[verdict.name])
    if post.scored:
        metrics.verdict(
            post.form_id, verdict.name, [(r.layer, r.rule) for r in verdict.reasons]
        )
    codes = ",".join(verdict.codes) or None
    if has_request_context():
        # The request's one log line (logs.py) carries the receipt, the
        # verdict and its reason codes; never what the visitor wrote.
        g.receipt = receipt
        g.verdict = verdict.name
        g.reasons = codes
    else:
        log.info(
            "stored receipt=%s form=%s verdict=%s reasons=%s",
            receipt,
            post.form_id,
            verdict.name,
            codes or "",
        )
    return receipt


def mail_text(locale: str) -> MailText:
    """Return the email's labels in `locale` (English outside an app context)."""
    with force_locale(locale):
        return MailText(
            lang=html_tag(locale),
            # TRANSLATORS: above the message in the email's HTML part.
            sent_by_html=gettext("From {sender}"),
            # TRANSLATORS: first line of the email's text part.
            sent_by_text=gettext("From: {sender}"),
        )


# The submissions counter's outcome per verdict (metrics.py).
OUTCOMES = {"accept": "accepted", "quarantine": "quarantined", "drop": "dropped"}


def judge(services: Services, post: Post, message_bytes: bytes = b"") -> Verdict:
    """Run the form's spam layers over the post (none for the doctor's test)."""
    if not post.scored:
        return ACCEPT
    settings = services.spam_settings(post.form_id)
    verdict = evaluate(post.spam_context(message_bytes), settings, services)
    if not post.files or services.clamd is None or verdict.name == "drop":
        return verdict
    # Files are scanned last: a virus quarantines the post with the
    # signature as its reason; an outage follows the form's `fail`.
    found = scan_files(services.clamd, post.files, settings.fail)
    if not found:
        return verdict
    return decide((*verdict.reasons, *found), settings.quarantine_at, settings.drop_at)


def decoy(form_id: str, reason: str) -> str:
    """Answer a post that is dropped as if it were accepted; store nothing.

    The receipt points at nothing: a bot learns nothing from the answer.
    """
    log.info("form %s: %s, nothing stored", form_id, reason)
    metrics.submission(form_id, "rejected", reason)
    return new_receipt()
