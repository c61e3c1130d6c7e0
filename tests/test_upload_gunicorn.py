"""A file posted to real gunicorn: 415 naming the field, before the size limit.

The body is read as it streams in; the answer comes once the file part's
headers arrive, while the client may still be sending, so this checks over a
real socket that the client reads the answer (no reset) and nothing is
stored.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import (
    gunicorn_cmd,
    ledger_rows,
    server_env,
    start,
    stop,
    wait_for_port,
)

pytestmark = pytest.mark.slow
ORIGIN = "https://www.example.com"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """gunicorn alone (no worker needed: nothing may be stored)."""
    env = server_env(tmp_path / "instance")
    database = f"sqlite:///{tmp_path}/ledger.db"
    env.update(ALLOWED_ORIGINS=ORIGIN, DATABASE_URL=database)
    log_path = tmp_path / "gunicorn.log"
    proc: subprocess.Popen = start(
        gunicorn_cmd(
            tmp_path / "access.log", "--bind", "127.0.0.1:0", "--workers", "1"
        ),
        env,
        log_path,
    )
    try:
        yield wait_for_port(proc, log_path), database
    finally:
        stop(proc)


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


@pytest.mark.parametrize("size", [100_000, 1_000_000], ids=["100kB", "1MB"])
def test_a_large_file_is_415_naming_its_field(served, size):
    port, database = served
    content_type, body = multipart(
        [
            ("email", None, b"ada@example.net"),
            ("message", None, b"See attached."),
            ("attachment", "cv.pdf", b"%PDF-1.4\n" + b"x" * size),
        ]
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        "/f/default",
        body=body,
        headers={
            "Origin": ORIGIN,
            "Accept": "application/json",
            "Content-Type": content_type,
        },
    )
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 415
    assert answer["errors"] == [
        {
            "field": "attachment",
            "code": "FILES_NOT_ACCEPTED",
            "message": "Files are not accepted by this form. Remove the file "
            "and send the form again.",
        }
    ]
    assert ledger_rows(database) == []


def test_a_large_text_post_is_413_with_the_limit(served):
    port, database = served
    content_type, body = multipart([("message", None, b"x" * 100_000)])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST",
        "/f/default",
        body=body,
        headers={"Origin": ORIGIN, "Content-Type": content_type},
    )
    response = conn.getresponse()
    page = response.read().decode()
    conn.close()
    assert response.status == 413
    assert "The whole post is larger than 64 kB" in page
    assert ledger_rows(database) == []
