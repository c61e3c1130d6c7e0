"""Helpers the tests share: posting like a browser, running a worker, the ledger.

Plain functions (fixtures live in conftest.py); import them from here.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select, update

from app.ledger import Claimed, Ledger, submissions
from app.ledger.schema import attachment_chunks, attachments
from app.message import Envelope
from app.services import EXTENSION, Services
from app.spam import Reason, Verdict

from .fakeclock import FakeClock

PG_URL = os.environ.get(
    "FORMPOST_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_or_skip() -> None:
    """Skip the test, saying why, when PostgreSQL does not answer."""
    import psycopg

    try:
        psycopg.connect(
            PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3
        ).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}".strip())


CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
FORM_TOKEN_RE = re.compile(r'name="form_token" type="hidden" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/") -> str:
    """GET the form like a browser and return the CSRF token it carries."""
    page = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(page)
    if match is None:
        raise AssertionError("form has no CSRF token")
    return match.group(1)


def services_of(app: Flask) -> Services:
    """The app's services, as create_app built them."""
    return app.extensions[EXTENSION]


def ledger_of(app: Flask) -> Ledger:
    """The app's ledger, as create_app built it."""
    return services_of(app).ledger


def use_fake_clock(app: Flask) -> FakeClock:
    """Give the app's ledger (and so its workers) a clock the test moves."""
    clock = FakeClock()
    ledger_of(app).clock = clock
    return clock


def deliver(app: Flask, clock=None) -> int:
    """Run a worker over the app's queue until nothing is due; return rows tried."""
    worker = services_of(app).worker()
    if clock is not None:
        worker.clock = clock
    total = 0
    while count := worker.run_once():
        total += count
    return total


def post_form(client: FlaskClient, token: str | None = None, **fields: str):
    """POST the hosted form with a valid token unless one is given."""
    data = {
        "recipient": "sales",
        "name": "Ada Lovelace",
        "email": "ada@example.net",
        "subject": "Hello",
        "message": "A question about engines.",
    }
    page = client.get("/").get_data(as_text=True)
    data["csrf_token"] = CSRF_RE.search(page).group(1)
    data["form_token"] = FORM_TOKEN_RE.search(page).group(1)
    data.update(fields)
    if token is not None:
        data["csrf_token"] = token
    return client.post("/", data=data)


def mark_sent(ledger: Ledger, row: Claimed, reply: str = "250 accepted") -> bool:
    """Record at once that the relay accepted a claimed row; say if the claim held."""
    return ledger.settle([ledger.sent(row, reply)])[0]


def mark_retry(
    ledger: Ledger, row: Claimed, kind: str, reply: str, delay: float
) -> bool:
    """Put a claimed row back in the queue at once, due after `delay` seconds."""
    return ledger.settle([ledger.retry(row, kind, reply, delay)])[0]


def mark_failed(ledger: Ledger, row: Claimed, kind: str, reply: str) -> bool:
    """Dead-letter a claimed row at once, keeping the relay's reply."""
    return ledger.settle([ledger.failed(row, kind, reply)])[0]


def fast_hashing(app: Flask) -> None:
    """Hash owners' passwords with argon2id at its cheapest, to keep tests fast.

    Still real argon2id (the production parameters are tested on their own):
    only the memory and time costs are lowered.
    """
    from argon2 import PasswordHasher

    services_of(app).owners.hasher = PasswordHasher(
        time_cost=1, memory_cost=8, parallelism=1
    )


def envelope(n: int = 0) -> Envelope:
    """A small composed message numbered `n` (its Message-ID is unique per n)."""
    return Envelope(
        mail_from="forms@formpost.test",
        recipients=("sales@example.com",),
        data=f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
        message_id=f"<{n}@formpost.test>",
    )


def posts_in_one_batch(ledger: Ledger, posts: list) -> tuple[list, int]:
    """Run `posts` (callables) at once, the first leading alone, the rest queued.

    The first post's transaction is held at checkout until every other post
    waits behind it; they then go in one batch. Return their results (a
    receipt or the exception) and how many transactions the batch took.
    """
    transactions = []
    leading = threading.Event()
    release = threading.Event()

    def hold(*_):
        transactions.append(1)
        if len(transactions) == 1:
            leading.set()
            release.wait(10)

    event.listen(ledger.engine, "checkout", hold)
    results = [None] * len(posts)

    def run(i):
        try:
            results[i] = posts[i]()
        except Exception as exc:  # the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(posts))]
    threads[0].start()
    assert leading.wait(10)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while len(ledger._commits._waiting) < len(posts) - 1:
        assert time.monotonic() < deadline, "the posts did not queue up"
        time.sleep(0.005)
    release.set()
    for t in threads:
        t.join(10)
    event.remove(ledger.engine, "checkout", hold)
    return results, len(transactions)


def spam_verdict(name: str = "quarantine") -> Verdict:
    """A verdict with reasons from two layers, as the gate would give one."""
    return Verdict(
        name,  # type: ignore[arg-type]
        7.5,
        (
            Reason("rules", "links", "7 links", "at most 2", 5.0),
            Reason("altcha", "altcha_missing", "no proof", "required", 2.5),
        ),
    )


def store_verdict(
    ledger: Ledger,
    receipt: str,
    verdict: Verdict | None = None,
    state: str = "spam",
    keep_message: bool = True,
) -> None:
    """Give a stored row a verdict and a state, as the accept path stores them.

    The row leaves the backlog counter (it was stored pending); a dropped
    row without `keep_message` is a tombstone with no message bytes.
    """
    verdict = verdict or spam_verdict("drop" if state == "dropped" else "quarantine")
    values: dict = {"state": state, "verdict": verdict.to_json()}
    if not keep_message:
        values["raw"] = b""
    with ledger.engine.begin() as conn:
        conn.execute(
            update(submissions).where(submissions.c.receipt == receipt).values(**values)
        )
        if state not in ("pending", "sending"):
            conn.exec_driver_sql(
                "UPDATE ledger_counters SET value = value - 1 WHERE name = 'backlog'"
            )


def counts(app: Flask) -> tuple[int, int, int]:
    engine = app.extensions["formpost"].ledger.engine
    with engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table)).scalar()
            for table in (submissions, attachments, attachment_chunks)
        )


def open_temp_files(app: Flask) -> list[str]:
    """Anonymous temporary files in the app's spool this process holds open.

    (The test client spools large bodies it sends to /tmp: not ours.)
    """
    spool = os.path.join(app.instance_path, "uploads")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(spool):
            found.append(target)
    return found
