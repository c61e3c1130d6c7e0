"""Files posted to /f/<form>: limits at, under and over each bound, types by
content, names cleaned, stored with the row on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import text

from ..helpers import counts, deliver, open_temp_files
from ..relay import Relay
from .posting import FIELDS, JSON, SITE, post

KB = 1024
PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 200
# Small limits so each bound can be crossed by one byte.
LIMITS = {
    "ATTACHMENTS_MAX_FILES": "2",
    "ATTACHMENTS_MAX_FILE_SIZE": "2kB",
    "ATTACHMENTS_MAX_TOTAL_SIZE": "3kB",
}


def pdf(size: int) -> bytes:
    return (PDF_HEAD + b"0" * size)[:size]


def files(*items: tuple[str, bytes]) -> list[tuple[io.BytesIO, str, str]]:
    # The client's Content-Type is a lie on purpose: it must not matter.
    return [(io.BytesIO(data), name, "application/pdf") for name, data in items]


@pytest.fixture
def files_app(make_app: Callable[..., Flask], relay: Relay, database_url: str):
    return make_app(
        relay.env(
            ALLOWED_ORIGINS=SITE,
            REDIRECT_HOSTS="www.example.com",
            DATABASE_URL=database_url,
            **LIMITS,
        )
    )


def test_a_form_without_attachments_still_refuses_files(client_app_plain):
    client, app = client_app_plain
    answer = post(client, {**FIELDS, "cv": files(("cv.pdf", pdf(100)))}, headers=JSON)
    assert answer.status_code == 415
    assert answer.json["errors"][0]["code"] == "FILES_NOT_ACCEPTED"
    assert counts(app) == (0, 0, 0)


@pytest.fixture
def client_app_plain(build):
    app = build()
    return app.test_client(), app


@pytest.mark.parametrize(
    ("sizes", "status", "code"),
    [
        ((2 * KB - 1,), 200, None),
        ((2 * KB,), 200, None),
        ((2 * KB + 1,), 413, "FILE_TOO_LARGE"),
        ((1536, 1536), 200, None),
        ((1536, 1537), 413, "FILES_TOO_LARGE"),
        ((100, 100), 200, None),
        ((100, 100, 100), 413, "TOO_MANY_FILES"),
    ],
)
def test_limits_at_under_and_over_each_bound(files_app, sizes, status, code):
    client = files_app.test_client()
    sent = files(*((f"f{i}.pdf", pdf(size)) for i, size in enumerate(sizes)))
    app = files_app
    before = open_temp_files(app)
    answer = post(client, {**FIELDS, "attachment": sent}, headers=JSON)
    assert answer.status_code == status, answer.json
    if code is None:
        assert counts(files_app)[:2] == (1, len(sizes))
    else:
        (error,) = answer.json["errors"]
        assert error["code"] == code
        assert error["field"] == "attachment"
        assert error["file"] == f"f{len(sizes) - 1}.pdf"
        assert error["file"] in error["message"]
        assert "choose your files again" in error["message"]
        assert counts(files_app) == (0, 0, 0)
    assert open_temp_files(app) == before == []


@pytest.mark.parametrize(
    ("name", "data", "found"),
    [
        ("invoice.pdf", EXE, "application/octet-stream"),
        ("photo.png", pdf(300), None),
        ("notes.pdf", "Grüße\n".encode(), None),
        ("image.png", b"\x00\x01binary\xff" * 10, "application/octet-stream"),
    ],
)
def test_the_type_comes_from_the_bytes_not_the_name(files_app, name, data, found):
    client = files_app.test_client()
    answer = post(client, {**FIELDS, "attachment": files((name, data))}, headers=JSON)
    if found is None:
        assert answer.status_code == 200
    else:
        assert answer.status_code == 415
        (error,) = answer.json["errors"]
        assert error["code"] == "FILE_TYPE" and error["file"] == name
        assert found in error["message"]
        assert counts(files_app) == (0, 0, 0)


@pytest.mark.parametrize(
    ("sent", "status", "code"),
    [
        ((("a.pdf", pdf(700 * KB)), ("b.pdf", pdf(700 * KB))), 413, "FILES_TOO_LARGE"),
        ((("a.pdf", pdf(1100 * KB)),), 413, "FILE_TOO_LARGE"),
        ((("invoice.pdf", EXE + b"\x00" * (300 * KB)),), 415, "FILE_TYPE"),
    ],
    ids=["total", "one-file", "type"],
)
def test_a_refused_file_past_the_memory_spool_leaves_nothing(
    make_app, relay, database_url, sent, status, code
):
    """Files larger than the in-memory spool are on disk when refused: the
    temporary files are closed (gone) and nothing reaches the tables."""
    app = make_app(
        relay.env(
            ALLOWED_ORIGINS=SITE,
            DATABASE_URL=database_url,
            ATTACHMENTS_MAX_FILES="3",
            ATTACHMENTS_MAX_FILE_SIZE="1MB",
            ATTACHMENTS_MAX_TOTAL_SIZE="1MB",
        )
    )
    client = app.test_client()
    answer = post(client, {**FIELDS, "attachment": files(*sent)}, headers=JSON)
    assert answer.status_code == status, answer.json
    assert [e["code"] for e in answer.json["errors"]] == [code]
    assert counts(app) == (0, 0, 0)
    assert open_temp_files(app) == []
    assert deliver(app) == 0 and relay.received == []


def test_a_form_of_images_refuses_a_pdf(make_app, relay):
    app = make_app(
        relay.env(
            ALLOWED_ORIGINS=SITE, ATTACHMENTS_MAX_FILES="1", ATTACHMENTS_TYPES="image/*"
        )
    )
    client = app.test_client()
    refused = post(client, {**FIELDS, "f": files(("a.pdf", pdf(300)))}, headers=JSON)
    assert refused.status_code == 415
    assert counts(app) == (0, 0, 0)
    png = PNG_HEAD + b"\x00" * 100
    taken = post(client, {**FIELDS, "f": files(("a.png", png))}, headers=JSON)
    assert taken.status_code == 200
    assert counts(app) == (1, 1, 1)


def test_files_are_stored_in_chunks_with_the_row(files_app):
    client = files_app.test_client()
    data = [pdf(1500), "héllo wörld\n".encode()]
    sent = files(("../../Lebenslauf\u202e.pdf", data[0]), ("notes.txt", data[1]))
    answer = post(client, {**FIELDS, "attachment": sent}, headers=JSON)
    assert answer.status_code == 200
    ledger = files_app.extensions["formpost"].ledger
    (row,) = ledger.rows()
    assert row.file_count == 2
    stored = ledger.files(row.id)
    assert [(f.filename, f.content_type, f.size) for f in stored] == [
        ("Lebenslauf.pdf", "application/pdf", 1500),
        ("notes.txt", "text/plain", len(data[1])),
    ]
    assert [b"".join(ledger.file_bytes(f.id)) for f in stored] == data


def test_a_file_larger_than_a_chunk_comes_back_whole(make_app, relay, database_url):
    app = make_app(
        relay.env(
            ALLOWED_ORIGINS=SITE,
            DATABASE_URL=database_url,
            ATTACHMENTS_MAX_FILES="1",
            ATTACHMENTS_MAX_FILE_SIZE="2MB",
        )
    )
    data = pdf(700 * KB) + os.urandom(300 * KB)
    answer = post(
        app.test_client(), {**FIELDS, "f": files(("big.pdf", data))}, headers=JSON
    )
    assert answer.status_code == 200
    ledger = app.extensions["formpost"].ledger
    (stored,) = ledger.files(ledger.rows()[0].id)
    assert b"".join(ledger.file_bytes(stored.id)) == data
    assert counts(app) == (1, 1, 4)  # 256 kB chunks


def _break_chunk_inserts(app: Flask) -> None:
    """Make the database refuse file chunks, as a full disk would."""
    engine = app.extensions["formpost"].ledger.engine
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER disk_full BEFORE INSERT ON attachment_chunks "
                    "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION full_disk() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file: No space left'; "
                    "END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER disk_full BEFORE INSERT ON attachment_chunks "
                    "FOR EACH ROW EXECUTE FUNCTION full_disk()"
                )
            )


def test_a_failure_while_storing_files_leaves_nothing(make_app, relay, database_url):
    app = make_app(
        relay.env(
            ALLOWED_ORIGINS=SITE,
            DATABASE_URL=database_url,
            ATTACHMENTS_MAX_FILES="2",
            ATTACHMENTS_MAX_FILE_SIZE="1MB",
        )
    )
    _break_chunk_inserts(app)
    client = app.test_client()
    before = open_temp_files(app)
    # Past the in-memory spool: both files are on disk while the post is read.
    sent = files(("a.pdf", pdf(600 * KB)), ("b.pdf", pdf(300 * KB)))
    answer = post(client, {**FIELDS, "attachment": sent}, headers=JSON)
    assert answer.status_code == 503
    assert answer.json["ok"] is False
    assert counts(app) == (0, 0, 0)
    assert os.listdir(os.path.join(app.instance_path, "uploads")) == []
    assert open_temp_files(app) == before == []


def test_the_text_stays_within_max_content_length_beside_files(files_app):
    """Files allow a larger body; a huge text field is still refused (memory)."""
    client = files_app.test_client()
    big = {
        **FIELDS,
        "message": "x" * (70 * KB),
        "attachment": files(("a.pdf", pdf(100))),
    }
    answer = post(client, big, headers=JSON)
    assert answer.status_code == 413
    assert answer.json["errors"][0]["code"] == "TOO_LARGE"
    assert counts(files_app) == (0, 0, 0)


def test_a_named_form_takes_files_as_its_table_says(make_app, relay, tmp_path):
    forms = tmp_path / "forms.toml"
    forms.write_text(
        "[forms.jobs]\n"
        'recipients = ["sales"]\n'
        f'allowed_origins = ["{SITE}"]\n'
        'attachments = { max_files = 1, max_file_size = "1kB", '
        'types = ["application/pdf"] }\n'
    )
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE, FORMS_FILE=str(forms)))
    client = app.test_client()
    taken = post(
        client,
        {**FIELDS, "cv": files(("cv.pdf", pdf(1024)))},
        path="/f/jobs",
        headers=JSON,
    )
    assert taken.status_code == 200
    over = post(
        client,
        {**FIELDS, "cv": files(("cv.pdf", pdf(1025)))},
        path="/f/jobs",
        headers=JSON,
    )
    assert over.json["errors"][0]["code"] == "FILE_TOO_LARGE"
    # The default form (no ATTACHMENTS_MAX_FILES) still takes none.
    refused = post(client, {**FIELDS, "cv": files(("cv.pdf", pdf(100)))}, headers=JSON)
    assert refused.json["errors"][0]["code"] == "FILES_NOT_ACCEPTED"
