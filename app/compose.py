"""Build the email for a submission. Pure: no Flask, no I/O, no clock of its own.

The message is written out directly as the bytes to send. EmailMessage took
about 1 ms per message, the largest single cost on the request path (see
bench/); this takes a few dozen microseconds. What keeps it as safe: every
header-bound value is refused if it holds control characters, line breaks or
encoded-word syntax (header_text_problem); addresses come validated; bodies
are quoted-printable. The tests parse every shape of output back with
EmailMessage (default policy) and check that each header and part round-trips.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.utils import format_datetime, make_msgid

from email_validator import SPECIAL_USE_DOMAIN_NAMES, validate_email
from markupsafe import escape

from .message import (
    ATOM,
    PLAIN_ADDRESS,
    Envelope,
    UnsafeHeaderError,
    header_text_problem,
    normalize_newlines,
)

_TD = "border-bottom: 1px solid #ddd"
_TH = f"text-align: left; vertical-align: top; {_TD}"
# RFC 5322 atoms separated by single spaces: a display name needing no quotes.
_PLAIN_PHRASE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+( [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_LINE = 78  # RFC 5322's recommended line length
_SIMPLE_ADDRESS = re.compile(
    rf"(?P<local>{ATOM}(?:\.{ATOM})*)"
    r"@(?P<host>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)


def reply_address(value: str) -> str:
    """Check a visitor's address (syntax only: no DNS) and return it normalised.

    ASCII only, so it fits any relay without SMTPUTF8. Raise
    EmailNotValidError with a readable reason otherwise.
    """
    simple = _simple_address(value)
    if simple is not None:
        return simple
    info = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    return info.ascii_email or info.normalized


def _simple_address(value: str) -> str | None:
    """Answer for the everyday shape of address without email_validator.

    `name.part+tag@host.example.org`: ASCII atoms, host labels of letters,
    digits and single hyphens, a letters-only top-level domain. For these,
    email_validator's answer is known (valid; the host lowercased), and it
    takes 25 us per call to give it. Anything else, including every address
    it would refuse, goes to email_validator (None). A property test holds
    the two to the same answers.
    """
    found = _SIMPLE_ADDRESS.fullmatch(value)
    if found is None or len(value) > 254 or len(found["local"]) > 64:
        return None
    host = found["host"].lower()
    if "--" in host or any(
        host == name or host.endswith("." + name) for name in SPECIAL_USE_DOMAIN_NAMES
    ):
        return None
    return f"{found['local']}@{host}"


def _header_safe(field: str, value: str) -> str:
    problem = header_text_problem(value)
    if problem:
        raise UnsafeHeaderError(f"{field} contains {problem}")
    return value


# System fonts only (nothing is downloaded): Latin first, then the CJK faces
# of macOS, Windows and Linux, so Chinese renders in every mail client.
FONT_STACK = (
    "-apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, "
    "'PingFang SC', 'Hiragino Sans GB', 'Microsoft YaHei', "
    "'Noto Sans CJK SC', 'WenQuanYi Micro Hei', sans-serif"
)


@dataclass(frozen=True)
class MailText:
    """The email's own words, already in the form's language (accept.py)."""

    lang: str = "en"  # the HTML part's lang attribute
    # "{sender}" stands for the visitor's name and address.
    sent_by_html: str = "From {sender}"
    sent_by_text: str = "From: {sender}"


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
    words: MailText | None = None,
) -> Envelope:
    """Build the message: multipart/alternative, text as typed, HTML escaped.

    Return the exact bytes to send (CRLF line ends, 7-bit, short lines) with
    their envelope. The envelope recipients are the To and Cc addresses,
    which come from configuration, never from anything a visitor typed.
    Raise UnsafeHeaderError if header-bound text could alter the header
    block; the forms refuse such input first, this is the last line of
    defence. `words` are the labels, in the form's language (English if
    None).
    """
    words = words or MailText()
    headers = [
        ("From", _address(mail_from)),
        ("To", _address(submission.recipient)),
    ]
    if submission.cc:
        headers.append(("Cc", ",\r\n ".join(_address(a) for a in submission.cc)))
    if submission.email:
        name = _header_safe("name", submission.name)
        email = _header_safe("email", submission.email)
        if not PLAIN_ADDRESS.fullmatch(email):
            raise UnsafeHeaderError("email is not a checked address")
        headers.append(("Reply-To", _mailbox(name, email)))
    subject = _header_safe("subject", submission.subject)
    headers += [
        ("Subject", _unstructured("Subject", subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", _header_safe("Message-ID", message_id)),
        ("Auto-Submitted", "auto-generated"),
        # RFC 3282: the language of the labels (the form's), which the
        # outbox's file-link notice follows when it is added at sending.
        ("Content-Language", _header_safe("Content-Language", words.lang)),
        ("MIME-Version", "1.0"),
    ]

    fields = [(n, normalize_newlines(v)) for n, v in submission.fields]
    if fields:
        text = "\n".join(f"{n}: {v}".replace("\n", "\n    ") for n, v in fields)
    else:
        text = normalize_newlines(submission.message)
    if not text.endswith("\n"):
        text += "\n"
    sender = _describe_sender(submission)
    html = _html(submission.subject, sender, text[:-1], fields, words)
    if sender:
        # Who wrote, in the text part too: some owners read only that part,
        # and a forwarded text part loses the Reply-To header.
        text = words.sent_by_text.replace("{sender}", sender) + f"\n\n{text}"
    # A boundary made of "=" runs cannot occur inside quoted-printable text,
    # where every "=" is itself encoded.
    boundary = f"==============={secrets.randbelow(10**19):019d}=="
    headers.append(
        ("Content-Type", f'multipart/alternative;\r\n boundary="{boundary}"')
    )
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    data = b"".join(
        (
            head.encode("ascii"),
            f"\r\n--{boundary}\r\n".encode("ascii"),
            _qp_part("plain", text),
            f"\r\n--{boundary}\r\n".encode("ascii"),
            _qp_part("html", html),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )
    return Envelope(
        mail_from=mail_from.addr_spec,
        recipients=tuple(a.addr_spec for a in (submission.recipient, *submission.cc)),
        data=data,
        message_id=message_id,
    )


def _describe_sender(submission: Submission) -> str:
    if submission.name and submission.email:
        return f"{submission.name} <{submission.email}>"
    return submission.name or submission.email


def _qp_part(subtype: str, text: str) -> bytes:
    # Quoted-printable keeps every line 7-bit and short, so no relay has to
    # re-encode the body (which would break a DKIM signature).
    body = binascii.b2a_qp(text.replace("\n", "\r\n").encode("utf-8"), istext=True)
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode("ascii") + body


def _html(
    subject: str,
    sender: str,
    text: str,
    fields: list[tuple[str, str]],
    words: MailText,
) -> str:
    """Write the HTML part; every visitor's value goes through escape()."""
    out = [
        "<!doctype html>\n"
        f'<html lang="{escape(words.lang)}"><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head>\n"
        f'<body style="font-family: {FONT_STACK}; line-height: 1.5">'
    ]
    if sender:
        line = escape(words.sent_by_html).replace("{sender}", escape(sender))
        out.append(f'\n<p style="color: #555">{line}</p>')
    if fields:
        out.append('\n<table style="border-collapse: collapse" cellpadding="6">')
        out += [
            f'\n<tr><th style="{_TH}">{escape(name)}</th>'
            f'<td style="{_TD}">{_html_lines(value)}</td></tr>'
            for name, value in fields
        ]
        out.append("\n</table>")
    else:
        out.append(f"\n<div>{_html_lines(text)}</div>")
    out.append("\n</body></html>")
    return "".join(out)


def _html_lines(text: str) -> str:
    return str(escape(text)).replace("\n", "<br>\n")


def _address(address: Address) -> str:
    return _mailbox(address.display_name, address.addr_spec)


def _mailbox(name: str, addr_spec: str) -> str:
    """Format `Name <addr>`: atoms as they are, quoted or encoded otherwise."""
    if not name:
        return addr_spec
    if not name.isascii():
        return f"{_encoded_words(name)}\r\n <{addr_spec}>"
    if not _PLAIN_PHRASE.fullmatch(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if len(name) + len(addr_spec) < 60:
        return f"{name} <{addr_spec}>"
    return f"{name}\r\n <{addr_spec}>"


def _unstructured(header: str, value: str) -> str:
    """Fold plain ASCII at its spaces; encode anything else as RFC 2047 words."""
    if not value.isascii():
        return _encoded_words(value)
    if len(header) + 2 + len(value) <= _LINE:
        return value
    lines: list[str] = []
    line: str | None = None
    width = _LINE - len(header) - 2
    for word in value.split(" "):
        if len(word) > _LINE - 2:
            return _encoded_words(value)
        if line is None:
            line = word
        elif len(line) + 1 + len(word) > width:
            lines.append(line)
            line, width = word, _LINE - 1
        else:
            line = f"{line} {word}"
    lines.append(line or "")
    if not all(part.strip() for part in lines):
        # Runs of spaces at a fold would leave a blank continuation line.
        return _encoded_words(value)
    # Unfolding removes each CRLF; the space after it is the original one.
    return "\r\n ".join(lines)


def _encoded_words(text: str) -> str:
    """Encode as RFC 2047 base64 words of at most 45 UTF-8 octets each.

    Words are split between characters, never inside one, and joined by
    folding white space, which decoders drop between encoded words.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if size + n > 45:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(ch)
        size += n
    words.append("".join(chunk))
    return "\r\n ".join(
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?="
        for w in words
    )


def compose_autoresponse(
    *,
    to: str,
    subject: str,
    body: str,
    mail_from: Address,
    message_id: str,
    date: datetime,
) -> Envelope:
    """Build the reply to a visitor: the form's fixed subject and body only.

    Nothing the visitor typed goes into it but their checked address (To):
    so the form cannot be made to mail someone else's words. Marked
    `Auto-Submitted: auto-replied` (RFC 3834) so that their own responders
    do not answer it. Raise UnsafeHeaderError for an address or subject that
    could alter the header block.
    """
    address = _header_safe("to", to)
    if not PLAIN_ADDRESS.fullmatch(address):
        raise UnsafeHeaderError("to is not a checked address")
    subject = _header_safe("subject", subject)
    text = normalize_newlines(body)
    if not text.endswith("\n"):
        text += "\n"
    headers = [
        ("From", _address(mail_from)),
        ("To", address),
        ("Subject", _unstructured("Subject", subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", _header_safe("Message-ID", message_id)),
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
    ]
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    data = head.encode("ascii") + _qp_part("plain", text)
    return Envelope(
        mail_from=mail_from.addr_spec,
        recipients=(address,),
        data=data,
        message_id=message_id,
    )


# -- attachments ---------------------------------------------------------------

# base64 lines of 76 characters: 57 bytes each.
_B64_LINE = 57
_PARAM_SEGMENT = 60
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9!#$&+.^_`|~-]")


def attached_size(size: int) -> int:
    """Bytes a file of `size` takes in a message: base64 lines plus part headers."""
    lines = -(-size // _B64_LINE)
    return lines * 78 + 1024


def _content_type(media_type: str) -> str:
    # Stored types come from our detection (uploads.py), but a header is
    # only ever written from characters that cannot break it.
    if media_type == "text/plain":
        # Only valid UTF-8 is taken as text (uploads.py).
        return 'text/plain; charset="utf-8"'
    if re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", media_type):
        return media_type
    return "application/octet-stream"


def filename_params(filename: str) -> str:
    """Return the `filename` parameter: quoted ASCII, or RFC 2231 UTF-8.

    A long name is split into RFC 2231 continuations (filename*0*=...) so
    every header line stays short; a %-escape is never split.
    """
    if (
        filename.isascii()
        and len(filename) <= _PARAM_SEGMENT
        and (not any(c in filename for c in '"\\') and filename.isprintable())
    ):
        return f'filename="{filename}"'
    encoded = [
        c if _TOKEN_SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode())
        for c in filename
    ]
    segments, current = [], "utf-8''"
    for piece in encoded:
        if len(current) + len(piece) > _PARAM_SEGMENT:
            segments.append(current)
            current = ""
        current += piece
    segments.append(current)
    if len(segments) == 1:
        return f"filename*={segments[0]}"
    return ";\r\n ".join(f"filename*{i}*={s}" for i, s in enumerate(segments))


def with_attachments(
    envelope: Envelope,
    files: Iterable[tuple[str, str, Iterable[bytes]]],
    notice: str | None = None,
) -> Envelope:
    """Wrap a composed message and its files into multipart/mixed.

    `files` are (filename, media type, chunks); each is read once, in
    turn, and written as base64, so only the message being built is held.
    The composed body becomes the first part, unchanged; `notice`, if
    given, follows it as a plain-text part (where the files are instead).
    """
    head, _, body = envelope.data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    # The Content-Type header and its continuation lines move into the part.
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Content-Type:"))
    end = start + 1
    while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
        end += 1
    inner_type = b"\r\n".join(lines[start:end])
    boundary = f"==============={secrets.randbelow(10**19):019d}=="
    outer = f'Content-Type: multipart/mixed;\r\n boundary="{boundary}"'.encode()
    parts = [
        b"\r\n".join([*lines[:start], outer, *lines[end:]]),
        f"\r\n\r\n--{boundary}\r\n".encode(),
        inner_type,
        b"\r\n\r\n",
        body,
    ]
    if notice:
        text = notice if notice.endswith("\n") else notice + "\n"
        parts += [f"\r\n--{boundary}\r\n".encode(), _qp_part("plain", text)]
    for filename, media_type, chunks in files:
        parts.append(
            (
                f"\r\n--{boundary}\r\n"
                f"Content-Type: {_content_type(media_type)}\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment;\r\n {filename_params(filename)}"
                "\r\n\r\n"
            ).encode("ascii")
        )
        parts.append(_base64_lines(chunks))
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return dataclasses.replace(envelope, data=b"".join(parts))


def _base64_lines(chunks: Iterable[bytes]) -> bytes:
    out = bytearray()
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = len(data) - len(data) % _B64_LINE
        for i in range(0, cut, _B64_LINE):
            out += base64.b64encode(data[i : i + _B64_LINE]) + b"\r\n"
        rest = data[cut:]
    if rest:
        out += base64.b64encode(rest) + b"\r\n"
    return bytes(out[:-2])
