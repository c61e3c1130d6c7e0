"""A submission's deliveries beyond the email, as operators see and retry them.

The console's "Other channels" section and its Retry button, the API's
`deliveries` field and retry, `outbox deliveries` and `outbox retry`; the
ledger side (app/ledger/deliveries.py) on both databases.
"""

from __future__ import annotations

import pytest

from app.ledger import SCHEMA_VERSION, Channel, Ledger, make_engine, migrate
from app.ledger.schema import MIGRATIONS, schema_version, submissions
from app.ledger.tokens import TokenStore

from .consolekit import log_in, text_of, token, with_owner
from .helpers import (
    deliver,
    envelope,
    ledger_of,
    mark_sent,
    posts_in_one_batch,
    services_of,
)
from .notifykit import Receiver, forms_toml
from .test_notifier import notify, notify_app, post, states


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def gone(make_app, relay, tmp_path, database_url, receiver):
    """An app whose one webhook answered 410 to the first submission."""
    toml = forms_toml(webhook=receiver.url, autoresponse=False)
    app, clock = notify_app(make_app, relay, tmp_path, toml, DATABASE_URL=database_url)
    receiver.answer("gone")
    receipt = post(app)
    notify(app, clock)
    assert states(app, receipt) == {"webhook": "disabled"}
    return app, clock, receipt


def test_the_console_shows_the_disabled_endpoint_and_retries_it(gone, receiver):
    app, clock, receipt = gone
    client = with_owner(app).test_client()
    log_in(client)
    page = client.get(f"/admin/s/{receipt}").get_data(as_text=True)
    text = text_of(page)
    assert "Other channels" in text
    assert f"webhook http://127.0.0.1:{receiver.port}" in text
    assert "disabled" in text and "gone for good" in text
    assert receiver.url not in page, "only scheme and host are shown"
    [delivery] = ledger_of(app).deliveries(receipt)
    answer = client.post(
        f"/admin/s/{receipt}/deliveries/{delivery.id}/retry",
        data={"csrf_token": token(client, f"/admin/s/{receipt}")},
    )
    assert answer.status_code == 302
    notify(app, clock)
    assert states(app, receipt) == {"webhook": "sent"}


def test_the_console_retries_only_this_submissions_delivery(gone):
    app, clock, receipt = gone
    other = post(app)
    notify(app, clock)
    [theirs] = ledger_of(app).deliveries(other)
    client = with_owner(app).test_client()
    log_in(client)
    client.post(
        f"/admin/s/{receipt}/deliveries/{theirs.id}/retry",
        data={"csrf_token": token(client, f"/admin/s/{receipt}")},
    )
    assert states(app, other) == {"webhook": "disabled"}


def test_the_console_retry_needs_the_csrf_token(gone):
    app, _clock, receipt = gone
    client = with_owner(app).test_client()
    log_in(client)
    [delivery] = ledger_of(app).deliveries(receipt)
    answer = client.post(f"/admin/s/{receipt}/deliveries/{delivery.id}/retry")
    assert answer.status_code == 400
    assert states(app, receipt) == {"webhook": "disabled"}


def test_the_api_lists_and_retries_deliveries(gone, receiver):
    app, clock, receipt = gone
    ledger = ledger_of(app)
    tokens = TokenStore(ledger.engine, ledger.clock)
    reader = tokens.add("reader", can_write=False)[1]
    writer = tokens.add("writer", can_write=True)[1]
    client = app.test_client()
    got = client.get(
        f"/api/v1/submissions/{receipt}",
        headers={"Authorization": f"Bearer {reader}"},
    ).get_json()
    [delivery] = got["deliveries"]
    assert delivery["kind"] == "webhook" and delivery["state"] == "disabled"
    assert delivery["target"] == f"http://127.0.0.1:{receiver.port}"
    assert "410" in delivery["disabled_reason"]
    assert delivery["webhook_id"].startswith("msg_")

    # The email was sent long ago; the delivery makes the retry worth a 202.
    deliver(app, clock)
    answer = client.post(
        f"/api/v1/submissions/{receipt}/retry",
        headers={"Authorization": f"Bearer {writer}"},
    )
    assert answer.status_code == 202
    assert answer.get_json()["deliveries"][0]["state"] == "pending"
    notify(app, clock)
    assert states(app, receipt) == {"webhook": "sent"}
    again = client.post(
        f"/api/v1/submissions/{receipt}/retry",
        headers={"Authorization": f"Bearer {writer}"},
    )
    assert again.status_code == 409


def test_the_cli_lists_and_retries_deliveries(gone):
    app, clock, receipt = gone
    runner = app.test_cli_runner()
    row = ledger_of(app).row(receipt)
    for ref in (receipt, str(row.id)):
        shown = runner.invoke(args=["outbox", "deliveries", ref])
        assert shown.exit_code == 0, shown.output
        assert "webhook" in shown.output and "disabled" in shown.output
    missing = runner.invoke(args=["outbox", "deliveries", "ZZZZ-ZZZZ"])
    assert missing.exit_code != 0 and "no submission" in missing.output

    status = runner.invoke(args=["outbox", "status"])
    assert "other channels: disabled 1" in status.output
    result = runner.invoke(args=["outbox", "retry", "--all-failed"])
    assert result.exit_code == 0
    assert "requeued 1 delivery" in result.output
    notify(app, clock)
    assert states(app, receipt) == {"webhook": "sent"}


def test_create_deliveries_is_idempotent_and_skips_unknown_rows(ledger):
    channel = Channel("webhook", "t" * 32, "https://crm.example")
    assert ledger.create_deliveries("NONE-NONE", [channel]) == 0
    receipt = ledger.enqueue(
        envelope(1),
        form_id="site",
        alias="sales",
        subject="Hello",
        channels=[channel],
    )
    assert [d.kind for d in ledger.deliveries(receipt)] == ["webhook"]
    assert ledger.create_deliveries(receipt, [channel]) == 0
    other = Channel("apprise", "a" * 32, "tgram://…")
    assert ledger.create_deliveries(receipt, [channel, other]) == 1


def test_purging_a_submission_purges_its_deliveries(ledger, clock):
    channel = Channel("webhook", "t" * 32, "https://crm.example")
    receipt = ledger.enqueue(
        envelope(1), form_id="site", alias="sales", subject="Hi", channels=[channel]
    )
    [row] = ledger.claim(1, 60)
    mark_sent(ledger, row)
    clock.advance(10 * 86400)
    assert ledger.purge_sent(86400) == 1
    with ledger.engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT COUNT(*) FROM deliveries").scalar()
    assert left == 0
    assert ledger.deliveries(receipt) == []


def test_an_erased_submission_is_not_sent_on(make_app, relay, tmp_path, receiver):
    toml = forms_toml(webhook=receiver.url)
    app, clock = notify_app(make_app, relay, tmp_path, toml)
    receipt = post(app)
    assert ledger_of(app).erase([receipt]) == 1
    notify(app, clock)
    assert receiver.received() == []
    for delivery in ledger_of(app).deliveries(receipt):
        assert delivery.state == "failed"
        assert "erased" in delivery.last_error


def test_one_autoresponse_when_posts_share_a_group_commit(ledger):
    once = "20000:" + "d" * 64
    auto = Channel("autoresponse", "a" * 32, "autoresponse", once)

    def store(n: int):
        return lambda: ledger.enqueue(
            envelope(n), form_id="site", alias="sales", subject="Hi", channels=[auto]
        )

    results, transactions = posts_in_one_batch(ledger, [store(n) for n in range(4)])
    assert all(isinstance(r, str) for r in results), results
    assert transactions <= 2
    made = [r for r in results if ledger.deliveries(r)]
    assert len(made) == 1


def test_version_8_keeps_every_row_and_adds_the_delivery_queue(database_url, clock):
    engine = make_engine(database_url)
    with engine.begin() as conn:
        for step in MIGRATIONS[:7]:
            step(conn)
        schema_version.create(conn, checkfirst=True)
        conn.execute(schema_version.insert().values(version=7))
    old = Ledger(engine, clock)
    with engine.begin() as conn:
        conn.execute(
            submissions.insert().values(
                receipt="OLD1-ROW1", form_id="site", recipient_alias="sales",
                mail_from="forms@formpost.test", recipients="sales@example.com",
                subject="Before", message_id="<old@formpost.test>", raw=b"x",
                state="pending", attempts=0, created_at=clock.now(),
                queued_at=clock.now(), next_attempt_at=clock.now(),
            )
        )  # fmt: skip
    assert MIGRATIONS[7].__name__ == "_v8_deliveries"
    assert migrate(engine) == SCHEMA_VERSION
    assert old.row("OLD1-ROW1").subject == "Before"
    channel = Channel("webhook", "t" * 32, "https://crm.example")
    assert old.create_deliveries("OLD1-ROW1", [channel]) == 1
    assert old.delivery_counts()["pending"] == 1
    engine.dispose()


def test_a_quarantined_post_gets_no_channel_until_released(
    make_app, relay, tmp_path, database_url, receiver
):
    """Quarantine holds every channel back; a release sends the webhook on,
    but never the autoresponse (the visitor's address was held as spam)."""
    toml = forms_toml(webhook=receiver.url)
    app, clock = notify_app(
        make_app,
        relay,
        tmp_path,
        toml,
        DATABASE_URL=database_url,
        SPAM_BLOCKED_WORDS="engine",
    )
    receipt = post(app)
    assert ledger_of(app).row(receipt).state == "spam"
    assert states(app, receipt) == {}
    assert notify(app, clock) == 0 and receiver.received() == []

    assert services_of(app).release([receipt], by="test") == 1
    assert states(app, receipt) == {"webhook": "pending"}
    notify(app, clock)
    assert states(app, receipt) == {"webhook": "sent"}
    assert len(receiver.received()) == 1
    assert deliver(app) == 1
    assert [r.rcpt_tos for r in relay.received] == [["sales@example.com"]]


def test_a_dropped_post_gets_no_channel_until_released(
    make_app, relay, tmp_path, database_url, receiver
):
    """A honeypot post is stored as dropped: no webhook, no autoresponse, no
    email; released, only its webhook follows."""
    toml = forms_toml(webhook=receiver.url)
    app, clock = notify_app(make_app, relay, tmp_path, toml, DATABASE_URL=database_url)
    receipt = post(app, _gotcha="x")
    assert ledger_of(app).row(receipt).state == "dropped"
    assert states(app, receipt) == {}
    assert notify(app, clock) == 0 and receiver.received() == []
    assert deliver(app) == 0 and relay.received == []

    assert services_of(app).release([receipt], by="test") == 1
    assert states(app, receipt) == {"webhook": "pending"}
