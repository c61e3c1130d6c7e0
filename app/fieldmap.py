"""Read the fields a site posted: drop-in names from Formspree, Web3Forms,
FormSubmit and the classic PHP script, mapped to our meaning. Pure: no Flask,
no I/O.

| meaning            | field names (case-insensitive, first non-empty wins)   |
| ------------------ | ------------------------------------------------------- |
| Reply-To           | _replyto, email, replyto                                |
| Reply-To name      | name                                                    |
| subject            | _subject, subject, title                                |
| redirect           | _next, redirect, redirectTo                             |
| recipient          | toemail, to, recipient (an alias or configured address) |
| copies             | _cc, cc, _bcc, bcc, ccemail (only the form's recipients)|
| honeypot           | _gotcha, _honey, botcheck, honeypot, the form's own     |
| main text          | content, message, body                                  |
| ignored (IGNORED)  | access_key, from_name, _template, _captcha, ...         |
| proof of work      | altcha (checked by spam/altcha.py, never in the email)  |

Steering fields never go into the email body; `email`, `name`, the main text
and a `title` that did not become the subject are the visitor's words and do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from email_validator import EmailNotValidError
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from config import Recipient

from .compose import header_text_problem, reply_address
from .errors import Rejected
from .formdefs import FormDef
from .i18n import number

REPLY_TO = ("_replyto", "email", "replyto")
NAME = ("name",)
SUBJECT = ("_subject", "subject", "title")
REDIRECT = ("_next", "redirect", "redirectto")
RECIPIENT = ("toemail", "to", "recipient")
CC = ("_cc", "cc", "_bcc", "bcc", "ccemail")
HONEYPOTS = ("_gotcha", "_honey", "botcheck", "honeypot")
MESSAGE = ("content", "message", "body")
# Other services' steering fields that Formpost recognises and leaves out,
# and why (the README's table says the same).
IGNORED = {
    "access_key": "Web3Forms' account key: the form's address (/f/<form>) "
    "already says where the mail goes",
    "from_name": "the sender is always MAIL_FROM, set by the operator",
    "_template": "every email has the same plain-text and HTML layout",
    "_captcha": "captchas are chosen per form in FORMS_FILE, not by the page",
    "_autoresponse": "Formpost never mails an address a visitor typed",
    "_webhook": "Formpost never calls a URL a visitor supplied",
    "_blacklist": "spam filtering is not set by the posting page",
    "_url": "the posting page is known from its Origin",
    "_language": "the language comes from ?lang=, Accept-Language or the "
    "form's `language` in FORMS_FILE",
    "_format": "every email has a plain-text and an HTML part",
}
# Tokens the captcha widgets add (checked by app/spam/captcha.py).
CAPTCHA_TOKENS = ("cf-turnstile-response", "h-captcha-response", "g-recaptcha-response")
# The proof of work the widget adds (checked by app/spam/altcha.py).
PROOF_OF_WORK = ("altcha",)
# Not shown in the email: they steer Formpost, they are not the visitor's words.
_STEERING = (
    set(REDIRECT + RECIPIENT + CC + HONEYPOTS + ("_subject", "subject", "replyto"))
    | set(IGNORED)
    | set(CAPTCHA_TOKENS)
    | set(PROOF_OF_WORK)
)

# Written for people; the hosted form says the same (forms.py). Lazy: each
# use reads it in the request's language (str()); gettext outside a request
# is English, so this module still needs no Flask.
EMAIL_EXAMPLE = _l("Enter an email address like name@example.com.")
EMAIL_ONE_LINE = _l("Enter one email address, on one line, like name@example.com.")

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


def _lenient(
    pairs: list[tuple[str, str]],
    form: FormDef,
    first: Callable[[tuple[str, ...]], tuple[str, str]],
    honeypot_names: set[str],
) -> Interpreted:
    # A honeypot post, read without refusing anything: header-bound values
    # that would be refused are left out rather than answered with an error.
    subject_key, subject = first(SUBJECT)
    name = first(NAME)[1]
    reply_to = first(REPLY_TO)[1]
    if header_text_problem(subject) or len(subject) > MAX_SUBJECT:
        subject = ""
    if header_text_problem(name) or len(name) > MAX_NAME:
        name = ""
    try:
        reply_to = reply_address(reply_to) if reply_to else ""
    except EmailNotValidError:
        reply_to = ""
    if header_text_problem(reply_to):
        reply_to = ""
    hidden = _STEERING | honeypot_names | {subject_key}
    return Interpreted(
        recipient=form.recipients[0],
        fields=[
            (n, v)
            for n, v in pairs
            if not n.startswith("_") and n.lower() not in hidden
        ],
        subject=subject,
        reply_to=reply_to,
        name=name,
        message=first(MESSAGE)[1],
        redirect=first(REDIRECT)[1],
        honeypot=True,
    )


def interpret(
    pairs: list[tuple[str, str]],
    form: FormDef,
    recipients: Mapping[str, Recipient],
) -> Interpreted:
    """Map posted fields to their meaning; raise Rejected (400/422) if unusable."""
    if len(pairs) > MAX_FIELDS:
        raise Rejected(
            400,
            {
                "_form": gettext(
                    "This form takes at most %(most)s fields; the post had %(count)s.",
                    most=number(MAX_FIELDS),
                    count=number(len(pairs)),
                )
            },
            codes={"_form": "TOO_MANY_FIELDS"},
        )
    lowered: dict[str, str] = {}
    for name, value in pairs:
        if not name or len(name) > MAX_NAME or header_text_problem(name):
            raise Rejected(
                400,
                {
                    "_form": gettext(
                        "A field name is empty, longer than %(most)s characters "
                        "or holds control characters.",
                        most=number(MAX_NAME),
                    )
                },
                codes={"_form": "BAD_FIELD_NAME"},
            )
        if len(value) > MAX_VALUE:
            raise Rejected(
                400,
                {
                    name: gettext(
                        "Keep %(field)s under %(most)s characters.",
                        field=name,
                        most=number(MAX_VALUE),
                    )
                },
                codes={name: "TOO_LONG"},
            )
        lowered.setdefault(name.lower(), value)

    def first(names: tuple[str, ...]) -> tuple[str, str]:
        for key in names:
            value = lowered.get(key, "").strip()
            if value:
                return key, value
        return "", ""

    honeypot_names = set(HONEYPOTS) | {form.honeypot.lower()}
    if any(lowered.get(n, "").strip() for n in honeypot_names):
        # Most likely a bot: the spam gate drops it and it is answered
        # exactly like success, so nothing here may refuse it. What is
        # usable is kept, for an owner to release a false drop (a browser's
        # autofill can fill a hidden field).
        return _lenient(pairs, form, first, honeypot_names)

    # Header-bound fields with control characters are malformed (400); a
    # well-formed but unusable address is unprocessable (422).
    malformed: dict[str, str] = {}
    invalid: dict[str, str] = {}
    codes: dict[str, str] = {}

    def one_line(key: str, most: int) -> None:
        malformed[key] = gettext(
            "Write %(field)s on one line, at most %(most)s characters.",
            field=key,
            most=number(most),
        )
        codes[key] = "ONE_LINE"

    subject_key, subject = first(SUBJECT)
    if subject and (header_text_problem(subject) or len(subject) > MAX_SUBJECT):
        one_line(subject_key, MAX_SUBJECT)
    name_key, name = first(NAME)
    if name and (header_text_problem(name) or len(name) > MAX_NAME):
        one_line(name_key, MAX_NAME)
    reply_key, reply_to = first(REPLY_TO)
    if reply_to and header_text_problem(reply_to):
        malformed[reply_key] = str(EMAIL_ONE_LINE)
        codes[reply_key] = "TYPE_EMAIL"
    elif reply_to:
        try:
            reply_to = reply_address(reply_to)
        except EmailNotValidError:
            invalid[reply_key] = str(EMAIL_EXAMPLE)
            codes[reply_key] = "TYPE_EMAIL"
    if malformed:
        raise Rejected(400, malformed, codes=codes)

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
            raise Rejected(
                400,
                {
                    recipient_key: gettext(
                        "Unknown recipient: choose one of this form's recipients."
                    )
                },
                codes={recipient_key: "UNKNOWN_RECIPIENT"},
            )
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

    hidden = _STEERING | honeypot_names | {subject_key}
    shown = [
        (n, v) for n, v in pairs if not n.startswith("_") and n.lower() not in hidden
    ]
    for n in form.required:
        if not lowered.get(n.lower(), "").strip():
            invalid[n] = gettext(
                "Please fill in %(field)s: this form requires it.", field=n
            )
            codes[n] = "REQUIRED_FIELD_MISSING"
    if not any(v.strip() for _, v in shown):
        invalid["_form"] = gettext(
            "The form arrived empty. Please fill it in and send it again."
        )
        codes["_form"] = "EMPTY"
    if invalid:
        raise Rejected(422, invalid, codes=codes)

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
