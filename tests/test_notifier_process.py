"""A real worker process killed while a webhook receiver stalls loses nothing.

After SIGKILL the deliveries it held stay `sending` under their lease; a
second worker takes them over once it runs out and delivers every channel,
the webhook with the same webhook-id as the attempt that was cut off.
"""

from __future__ import annotations

import signal

import pytest

from .helpers import ledger_of
from .notifykit import Receiver, forms_toml
from .test_notifier import VISITOR, post
from .test_worker_process import open_ledger, start_worker, stop, wait_for, worker_env

pytestmark = pytest.mark.slow


@pytest.fixture
def receivers():
    made = [Receiver(), Receiver()]
    yield made
    for r in made:
        r.stop()


def test_a_worker_killed_mid_webhook_loses_no_delivery(
    make_app, relay, tmp_path, database_url, receivers
):
    hook, chat = receivers
    forms = tmp_path / "forms.toml"
    forms.write_text(
        forms_toml(webhook=hook.url, apprise=f"json://127.0.0.1:{chat.port}/")
    )
    settings = {
        "FORMS_FILE": str(forms),
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_TIMEOUT": "3",
        "SMTP_TIMEOUT": "3",
        "OUTBOX_LEASE": "4",
    }
    app = make_app(relay.env(DATABASE_URL=database_url, **settings))
    hook.answer("stall")
    receipt = post(app)
    ledger = open_ledger(database_url)
    env = worker_env(relay, database_url, tmp_path, **settings)

    first = start_worker(env, tmp_path / "first.log")
    try:
        assert hook.stalled.wait(30), "the first worker never called the webhook"
    finally:
        stop(first, signal.SIGKILL)
    webhook = {d.kind: d for d in ledger.deliveries(receipt)}["webhook"]
    assert webhook.state == "sending" and webhook.attempts == 1

    hook.release.set()  # from now on the receiver answers at once
    second = start_worker(env, tmp_path / "second.log")
    try:
        wait_for(
            lambda: (
                {d.state for d in ledger.deliveries(receipt)} == {"sent"}
                and ledger.row(receipt).state == "sent"
            ),
            40,
            "every channel delivered",
        )
    finally:
        assert stop(second) == 0
    kinds = {d.kind: d for d in ledger.deliveries(receipt)}
    assert set(kinds) == {"webhook", "apprise", "autoresponse"}
    assert kinds["webhook"].attempts == 2
    calls = hook.received()
    assert len(calls) == 2
    assert {c.headers["webhook-id"] for c in calls} == {kinds["webhook"].webhook_id}
    assert all(c.verified is not None for c in calls)
    assert len(chat.received()) >= 1
    to_visitor = [r for r in relay.received if r.rcpt_tos == [VISITOR]]
    assert len(to_visitor) >= 1
    assert ledger_of(app).row(receipt).state == "sent"
    output = (tmp_path / "second.log").read_text()
    assert "Traceback" not in output
