"""The one accept path. Every way in ends here: parse, accept, respond.

The hosted form, `/f/<form>` and the doctor's send test each parse their
input into a `Post`, then call `accept()`, which composes the message,
checks the limits, stores it durably and counts and logs it; or `decoy()`,
for a post that is answered like success and never stored (the honeypot).
A new gate (a spam verdict, attachments, more channels) is added here, once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import g, has_request_context

from . import metrics
from .clamd import scan_files
from .compose import Submission, compose, new_message_id
from .ledger import Content, Limits, new_receipt
from .message import normalize_newlines
from .services import Services
from .spam import decide
from .spam.settings import SpamSettings
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
    # Received files, in temporary files the caller closes after accept().
    files: tuple[Upload, ...] = ()

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


def accept(services: Services, post: Post) -> str:
    """Compose, check the limits and commit the post; return its receipt.

    A repeat (the same form token or Idempotency-Key, or the same content
    from the same client within DEDUPE_WINDOW) gets the first post's
    receipt and stores nothing. Only a committed post gets a receipt. Raise
    LimitExceeded when a limit refuses it and StorageError when nothing
    could be stored; handlers.py turns both into answers.
    """
    recipients = services.recipients
    mail_from = services.mail_from
    message = compose(
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
    )
    state, verdict = _scanned(services, post)
    receipt = services.ledger.enqueue(
        message,
        state=state,
        verdict=verdict,
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
        files=post.files,
    )
    metrics.submission(post.form_id, "accepted")
    if has_request_context():
        # The request's one log line (logs.py) carries the receipt.
        g.receipt = receipt
    else:
        log.info("stored receipt=%s form=%s", receipt, post.form_id)
    return receipt


def _scanned(services: Services, post: Post) -> tuple[str, str | None]:
    """Scan the post's files with clamd, if set: the row's state and verdict.

    A virus quarantines the post (state `spam`, the signature in the
    verdict's reasons); an outage follows the form's spam `fail` setting.
    Until the spam gate (app/spam) stores verdicts itself, this is the one
    place a verdict is made on the accept path.
    """
    if not post.files or services.clamd is None:
        return "pending", None
    form = services.forms.get(post.form_id)
    # FormDef gains its SpamSettings with the spam gate; until then, defaults.
    spam = getattr(form, "spam", None) or SpamSettings()
    reasons = scan_files(services.clamd, post.files, spam.fail)
    if not reasons:
        return "pending", None
    verdict = decide(reasons, spam.quarantine_at, spam.drop_at)
    if verdict.name != "accept":
        log.warning(
            "form %s: quarantined by clamd: %s",
            post.form_id,
            ", ".join(f"{r.rule}={r.value}" for r in reasons),
        )
        metrics.submission(post.form_id, "rejected", "virus")
        return "spam", verdict.to_json()
    return "pending", verdict.to_json()


def decoy(form_id: str, reason: str) -> str:
    """Answer a post that is dropped as if it were accepted; store nothing.

    The receipt points at nothing: a bot learns nothing from the answer.
    """
    log.info("form %s: %s, nothing stored", form_id, reason)
    metrics.submission(form_id, "rejected", reason)
    return new_receipt()
