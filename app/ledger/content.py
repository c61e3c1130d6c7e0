"""What a visitor sent, as data: the fields beside the composed message.

Pure: no database. `Content` is what a post stores beside its message;
`search_columns` is what full-text search indexes; `read_message` recovers
the content of a row stored before version 5 from its message bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

# Bounds of the content columns (schema.py holds them; these cut to fit).
NAME_MAX = 200
EMAIL_MAX = 320
ORIGIN_MAX = 255
USER_AGENT_MAX = 512
# Forms whose text part is the message itself, not a "name: value" list.
MESSAGE_FORMS = ("hosted", "doctor")
# The indexed columns, in the FTS5 table's order.
SEARCH_COLUMNS = ("subject", "name", "email", "message", "other")


@dataclass(frozen=True)
class Content:
    """The visitor's fields in submitted order, and the ones the console shows."""

    fields: tuple[tuple[str, str], ...] = ()
    name: str | None = None
    email: str | None = None
    message: str | None = None
    origin: str | None = None
    user_agent: str | None = None

    def columns(self) -> dict[str, str | None]:
        """Return the submissions columns, each cut to its column's bound."""
        return {
            "fields": fields_json(self.fields),
            "name": _cut(self.name, NAME_MAX),
            "email": _cut(self.email, EMAIL_MAX),
            "message": storable(self.message),
            "origin": _cut(self.origin, ORIGIN_MAX),
            "user_agent": _cut(self.user_agent, USER_AGENT_MAX),
        }


def storable(value: str | None) -> str | None:
    """Replace NUL, which PostgreSQL's text cannot hold (the message keeps it)."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _cut(value: str | None, bound: int) -> str | None:
    return storable(None if value is None else value[:bound])


def fields_json(fields: Sequence[Sequence[str]]) -> str:
    """Encode fields as the stored JSON list of [name, value] pairs."""
    return json.dumps(
        [[name, value] for name, value in fields],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def load_fields(stored: str | None) -> list[tuple[str, str]] | None:
    """Decode the stored fields column (None when it holds nothing)."""
    if stored is None:
        return None
    return [(name, value) for name, value in json.loads(stored)]


def search_columns(
    subject: str | None,
    name: str | None,
    email: str | None,
    message: str | None,
    fields: Sequence[Sequence[str]] | None,
) -> dict[str, str]:
    """Return the text each search column indexes; `other` is every field value.

    Values already in name, email or message are left out of `other`.
    """
    known = {name, email, message}
    other = [v for _n, v in fields or () if v and v not in known]
    return {
        "subject": storable(subject) or "",
        "name": storable(name) or "",
        "email": storable(email) or "",
        "message": storable(message) or "",
        "other": storable("\n".join(other)) or "",
    }


def read_message(raw: bytes, form_id: str) -> Content | None:
    """Recover a stored message's content (rows stored before version 5).

    compose.py writes the text part as "From: Name <address>" and a blank
    line when a sender is known, then the message (hosted form, doctor) or
    "name: value" lines, continuation lines indented by four spaces (/f/).
    Reply-To gives name and email. None when the message cannot be read so.
    """
    try:
        parsed = message_from_bytes(raw, policy=policy.default)
        if (
            not isinstance(parsed, EmailMessage)
            or parsed.get_content_type() != "multipart/alternative"
        ):
            return None
        body = parsed.get_body(("plain",))
        if body is None:
            return None
        text = body.get_content()
        name = email = None
        reply_to = parsed.get("Reply-To")
        if reply_to is not None and reply_to.addresses:
            address = reply_to.addresses[0]
            name, email = address.display_name or "", address.addr_spec
        subject = str(parsed.get("Subject", ""))
    except (LookupError, ValueError, TypeError, AttributeError, IndexError):
        return None
    text = text.replace("\r\n", "\n")
    if text.startswith("From: ") and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    if text.endswith("\n"):
        text = text[:-1]
    if form_id in MESSAGE_FORMS:
        fields = (
            ("name", name or ""),
            ("email", email or ""),
            ("subject", subject),
            ("message", text),
        )
        return Content(fields=fields, name=name, email=email, message=text)
    fields_read = _field_lines(text)
    if fields_read is None:
        return None
    message = next(
        (v for n, v in fields_read if n.lower() in ("content", "message", "body")),
        None,
    )
    return Content(fields=fields_read, name=name, email=email, message=message)


def _field_lines(text: str) -> tuple[tuple[str, str], ...] | None:
    fields: list[list[str]] = []
    for line in text.split("\n"):
        if line.startswith("    ") and fields:
            fields[-1][1] += "\n" + line[4:]
            continue
        name, sep, value = line.partition(": ")
        if not sep:
            if line.endswith(":"):  # an empty value: "name:" after rstrip
                name, value = line[:-1], ""
            else:
                return None
        fields.append([name, value])
    return tuple((n, v) for n, v in fields)
