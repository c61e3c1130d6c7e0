"""The hosted form with files: the input is shown only when the default form
takes files; a refused file names the file and the rule and keeps the text."""

from __future__ import annotations

import io
from html import unescape

import pytest

from .helpers import counts, deliver, ledger_of, open_temp_files, post_form

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + b"0" * 2000
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 200
FILES = {"ATTACHMENTS_MAX_FILES": "2", "ATTACHMENTS_MAX_FILE_SIZE": "100kB"}


@pytest.fixture
def files_app(make_app, relay):
    return make_app(relay.env(**FILES))


def test_no_file_input_unless_the_default_form_takes_files(app):
    page = app.test_client().get("/").get_data(as_text=True)
    assert 'type="file"' not in page and "multipart/form-data" not in page


def test_the_file_input_says_the_limits(files_app):
    page = unescape(files_app.test_client().get("/").get_data(as_text=True))
    assert 'enctype="multipart/form-data"' in page
    assert 'type="file" id="attachment" name="attachment" multiple' in page
    assert "Up to 2 files, 100 kB each, 20 MB together" in page


def test_a_file_posted_from_the_hosted_form_is_stored_and_sent(files_app, relay):
    client = files_app.test_client()
    answer = post_form(client, attachment=(io.BytesIO(PDF), "Angebot.pdf"))
    assert answer.status_code == 303
    (row,) = ledger_of(files_app).rows()
    (stored,) = ledger_of(files_app).files(row.id)
    assert (stored.filename, stored.content_type) == ("Angebot.pdf", "application/pdf")
    deliver(files_app)
    (got,) = relay.received
    (part,) = got.message.iter_attachments()
    assert part.get_filename() == "Angebot.pdf" and part.get_content() == PDF


def test_a_file_larger_than_the_text_limit_passes_the_csrf_check(files_app):
    big = PDF + b"1" * (90 * 1024)  # over MAX_CONTENT_LENGTH (64 kB)
    answer = post_form(files_app.test_client(), attachment=(io.BytesIO(big), "big.pdf"))
    assert answer.status_code == 303


@pytest.mark.parametrize(
    ("files", "status", "said"),
    [
        ([(EXE, "invoice.pdf")], 415, "“invoice.pdf” is not a file type"),
        ([(PDF + b"0" * 100 * 1024, "huge.pdf")], 413, "“huge.pdf” is larger than"),
        (
            [(PDF, "a.pdf"), (PDF, "b.pdf"), (PDF, "c.pdf")],
            413,
            "“c.pdf” is one file too many",
        ),
    ],
)
def test_a_refused_file_is_named_and_the_text_is_kept(files_app, files, status, said):
    client = files_app.test_client()
    answer = post_form(
        client,
        message="My long message, typed with care.",
        attachment=[(io.BytesIO(data), name) for data, name in files],
    )
    page = unescape(answer.get_data(as_text=True))
    assert answer.status_code == status
    assert said in page
    assert "choose your files again" in page
    assert "My long message, typed with care." in page
    assert 'value="Ada Lovelace"' in page
    assert ledger_of(files_app).rows() == []
    assert counts(files_app) == (0, 0, 0)
    assert open_temp_files(files_app) == []


def test_without_files_the_hosted_form_refuses_nothing_new(files_app):
    answer = post_form(files_app.test_client())
    assert answer.status_code == 303
    (row,) = ledger_of(files_app).rows()
    assert row.file_count == 0
