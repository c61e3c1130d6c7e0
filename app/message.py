"""What every mail module shares: the envelope, and what may go into a header.

Imports nothing of ours, so compose, the transports, signing and the forms
can all depend on it without depending on each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# Mail readers decode RFC 2047 encoded words, and so does Python's header
# parser, so a typed "=?utf-8?q?a=0D=0ABcc:_x?=" could turn into a line break
# and an extra header. Nobody types one by hand: refuse anything like one.
_ENCODED_WORD = re.compile(r"=\?.*?\?=", re.DOTALL)
# Unicode categories Cc (C0 controls, DEL, C1 controls), Zl and Zp, exactly.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Both at once: one scan of each value on the request path.
_UNSAFE = re.compile(f"{_CONTROL.pattern}|{_ENCODED_WORD.pattern}", re.DOTALL)
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# What compose.reply_address returns, and what configuration addresses almost
# always are: an ASCII dot-atom local part and a host name (fullmatch it).
# Nothing in it for a parser to reinterpret (smtp.py relies on that too).
PLAIN_ADDRESS = re.compile(rf"{ATOM}(?:\.{ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


@dataclass(frozen=True)
class Envelope:
    """A composed message ready to hand over: SMTP envelope plus exact bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


@dataclass(frozen=True)
class SendResult:
    """What the relay accepted: `refused` maps addresses to (code, reply)."""

    refused: Mapping[str, tuple[int, str]] = field(default_factory=dict)


class UnsafeHeaderError(ValueError):
    """Text bound for a header holds line breaks, controls or encoded words."""


def header_text_problem(value: str) -> str | None:
    """Say why `value` must not go into a header, or return None if it is safe.

    Unsafe: any control character (CR, LF, NUL, TAB, C1 ...), the Unicode line
    and paragraph separators, and RFC 2047 encoded-word syntax.
    """
    if _UNSAFE.search(value) is None:
        return None
    if _CONTROL.search(value):
        return "control characters or line breaks"
    return "an encoded-word sequence (=?...?=)"


def normalize_newlines(text: str) -> str:
    """Turn CRLF and lone CR (as browsers submit) into LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")
