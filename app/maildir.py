"""Development delivery: write each message into a local Maildir."""

from __future__ import annotations

import mailbox
import os

from .errors import TransientError
from .message import Envelope, SendResult


def default_maildir(instance_path: str) -> str:
    """Return the Maildir used when no relay is configured."""
    return os.path.join(instance_path, "maildir")


class MaildirTransport:
    """Deliver into a Maildir, as a local MDA would (Return-Path, Delivered-To)."""

    name = "maildir"

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        """Return where messages go."""
        return f"Maildir {self.path}"

    def open(self, deadline: float | None = None) -> _MaildirSession:
        """Open (and create on first use) the Maildir."""
        try:
            # Maildir(create=True) checks, then creates: two workers starting
            # together race. makedirs(exist_ok=True) does not, and also makes
            # the instance folder on a fresh checkout.
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)
            return _MaildirSession(mailbox.Maildir(self.path, create=False))
        except OSError as exc:
            raise TransientError(f"cannot open Maildir {self.path}: {exc}") from exc


class _MaildirSession:
    def __init__(self, box: mailbox.Maildir) -> None:
        self._box = box

    def send(self, envelope: Envelope, deadline: float | None = None) -> SendResult:
        trace = f"Return-Path: <{envelope.mail_from}>\r\n".encode()
        for rcpt in envelope.recipients:
            trace += f"Delivered-To: {rcpt}\r\n".encode()
        try:
            # Maildir writes to tmp/ and renames into new/: readers never see
            # a half-written message.
            self._box.add(trace + envelope.data)
        except OSError as exc:
            raise TransientError(f"cannot write to Maildir: {exc}") from exc
        return SendResult()

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self._box.close()
