"""Real gunicorn and a real worker: three verdicts, one answer, one delivery.

An accepted post, a quarantined one (a blocked word) and a honeypot post get
the same answer byte for byte apart from the receipt, as JSON and as a
redirect; only the accepted one reaches the aiosmtpd relay.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
from pathlib import Path

import pytest

from .processes import gunicorn_and_worker, ledger_rows, server_env, wait_until

pytestmark = pytest.mark.slow
SITE = "https://www.example.com"
RECEIPT = re.compile(rb"[A-Z0-9]{4}-[A-Z0-9]{4}")
GOOD = {"email": "ada@example.net", "message": "A question about engines."}
POSTS = {
    "accept": GOOD,
    "quarantine": {**GOOD, "message": "Cheap casino chips, write back today."},
    "drop": {**GOOD, "_gotcha": "on"},
}


def send(port: int, fields: dict[str, str], accept: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/f/default",
            body=urllib.parse.urlencode(fields),
            headers={
                "Origin": SITE,
                "Accept": accept,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        resp = conn.getresponse()
        body = resp.read()
        shape = (
            resp.status,
            resp.getheader("Content-Type"),
            RECEIPT.sub(b"R", resp.getheader("Location", "").encode()),
            RECEIPT.sub(b"R", body),
        )
        return shape
    finally:
        conn.close()


def test_three_verdicts_one_answer_and_only_the_accepted_is_delivered(
    tmp_path: Path, relay, database_url: str
):
    database = database_url
    env = server_env(tmp_path / "instance")
    env.update(relay.env())
    env.update(
        DATABASE_URL=database,
        ALLOWED_ORIGINS=SITE,
        SPAM_BLOCKED_WORDS="casino",
        RATE_LIMIT="off",
        MIN_FILL_SECONDS="0",
        DEDUPE_WINDOW="0",
        OUTBOX_POLL_INTERVAL="0.1",
    )
    with gunicorn_and_worker(
        env, tmp_path, "--bind", "127.0.0.1:0", "--workers", "1"
    ) as served:
        for accept in ("application/json", "text/html"):
            shapes = {send(served.port, POSTS[v], accept) for v in POSTS}
            assert len(shapes) == 1, shapes
        wait_until(lambda: len(relay.received) >= 2, 15, "two deliveries")
        # Time for the worker to (wrongly) send more; it must not.
        time.sleep(1.0)
        assert len(relay.received) == 2
    for got in relay.received:
        assert b"engines" in got.data
        assert b"casino" not in got.data
    states = sorted(r.state for r in ledger_rows(database))
    assert states == ["dropped", "dropped", "sent", "sent", "spam", "spam"]
