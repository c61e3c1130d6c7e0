"""uploads: the attachments settings, clean file names, type by content, limits."""

from __future__ import annotations

import pytest

from app.errors import Rejected
from app.formdefs import parse_forms
from app.uploads import (
    AttachmentSettings,
    Receiver,
    Uploads,
    clean_filename,
    detect_type,
)
from config import ConfigError, load_config

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 64
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 40


# -- file names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("cv.pdf", "cv.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ada\\cv.pdf", "cv.pdf"),
        ("..", "attachment"),
        ("", "attachment"),
        ("   ", "attachment"),
        ("a\x00b\x1fc\x7f.pdf", "abc.pdf"),
        ("line\r\nbreak.txt", "linebreak.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("\u2066evil\u2069.png", "evil.png"),
        ("\u200fname.txt", "name.txt"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("LPT1.pdf", "_LPT1.pdf"),
        ("nul.tar.gz", "_nul.tar.gz"),
        ("console.txt", "console.txt"),
        ('a<b>c:d"e|f?g*h.pdf', "a_b_c_d_e_f_g_h.pdf"),
        (".hidden", "hidden"),
        ("trailing. . ", "trailing"),
        ("Lebenslauf Müller.pdf", "Lebenslauf Müller.pdf"),
        ("履歴書.pdf", "履歴書.pdf"),
        ("سيرة ذاتية.pdf", "سيرة ذاتية.pdf"),
        ("cafe\u0301.png", "café.png"),
        ("snap 🐱.png", "snap 🐱.png"),
    ],
)
def test_hostile_and_foreign_names_are_cleaned_and_kept_readable(raw, clean):
    assert clean_filename(raw) == clean


@pytest.mark.parametrize("stem", ["a" * 300, "ü" * 300, "履" * 300, "🐱" * 100])
def test_long_names_are_cut_to_200_bytes_keeping_the_extension(stem):
    name = clean_filename(f"{stem}.pdf")
    assert name.endswith(".pdf")
    assert len(name.encode("utf-8")) <= 200
    assert name.encode("utf-8").decode("utf-8") == name  # no split character


def test_a_long_extension_is_not_kept_at_the_cost_of_the_name():
    name = clean_filename("cv." + "x" * 300)
    assert len(name.encode("utf-8")) <= 200
    assert name.startswith("cv.")


# -- type by content --------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "is_text", "found"),
    [
        (PDF, False, "application/pdf"),
        (PNG, False, "image/png"),
        (JPEG, False, "image/jpeg"),
        (EXE, False, "application/octet-stream"),
        (b"Hello, \xc3\xa9t\xc3\xa9\n", True, "text/plain"),
        (b"\x00\x01\x02\x03", False, "application/octet-stream"),
        (b"", True, "application/octet-stream"),
    ],
)
def test_type_is_found_from_the_bytes(head, is_text, found):
    assert detect_type(head, is_text) == found


@pytest.mark.parametrize(
    ("types", "media", "allowed"),
    [
        (("image/*",), "image/png", True),
        (("image/*",), "application/pdf", False),
        (("application/pdf",), "application/pdf", True),
        (("application/pdf",), "application/octet-stream", False),
    ],
)
def test_families_allow_every_type_of_their_kind(types, media, allowed):
    assert AttachmentSettings(types=types).allows(media) is allowed


def receive(settings, uploads, name, data, chunk=7):
    receiver = Receiver(settings, "file", name, uploads)
    for start in range(0, len(data), chunk):
        receiver.write(data[start : start + chunk])
    return receiver.finish()


def test_a_spoofed_pdf_that_is_an_executable_is_refused():
    with pytest.raises(Rejected) as refused:
        receive(AttachmentSettings(), Uploads(), "invoice.pdf", EXE)
    assert refused.value.status == 415
    assert refused.value.codes == {"file": "FILE_TYPE"}
    assert refused.value.files == {"file": "invoice.pdf"}
    assert "invoice.pdf" in refused.value.errors["file"]


def test_text_split_inside_a_character_is_still_text():
    text = "Grüße, 世界\n".encode() * 50
    upload = receive(AttachmentSettings(), Uploads(), "notes.txt", text, chunk=5)
    assert upload.content_type == "text/plain"
    assert b"".join(upload.chunks(64)) == text


def test_latin1_text_is_not_utf8_and_is_refused_as_octet_stream():
    with pytest.raises(Rejected) as refused:
        receive(AttachmentSettings(), Uploads(), "notes.txt", b"caf\xe9 " * 10)
    assert "application/octet-stream" in refused.value.errors["file"]


# -- settings ------------------------------------------------------------------------


def parse(attachments):
    tables = {"contact": {"recipients": ["support"], "attachments": attachments}}
    return parse_forms({"forms": tables}, ("support",), (), "forms.toml")["contact"]


def test_the_issue_example_parses():
    form = parse(
        {
            "max_files": 3,
            "max_file_size": "10MB",
            "max_total_size": "20MB",
            "types": ["application/pdf", "image/png", "image/jpeg", "text/plain"],
        }
    )
    assert form.attachments == AttachmentSettings(
        3, 10 * 1024 * 1024, 20 * 1024 * 1024, AttachmentSettings().types
    )


def test_a_form_without_attachments_takes_no_files():
    tables = {"contact": {"recipients": ["support"]}}
    form = parse_forms({"forms": tables}, ("support",), (), "forms.toml")["contact"]
    assert form.attachments is None


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"max_files": 0}, "max_files"),
        ({"max_files": 21}, "max_files"),
        ({"max_files": "3"}, "max_files"),
        ({"max_files": True}, "max_files"),
        ({"max_file_size": "10"}, "max_file_size"),
        ({"max_file_size": 10485760}, "max_file_size"),
        ({"max_file_size": "10GB"}, "max_file_size"),
        ({"max_file_size": "101MB"}, "max_file_size"),
        ({"max_file_size": "0kB"}, "max_file_size"),
        ({"max_total_size": "1MB"}, "max_total_size"),
        ({"types": ["pdf"]}, "types"),
        ({"types": ["image/"]}, "types"),
        ({"types": ["*/*"]}, "types"),
        ({"types": ["executable/exe"]}, "types"),
        ({"types": []}, "types"),
        ({"types": "image/*"}, "types"),
        ({"max_size": "1MB"}, "max_size"),
    ],
)
def test_bad_settings_stop_start_up_naming_form_and_key(table, key):
    with pytest.raises(ConfigError) as error:
        parse(table)
    message = str(error.value)
    assert "forms.toml" in message and "'contact'" in message
    assert key in message


def test_sizes_take_kb_and_mb_in_binary_units():
    form = parse({"max_file_size": "512kB", "max_total_size": "1MB"})
    assert form.attachments.max_file_size == 512 * 1024
    assert form.attachments.max_total_size == 1024 * 1024


ENV = {"MAIL_FROM": "Formpost <formpost@example.com>", "MAIL_RECIPIENTS": "a=a@b.c"}


def test_the_default_form_takes_files_only_when_asked():
    assert load_config(ENV)["ATTACHMENTS_MAX_FILES"] == 0
    config = load_config(
        {**ENV, "ATTACHMENTS_MAX_FILES": "2", "ATTACHMENTS_TYPES": "image/*"}
    )
    assert config["ATTACHMENTS_MAX_FILES"] == 2
    assert config["ATTACHMENTS_TYPES"] == ("image/*",)
    assert config["ATTACHMENTS_MAX_FILE_SIZE"] == 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ATTACHMENTS_MAX_FILES", "lots"),
        ("ATTACHMENTS_MAX_FILE_SIZE", "ten"),
        ("ATTACHMENTS_MAX_TOTAL_SIZE", "1kB"),
        ("ATTACHMENTS_TYPES", "pdf"),
        ("MAIL_MAX_SIZE", "-1"),
        ("PUBLIC_URL", "forms.example.com/x"),
        ("CLAMD_SOCKET", "relative/clamd.sock"),
        ("CLAMD_PORT", "0"),
        ("CLAMD_TIMEOUT", "never"),
    ],
)
def test_bad_environment_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_config({**ENV, name: value})


def test_clamd_by_socket_or_host_not_both():
    with pytest.raises(ConfigError, match="CLAMD_SOCKET or CLAMD_HOST"):
        load_config({**ENV, "CLAMD_SOCKET": "/run/c.sock", "CLAMD_HOST": "localhost"})
