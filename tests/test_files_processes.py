"""Files through Formpost's real processes: gunicorn takes the multipart post
(sent by `requests`), a separate delivery worker process mails the files,
on SQLite and PostgreSQL (the processes share only the database)."""

from __future__ import annotations

import os

import pytest
import requests

from .processes import gunicorn_and_worker, server_env, wait_until

pytestmark = pytest.mark.slow

ORIGIN = "https://www.example.com"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + os.urandom(300 * 1024)
JSON = {"Origin": ORIGIN, "Accept": "application/json"}


def test_gunicorn_takes_files_and_another_process_sends_them(
    make_relay, database_url, tmp_path
):
    relay = make_relay()
    env = server_env(tmp_path / "instance")
    env.update(relay.env(ALLOWED_ORIGINS=ORIGIN, DATABASE_URL=database_url))
    env.update(
        ATTACHMENTS_MAX_FILES="2",
        ATTACHMENTS_MAX_FILE_SIZE="1MB",
        ATTACHMENTS_MAX_TOTAL_SIZE="1MB",
    )
    with gunicorn_and_worker(env, tmp_path, "--bind", "127.0.0.1:0") as served:
        url = f"http://127.0.0.1:{served.port}/f/default"
        files = [
            ("cv", ("Lebenslauf Zoë.pdf", PDF, "application/pdf")),
            ("cv", ("notes.txt", "Grüße\n".encode(), "text/plain")),
        ]
        answer = requests.post(
            url, data={"email": "zoe@example.net"}, files=files, headers=JSON
        )
        assert answer.status_code == 200, answer.text
        wait_until(lambda: relay.received, 20, "the worker to send the message")

        # Over a limit: refused while streaming, naming the file and rule.
        big = [("cv", ("big.pdf", PDF * 4, "application/pdf"))]
        refused = requests.post(
            url, data={"email": "zoe@example.net"}, files=big, headers=JSON
        )
        assert refused.status_code == 413
        (error,) = refused.json()["errors"]
        assert (error["code"], error["file"]) == ("FILE_TOO_LARGE", "big.pdf")
    (got,) = relay.received
    attached = [
        (p.get_filename(), p.get_content()) for p in got.message.iter_attachments()
    ]
    assert attached == [("Lebenslauf Zoë.pdf", PDF), ("notes.txt", "Grüße\n")]
