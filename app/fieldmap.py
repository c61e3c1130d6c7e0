"""Read the fields a site posted: drop-in names from Formspree, FormSubmit and
the classic PHP script, mapped to our meaning. Pure: no Flask, no I/O.

| meaning            | field names (case-insensitive, first non-empty wins)   |
| ------------------ | ------------------------------------------------------- |
| Reply-To           | _replyto, email, replyto                                |
| Reply-To name      | name                                                    |
| subject            | _subject, subject, title                                |
| redirect           | _next, redirect, redirectTo                             |
| recipient          | toemail, to, recipient (an alias or configured address) |
| copies             | _cc, cc, _bcc, bcc (only the form's own recipients)     |
| honeypot           | _gotcha, _honey, botcheck, honeypot, the form's own     |
| main text          | content, message, body                                  |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from email_validator import EmailNotValidError

from config import Recipient

from .compose import header_text_problem, reply_address
from .errors import Rejected
from .formdefs import FormDef

REPLY_TO = ("_replyto", "email", "replyto")
NAME = ("name",)
SUBJECT = ("_subject", "subject", "title")
REDIRECT = ("_next", "redirect", "redirectto")
RECIPIENT = ("toemail", "to", "recipient")
CC = ("_cc", "cc", "_bcc", "bcc")
HONEYPOTS = ("_gotcha", "_honey", "botcheck", "honeypot")
MESSAGE = ("content", "message", "body")
# Not shown in the email: they steer Formpost, they are not the visitor's words.
_STEERING = set(REDIRECT + RECIPIENT + CC + HONEYPOTS)

# The same limits as the hosted form's (forms.py takes them from here).
MAX_FIELDS = 50
MAX_NAME = 100
MAX_VALUE = 20_000
MAX_SUBJECT = 200


@dataclass
class Interpreted:
    """What a post means, ready to compose."""

    recipient: str
    fields: list[tuple[str, str]]
    subject: str = ""
    reply_to: str = ""
    name: str = ""
    message: str = ""
    redirect: str = ""
    cc: list[str] = field(default_factory=list)
    ignored_cc: list[str] = field(default_factory=list)
    honeypot: bool = False


def collect(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Join repeated names (checkbox groups) with ", ", keeping first positions."""
    order: list[str] = []
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if name not in values:
            order.append(name)
            values[name] = []
        values[name].append(value)
    return [(name, ", ".join(values[name])) for name in order]


def interpret(
    pairs: list[tuple[str, str]],
    form: FormDef,
    recipients: Mapping[str, Recipient],
) -> Interpreted:
    """Map posted fields to their meaning; raise Rejected (400/422) if unusable."""
    if len(pairs) > MAX_FIELDS:
        raise Rejected(400, {"_form": f"Too many fields (at most {MAX_FIELDS})."})
    lowered: dict[str, str] = {}
    for name, value in pairs:
        if not name or len(name) > MAX_NAME or header_text_problem(name):
            raise Rejected(400, {"_form": "A field has an unusable name."})
        if len(value) > MAX_VALUE:
            raise Rejected(400, {name: f"Keep this under {MAX_VALUE:,} characters."})
        lowered.setdefault(name.lower(), value)

    def first(names: tuple[str, ...]) -> tuple[str, str]:
        for key in names:
            value = lowered.get(key, "").strip()
            if value:
                return key, value
        return "", ""

    honeypot_names = set(HONEYPOTS) | {form.honeypot.lower()}
    if any(lowered.get(n, "").strip() for n in honeypot_names):
        # A bot: answered exactly like success by the caller, nothing stored.
        return Interpreted(
            recipient=form.recipients[0],
            fields=[],
            redirect=first(REDIRECT)[1],
            honeypot=True,
        )

    # Header-bound fields with control characters are malformed (400); a
    # well-formed but unusable address is unprocessable (422).
    malformed: dict[str, str] = {}
    invalid: dict[str, str] = {}
    one_line = "Use one line of plain text, at most {} characters."
    subject_key, subject = first(SUBJECT)
    if subject and (header_text_problem(subject) or len(subject) > MAX_SUBJECT):
        malformed[subject_key] = one_line.format(MAX_SUBJECT)
    name_key, name = first(NAME)
    if name and (header_text_problem(name) or len(name) > MAX_NAME):
        malformed[name_key] = one_line.format(MAX_NAME)
    reply_key, reply_to = first(REPLY_TO)
    if reply_to and header_text_problem(reply_to):
        malformed[reply_key] = "Use a single email address on one line."
    elif reply_to:
        try:
            reply_to = reply_address(reply_to)
        except EmailNotValidError:
            invalid[reply_key] = "Enter a valid email address."
    if malformed:
        raise Rejected(400, malformed)

    by_address = {
        str(recipients[a].address.addr_spec).lower(): a for a in form.recipients
    }

    def allowed(value: str) -> str | None:
        value = value.strip().lower()
        if value in form.recipients:
            return value
        return by_address.get(value)

    recipient_key, wanted = first(RECIPIENT)
    recipient = form.recipients[0]
    if wanted:
        chosen = allowed(wanted)
        if chosen is None:
            raise Rejected(400, {recipient_key: "Unknown recipient."})
        recipient = chosen

    cc: list[str] = []
    ignored: list[str] = []
    for key in CC:
        for item in lowered.get(key, "").split(","):
            if not item.strip():
                continue
            alias = allowed(item)
            if alias is None:
                ignored.append(item.strip())
            elif alias != recipient and alias not in cc:
                cc.append(alias)

    shown = [
        (n, v)
        for n, v in pairs
        if not n.startswith("_")
        and n.lower() not in _STEERING
        and n.lower() not in honeypot_names
    ]
    for n in form.required:
        if not lowered.get(n.lower(), "").strip():
            invalid[n] = "This field is required."
    if not any(v.strip() for _, v in shown):
        invalid["_form"] = "The form is empty."
    if invalid:
        raise Rejected(422, invalid)

    return Interpreted(
        recipient=recipient,
        fields=shown,
        subject=subject,
        reply_to=reply_to,
        name=name,
        message=first(MESSAGE)[1],
        redirect=first(REDIRECT)[1],
        cc=cc,
        ignored_cc=ignored,
    )
