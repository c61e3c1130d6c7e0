"""--send-test: a real message through the queue and a worker."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from app.doctor import FAIL, PASS, Doctor

from ..helpers import deliver
from .reports import (
    TIMEOUT,
    assert_fix,
)


@contextmanager
def delivering(app: Flask) -> Iterator[None]:
    """A delivery worker for the app's queue, in a thread, for the block."""
    done = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        while not done.is_set():
            try:
                deliver(app)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                return
            done.wait(0.05)

    thread = threading.Thread(target=loop, name="test-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=15)
    assert not errors, errors


def test_send_test_with_a_worker(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    with delivering(app):
        doctor.send_test("sales", wait=10)

    (sent,) = doctor.report.checks
    assert (sent.name, sent.status) == ("send test", PASS)
    (row,) = app.extensions["formpost"].ledger.rows()
    assert (row.form_id, row.recipient_alias, row.state) == ("doctor", "sales", "sent")
    assert sent.detail.startswith(f"receipt {row.receipt}: 250")
    (got,) = relay.received
    assert got.rcpt_tos == ["sales@example.com"]
    assert got.message["Subject"] == "Formpost test message"
    assert got.mail_from == "forms@formpost.test"


def test_send_test_without_a_worker(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    started = time.monotonic()
    doctor.send_test("support", wait=1)

    assert time.monotonic() - started >= 1
    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert re.fullmatch(r"receipt \S+ still pending after 1 s", sent.detail)
    assert_fix(sent, "worker")
    assert relay.received == []
    (row,) = app.extensions["formpost"].ledger.rows()
    assert row.state == "pending"  # queued: a worker started later sends it


def test_send_test_refused_by_the_relay(relay, make_app, local_dns):
    relay.refuse_recipient("sales@example.com", "550 5.1.1 no such user")
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    with delivering(app):
        doctor.send_test("sales", wait=10)

    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert "550" in sent.detail and "no such user" in sent.detail
    assert sent.fix  # says what to do
    assert relay.received == []


def test_send_test_to_an_unknown_alias(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    doctor.send_test("nobody", wait=1)

    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert "'nobody'" in sent.detail
    assert_fix(sent, "sales", "support")
    assert app.extensions["formpost"].ledger.rows() == []  # nothing queued


def test_send_test_with_no_wait(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    doctor.send_test("sales", wait=0)

    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert "still pending" in sent.detail
    assert_fix(sent, "worker")
