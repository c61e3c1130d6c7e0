"""Files reach the owner: attached with RFC 2231 names, or, when the message
would pass the relay's SIZE or MAIL_MAX_SIZE, as a signed link to the console."""

from __future__ import annotations

import io
import re

from app.filelinks import read_token

from ..consolekit import log_in, with_owner
from ..helpers import deliver
from .posting import FIELDS, JSON, SITE, post

KB = 1024
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 40
TEXT = "Grüße aus Köln\n".encode()


def app_with_files(make_app, relay, **env):
    return make_app(
        relay.env(
            ALLOWED_ORIGINS=SITE,
            ATTACHMENTS_MAX_FILES="3",
            ATTACHMENTS_MAX_FILE_SIZE="1MB",
            **env,
        )
    )


def send(app, *items):
    sent = [
        (io.BytesIO(data), name, "application/octet-stream") for name, data in items
    ]
    answer = post(app.test_client(), {**FIELDS, "cv": sent}, headers=JSON)
    assert answer.status_code == 200, answer.json
    deliver(app)


def test_files_arrive_as_attachments_with_rfc2231_names(make_app, make_relay):
    relay = make_relay()
    app = app_with_files(make_app, relay)
    send(app, ("履歴書 Müller.pdf", PDF), ("notes.txt", TEXT))
    (got,) = relay.received
    # The raw bytes: 7-bit, RFC 2231 UTF-8 for the Unicode name, short lines.
    assert b"filename*=utf-8''%E5%B1%A5%E6%AD%B4%E6%9B%B8%20M%C3%BCller.pdf" in (
        got.data
    )
    assert b'filename="notes.txt"' in got.data
    assert all(len(line) <= 998 for line in got.data.split(b"\r\n"))
    got.data.decode("ascii")
    message = got.message
    assert message.get_content_type() == "multipart/mixed"
    files = [
        (p.get_filename(), p.get_content_type(), p.get_content())
        for p in message.iter_attachments()
    ]
    assert files == [
        ("履歴書 Müller.pdf", "application/pdf", PDF),
        ("notes.txt", "text/plain", TEXT.decode()),
    ]
    # The text the owner reads is still there, unchanged.
    assert "A question about engines." in message.get_body(("plain",)).get_content()


def test_a_long_unicode_name_is_split_into_continuations(make_app, make_relay):
    relay = make_relay()
    app = app_with_files(make_app, relay)
    name = "ü" * 90 + ".pdf"
    send(app, (name, PDF))
    (got,) = relay.received
    assert b"filename*0*=utf-8''" in got.data
    (part,) = got.message.iter_attachments()
    assert part.get_filename() == name


def test_too_large_for_the_relay_sends_a_signed_link(make_app, make_relay):
    relay = make_relay(data_size_limit=8 * KB)
    app = app_with_files(make_app, relay, PUBLIC_URL="https://forms.example.com")
    send(app, ("cv.pdf", PDF))
    (got,) = relay.received
    assert len(got.data) < 8 * KB
    message = got.message
    assert list(message.iter_attachments()) == []
    text = "\n".join(
        p.get_content() for p in message.walk() if p.get_content_type() == "text/plain"
    )
    assert "too large to send by email" in text
    assert "cv.pdf (10 kB)" in text
    link = re.search(r"https://forms\.example\.com/admin/files/(\S+)", text)
    assert link is not None
    secret = app.config["SECRET_KEY"]
    (row,) = app.extensions["formpost"].ledger.rows()
    assert read_token(secret, link.group(1)) == row.receipt
    assert row.state == "sent"
    # Expired, or signed with another key: no receipt.
    assert read_token(secret, link.group(1), max_age=-1) is None
    assert read_token("another-secret-key-0123", link.group(1)) is None


def test_mail_max_size_sends_a_link_without_public_url(make_app, make_relay):
    relay = make_relay()
    app = app_with_files(make_app, relay, MAIL_MAX_SIZE="4096")
    send(app, ("cv.pdf", PDF))
    (got,) = relay.received
    assert list(got.message.iter_attachments()) == []
    (row,) = app.extensions["formpost"].ledger.rows()
    assert f"in the console under submission {row.receipt}" in got.message.as_string()


def test_under_the_relay_size_the_files_are_attached(make_app, make_relay):
    relay = make_relay(data_size_limit=64 * KB)
    app = app_with_files(make_app, relay)
    send(app, ("cv.pdf", PDF))
    (got,) = relay.received
    assert [p.get_filename() for p in got.message.iter_attachments()] == ["cv.pdf"]


# -- the console: listed, downloaded, never rendered -------------------------------


def test_the_console_lists_files_and_downloads_them_as_attachments(
    make_app, make_relay
):
    app = with_owner(app_with_files(make_app, make_relay()))
    send(app, ("Tom & Jerry's CV.pdf", PDF), ("Grüße.txt", TEXT))
    (row,) = app.extensions["formpost"].ledger.rows()
    client = app.test_client()
    # Not logged in: no file, not even its name.
    answer = client.get(f"/admin/s/{row.receipt}/files/0")
    assert answer.status_code in (302, 401)
    assert PDF not in answer.data
    log_in(client)
    page = client.get(f"/admin/s/{row.receipt}").get_data(as_text=True)
    assert "Attached files" in page
    assert "Tom &amp; Jerry&#39;s CV.pdf" in page
    assert "application/pdf" in page and "Grüße.txt" in page
    got = client.get(f"/admin/s/{row.receipt}/files/0")
    assert got.status_code == 200 and got.data == PDF
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    text = client.get(f"/admin/s/{row.receipt}/files/1")
    assert text.data == TEXT
    assert text.headers["Content-Disposition"] == (
        "attachment; filename=\"Gr__e.txt\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe.txt"
    )
    assert client.get(f"/admin/s/{row.receipt}/files/2").status_code == 404


def test_the_signed_link_opens_the_submission_after_log_in(make_app, make_relay):
    relay = make_relay(data_size_limit=8 * KB)
    app = with_owner(
        app_with_files(make_app, relay, PUBLIC_URL="https://forms.example.com")
    )
    send(app, ("cv.pdf", PDF))
    (got,) = relay.received
    text = "\n".join(
        p.get_content()
        for p in got.message.walk()
        if p.get_content_type() == "text/plain"
    )
    path = re.search(r"https://forms\.example\.com(/admin/files/\S+)", text)
    client = app.test_client()
    assert client.get(path.group(1)).status_code in (302, 401)  # log in first
    log_in(client)
    (row,) = app.extensions["formpost"].ledger.rows()
    opened = client.get(path.group(1))
    assert opened.status_code == 302
    assert opened.headers["Location"].endswith(f"/admin/s/{row.receipt}")
    assert client.get("/admin/files/forged-token").status_code == 404


def test_erasing_in_the_console_takes_the_files(make_app, make_relay):
    app = with_owner(app_with_files(make_app, make_relay()))
    send(app, ("cv.pdf", PDF))
    ledger = app.extensions["formpost"].ledger
    (row,) = ledger.rows()
    ledger.erase([row.receipt])
    assert ledger.files(row.id) == []
    client = app.test_client()
    log_in(client)
    assert client.get(f"/admin/s/{row.receipt}/files/0").status_code == 404
