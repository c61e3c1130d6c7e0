"""Build the email for a submission. Pure: no Flask, no I/O, no clock of its own."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from jinja2 import Environment, select_autoescape

from .transport import Envelope

# Autoescape is what keeps a visitor's "<script>" inert in the HTML part.
_jinja = Environment(
    autoescape=select_autoescape(default=True, default_for_string=True)
)
_HTML = _jinja.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family: sans-serif; line-height: 1.5">
{%- if sender %}
<p style="color: #555">From {{ sender }}</p>
{%- endif %}
{%- if fields %}
<table style="border-collapse: collapse" cellpadding="6">
{%- for name, lines in fields %}
<tr><th style="text-align: left; vertical-align: top; border-bottom: 1px solid #ddd">
{{- name }}</th><td style="border-bottom: 1px solid #ddd">
{%- for line in lines %}{{ line }}{% if not loop.last %}<br>
{% endif %}{% endfor -%}
</td></tr>
{%- endfor %}
</table>
{%- else %}
<div>
{%- for line in lines %}{{ line }}{% if not loop.last %}<br>
{% endif %}{% endfor -%}
</div>
{%- endif %}
</body></html>
"""
)
# Python's header parser decodes RFC 2047 encoded words on assignment, so a
# typed "=?utf-8?q?a=0D=0ABcc:_x?=" would become a real line break and an extra
# header. Nobody types one by hand: refuse anything that looks like one.
_ENCODED_WORD = re.compile(r"=\?.*?\?=", re.DOTALL)
# SMTP wants CRLF on the wire; a fixed policy makes the stored bytes the sent bytes.
WIRE_POLICY = policy.SMTP


class UnsafeHeaderError(ValueError):
    """Text bound for a header holds line breaks, controls or encoded words."""


def header_text_problem(value: str) -> str | None:
    """Say why `value` must not go into a header, or return None if it is safe.

    Unsafe: any control character (CR, LF, NUL, TAB, C1 ...), the Unicode line
    and paragraph separators, and RFC 2047 encoded-word syntax.
    """
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
        return "control characters or line breaks"
    if _ENCODED_WORD.search(value):
        return "an encoded-word sequence (=?...?=)"
    return None


def _header_safe(field: str, value: str) -> str:
    problem = header_text_problem(value)
    if problem:
        raise UnsafeHeaderError(f"{field} contains {problem}")
    return value


@dataclass(frozen=True)
class Submission:
    """What a visitor sent, already validated."""

    recipient: Address
    subject: str
    message: str
    name: str = ""
    email: str = ""
    # Set for posts from other sites: every field in submitted order. The
    # text part is then a "name: value" list and the HTML part a table.
    fields: tuple[tuple[str, str], ...] = ()
    cc: tuple[Address, ...] = ()


def new_message_id(mail_from: Address) -> str:
    """Mint a Message-ID on the sender's domain (reused on every retry)."""
    return make_msgid(domain=mail_from.domain)


def compose(
    submission: Submission,
    *,
    mail_from: Address,
    message_id: str,
    date: datetime,
) -> EmailMessage:
    """Build a multipart/alternative message: the text as typed, HTML escaped.

    Raise UnsafeHeaderError if header-bound text could alter the header block;
    the form rejects such input first, this is the last line of defence.
    """
    msg = EmailMessage(policy=policy.default)
    msg["From"] = mail_from
    msg["To"] = submission.recipient
    if submission.cc:
        msg["Cc"] = submission.cc
    if submission.email:
        msg["Reply-To"] = Address(
            display_name=_header_safe("name", submission.name),
            addr_spec=_header_safe("email", submission.email),
        )
    msg["Subject"] = _header_safe("subject", submission.subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"

    fields = [(n, normalize_newlines(v)) for n, v in submission.fields]
    if fields:
        text = "\n".join(f"{n}: {v}".replace("\n", "\n    ") for n, v in fields)
        text += "\n"
    else:
        text = normalize_newlines(submission.message)
    # quoted-printable keeps every line 7-bit and short, so no relay has to
    # re-encode the body (which would break a DKIM signature later).
    msg.set_content(text, cte="quoted-printable")
    sender = _describe_sender(submission)
    html = _HTML.render(
        subject=submission.subject,
        sender=sender,
        lines=text.split("\n"),
        fields=[(n, v.split("\n")) for n, v in fields],
    )
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    return msg


def envelope(msg: EmailMessage, mail_from: Address) -> Envelope:
    """Freeze a composed message into the exact bytes and envelope to send.

    Envelope recipients come from the To and Cc headers we set ourselves from
    configured addresses, never from anything a visitor typed.
    """
    recipients = tuple(
        addr.addr_spec
        for header in ("To", "Cc")
        for addr in (msg[header].addresses if msg[header] else ())
    )
    return Envelope(
        mail_from=mail_from.addr_spec,
        recipients=recipients,
        data=msg.as_bytes(policy=WIRE_POLICY),
        message_id=str(msg["Message-ID"]),
    )


def normalize_newlines(text: str) -> str:
    """Turn CRLF and lone CR (as browsers submit) into LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _describe_sender(submission: Submission) -> str:
    if submission.name and submission.email:
        return f"{submission.name} <{submission.email}>"
    return submission.name or submission.email
