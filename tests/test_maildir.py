"""Development delivery: no SMTP_HOST means a local Maildir, and it says so."""

from __future__ import annotations

import logging
import mailbox
import os
from email import message_from_bytes, policy

from app.maildir import MaildirTransport
from app.message import Envelope
from app.transport import send_one

from .helpers import deliver, post_form


def test_without_smtp_host_messages_land_in_the_instance_maildir(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="formpost"):
        app = make_app({})
    assert any("development mode" in r.getMessage() for r in caplog.records)
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert "Development mode" in page
    assert post_form(client, recipient="demo", subject="Dev hello").status_code == 303
    assert deliver(app) == 1  # the same ledger and worker as with a relay

    box = mailbox.Maildir(os.path.join(app.instance_path, "maildir"), create=False)
    (raw,) = [box.get_bytes(key) for key in box.keys()]
    msg = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    assert msg["Subject"] == "Dev hello"
    assert msg["To"] == "demo@example.com"
    assert msg["Delivered-To"] == "demo@example.com"
    assert msg["Return-Path"] == "<formpost@example.com>"


def test_production_mode_has_no_development_notice(client):
    assert "Development mode" not in client.get("/").get_data(as_text=True)


def test_maildir_transport_creates_its_folder(tmp_path):
    path = tmp_path / "deep" / "maildir"
    transport = MaildirTransport(str(path))
    envelope = Envelope(
        "a@example.com", ("b@example.com",), b"Subject: x\r\n\r\nhi\r\n", "<x@y>"
    )
    send_one(transport, envelope)
    send_one(transport, envelope)
    assert len(os.listdir(path / "new")) == 2
    assert "maildir" in transport.describe()
