"""Webhooks, Apprise and autoresponses, end to end against real local servers.

A post to a form with every channel; the email's worker and the notifier
deliver to the aiosmtpd relay and to an HTTP receiver on loopback that
verifies signatures with the standardwebhooks library. Both databases.
"""

from __future__ import annotations

import logging
import ssl
import time
from email import message_from_bytes, policy

import pytest

from app.errors import TransientError
from app.notifier import Notifier
from app.webhooks import RefusedAddress, build, refusal, send

from .fakeclock import FakeClock
from .helpers import deliver, ledger_of, post_form, services_of
from .notifykit import SECRET, Receiver, forms_toml

SITE = "https://www.example.com"
VISITOR = "ada@example.net"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def apprise_receiver():
    r = Receiver()
    yield r
    r.stop()


def notify_app(make_app, relay, tmp_path, toml: str, **env: str):
    forms = tmp_path / "forms.toml"
    forms.write_text(toml)
    settings = {
        "FORMS_FILE": str(forms),
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_TIMEOUT": "1",
        "PUBLIC_URL": "https://forms.example.com",
        **env,
    }
    app = make_app(relay.env(**settings))
    clock = FakeClock()
    ledger_of(app).clock = clock
    return app, clock


def post(app, form: str = "contact", email: str = VISITOR, **fields: str) -> str:
    data = {
        "name": "Ada Lovelace",
        "email": email,
        "message": "Please call me about the engine.",
        **fields,
    }
    answer = app.test_client().post(
        f"/f/{form}",
        data=data,
        headers={"Origin": SITE, "Accept": "application/json"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["id"]


def notify(app, clock) -> int:
    """Run the notifier until nothing is due; return deliveries attempted."""
    notifier: Notifier = services_of(app).notifier(rand=lambda: 0.0)
    total = 0
    while count := notifier.run_once():
        total += count
    return total


def states(app, receipt: str) -> dict[str, str]:
    return {d.kind: d.state for d in ledger_of(app).deliveries(receipt)}


def autoresponses(relay) -> list:
    return [r for r in relay.received if r.rcpt_tos != ["sales@example.com"]]


def test_every_channel_is_delivered_once(
    make_app, relay, tmp_path, database_url, receiver, apprise_receiver
):
    apprise_url = f"json://127.0.0.1:{apprise_receiver.port}/"
    toml = forms_toml(webhook=receiver.url, apprise=apprise_url)
    app, clock = notify_app(make_app, relay, tmp_path, toml, DATABASE_URL=database_url)
    receipt = post(app)
    assert states(app, receipt) == {
        "webhook": "pending",
        "apprise": "pending",
        "autoresponse": "pending",
    }
    assert deliver(app, clock) == 1
    assert notify(app, clock) == 3
    assert notify(app, clock) == 0
    assert set(states(app, receipt).values()) == {"sent"}

    [call] = receiver.received()
    assert call.verified is not None, "the signature must verify"
    assert call.headers["webhook-id"].startswith("msg_")
    body = call.json
    assert body["type"] == "form.submission"
    data = body["data"]
    assert data["receipt"] == receipt and data["form"] == "contact"
    assert data["fields"] == [
        ["name", "Ada Lovelace"],
        ["email", VISITOR],
        ["message", "Please call me about the engine."],
    ]
    assert data["created_at"].endswith("+00:00")

    [chat] = apprise_receiver.received()
    text = chat.json["message"]
    assert "Ada Lovelace <ada@example.net>" in text
    assert f"https://forms.example.com/admin/s/{receipt}" in text
    assert "engine" not in text, "the whole message only when the form asks"

    [auto] = autoresponses(relay)
    assert auto.rcpt_tos == [VISITOR]
    message = message_from_bytes(auto.data, policy=policy.default)
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["To"] == VISITOR
    assert message["From"] == "Contact form <forms@formpost.test>"
    assert message["Subject"] == "We got your message"
    content = message.get_content()
    assert "within two working days" in content
    assert "engine" not in content and "Ada" not in content


def test_full_message_in_chat_when_the_form_asks(
    make_app, relay, tmp_path, apprise_receiver
):
    toml = forms_toml(
        apprise=f"json://127.0.0.1:{apprise_receiver.port}/",
        autoresponse=False,
        full=True,
    )
    app, clock = notify_app(make_app, relay, tmp_path, toml)
    post(app)
    notify(app, clock)
    [chat] = apprise_receiver.received()
    assert "message: Please call me about the engine." in chat.json["message"]


def test_a_failing_webhook_is_retried_with_the_same_id_and_holds_back_nothing(
    make_app, relay, tmp_path, database_url, receiver
):
    toml = forms_toml(webhook=receiver.url)
    app, clock = notify_app(make_app, relay, tmp_path, toml, DATABASE_URL=database_url)
    receiver.answer("fail")
    receipt = post(app)
    deliver(app, clock)
    notify(app, clock)
    [webhook] = [d for d in ledger_of(app).deliveries(receipt) if d.kind == "webhook"]
    assert webhook.state == "pending" and webhook.attempts == 1
    assert "HTTP 500" in webhook.last_error
    # The email and the autoresponse went regardless.
    assert ledger_of(app).row(receipt).state == "sent"
    assert states(app, receipt)["autoresponse"] == "sent"

    assert notify(app, clock) == 0, "not due before its backoff"
    clock.advance(120)
    assert notify(app, clock) == 1
    first, second = receiver.received()
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.verified is not None and second.verified is not None
    assert states(app, receipt)["webhook"] == "sent"


def test_a_timeout_is_retried(make_app, relay, tmp_path, receiver):
    toml = forms_toml(webhook=receiver.url, autoresponse=False)
    app, clock = notify_app(make_app, relay, tmp_path, toml, WEBHOOK_TIMEOUT="0.3")
    receiver.answer("stall")
    receipt = post(app)
    notify(app, clock)
    [webhook] = ledger_of(app).deliveries(receipt)
    assert webhook.state == "pending"
    assert "no answer within 0.3 s" in webhook.last_error
    receiver.release.set()
    clock.advance(120)
    notify(app, clock)
    assert states(app, receipt) == {"webhook": "sent"}
    ids = {c.headers["webhook-id"] for c in receiver.received()}
    assert len(ids) == 1


def test_gone_disables_the_endpoint_until_an_owner_retries(
    make_app, relay, tmp_path, database_url, receiver, caplog
):
    toml = forms_toml(webhook=receiver.url, autoresponse=False)
    app, clock = notify_app(make_app, relay, tmp_path, toml, DATABASE_URL=database_url)
    receiver.answer("gone")
    first = post(app)
    notify(app, clock)
    [webhook] = ledger_of(app).deliveries(first)
    assert webhook.state == "disabled"
    assert "410" in webhook.last_error and "gone for good" in webhook.last_error
    assert "410" in webhook.disabled_reason
    # The receiver's words are kept for the owner, not logged (they may echo
    # the fields).
    assert "endpoint disabled: HTTP 410" in caplog.text
    assert "gone for good" not in caplog.text

    # The next submission's webhook is not even tried.
    second = post(app)
    notify(app, clock)
    assert states(app, second) == {"webhook": "disabled"}
    assert len(receiver.received()) == 1

    # Retrying enables the endpoint again.
    assert ledger_of(app).retry_deliveries(receipts=[first, second]) == 2
    notify(app, clock)
    assert states(app, first) == states(app, second) == {"webhook": "sent"}
    assert ledger_of(app).deliveries(first)[0].disabled_reason is None


def test_one_autoresponse_per_address_per_day_across_forms(
    make_app, relay, tmp_path, database_url
):
    toml = forms_toml(form="contact") + forms_toml(form="support")
    app, clock = notify_app(make_app, relay, tmp_path, toml, DATABASE_URL=database_url)
    first = post(app)
    again = post(app, email="ADA@example.net", message="Another question.")
    other = post(app, form="support", message="A third one.")
    assert "autoresponse" in states(app, first)
    assert states(app, again) == {} and states(app, other) == {}
    clock.advance(86400)
    tomorrow = post(app, message="Next day.")
    assert "autoresponse" in states(app, tomorrow)
    notify(app, clock)
    assert len(autoresponses(relay)) == 2


def test_no_autoresponse_without_an_address(make_app, relay, tmp_path):
    app, clock = notify_app(make_app, relay, tmp_path, forms_toml())
    receipt = post(app, email="")
    assert states(app, receipt) == {}
    notify(app, clock)
    assert autoresponses(relay) == []


def test_no_deliveries_for_quarantined_rows_until_released(
    make_app, relay, tmp_path, database_url, receiver
):
    toml = forms_toml(webhook=receiver.url)
    app, clock = notify_app(make_app, relay, tmp_path, toml, DATABASE_URL=database_url)
    ledger = ledger_of(app)
    receipt = post(app)
    # As the spam verdict stores them (issue 14): the row, no deliveries.
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM deliveries")
    svc = services_of(app)
    for state in ("spam", "dropped", "deleted"):
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE submissions SET state = '{state}'")
        assert svc.create_deliveries(receipt) == 0
    assert notify(app, clock) == 0
    assert receiver.received() == [] and autoresponses(relay) == []

    # Released: the deliveries are made then, once however often it is called.
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE submissions SET state = 'pending'")
    assert svc.create_deliveries(receipt) == 2
    assert svc.create_deliveries(receipt) == 0
    notify(app, clock)
    assert states(app, receipt) == {"webhook": "sent", "autoresponse": "sent"}


def test_secrets_are_never_logged(
    make_app, relay, tmp_path, receiver, apprise_receiver, caplog
):
    apprise_url = f"json://127.0.0.1:{apprise_receiver.port}/secret-token-path"
    toml = forms_toml(webhook=receiver.url, apprise=apprise_url)
    caplog.set_level(logging.DEBUG)
    app, clock = notify_app(make_app, relay, tmp_path, toml)
    receiver.answer("fail")
    apprise_receiver.answer("fail")
    post(app)
    notify(app, clock)
    clock.advance(600)
    notify(app, clock)
    assert "delivery" in caplog.text
    assert "transient: HTTP 500" in caplog.text
    assert "secret-token-path" not in caplog.text
    assert SECRET not in caplog.text
    assert SECRET.removeprefix("whsec_") not in caplog.text


def test_an_apprise_failure_is_retried(make_app, relay, tmp_path, apprise_receiver):
    url = f"json://127.0.0.1:{apprise_receiver.port}/"
    app, clock = notify_app(
        make_app, relay, tmp_path, forms_toml(apprise=url, autoresponse=False)
    )
    apprise_receiver.answer("fail")
    receipt = post(app)
    notify(app, clock)
    [chat] = ledger_of(app).deliveries(receipt)
    assert chat.state == "pending" and chat.label == "json://…"
    clock.advance(120)
    notify(app, clock)
    assert states(app, receipt) == {"apprise": "sent"}
    assert len(apprise_receiver.received()) == 2


# -- SSRF ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "10.0.0.8",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.1.1",
        "169.254.169.254",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "240.0.0.1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
        "2002:a00:1::1",  # 6to4 around 10.0.0.1
    ],
)
def test_refused_addresses(address):
    assert refusal(address, allow_private=False) is not None


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254"])
def test_metadata_addresses_are_refused_even_when_private_is_allowed(address):
    assert refusal(address, allow_private=True) == "a cloud metadata address"


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5"])
def test_public_addresses_pass(address):
    assert refusal(address, allow_private=False) is None


def test_a_name_resolving_to_loopback_is_refused_unless_allowed(receiver):
    url = f"http://localhost:{receiver.port}/hook"
    request = build(url, SECRET, "msg_x", 1_700_000_000, {"receipt": "X"})
    with pytest.raises(RefusedAddress, match="loopback"):
        send(request, 1.0, allow_private=False)
    assert receiver.received() == []
    assert send(request, 1.0, allow_private=True) == "HTTP 200"
    [call] = receiver.received()
    assert call.headers["host"] == f"localhost:{receiver.port}"


def test_a_refused_webhook_is_dead_lettered_without_a_request(
    make_app, relay, tmp_path, receiver
):
    url = f"http://localhost:{receiver.port}/hook"
    toml = forms_toml(webhook=url, autoresponse=False)
    app, clock = notify_app(
        make_app, relay, tmp_path, toml, WEBHOOK_ALLOW_PRIVATE="false"
    )
    receipt = post(app)
    notify(app, clock)
    [webhook] = ledger_of(app).deliveries(receipt)
    assert webhook.state == "failed"
    assert "refused" in webhook.last_error and "loopback" in webhook.last_error
    assert receiver.received() == []


def test_the_hosted_page_uses_the_default_forms_channels(
    make_app, relay, tmp_path, receiver
):
    toml = forms_toml(webhook=receiver.url, form="default").replace(
        'recipients = ["sales"]\nallowed_origins = ["https://www.example.com"]\n', ""
    )
    app, clock = notify_app(make_app, relay, tmp_path, toml)
    client = app.test_client()
    assert post_form(client, email="grace@example.org").status_code == 303
    [row] = ledger_of(app).rows()
    assert row.form_id == "hosted"
    assert states(app, row.receipt) == {"webhook": "pending", "autoresponse": "pending"}
    notify(app, clock)
    [auto] = autoresponses(relay)
    assert auto.rcpt_tos == ["grace@example.org"]
    [call] = receiver.received()
    assert call.json["data"]["form"] == "hosted"


def test_https_is_verified_against_the_name_while_connecting_to_the_address(pki):
    receiver = Receiver(tls=pki.server_context())
    try:
        url = f"https://localhost:{receiver.port}/hook"
        request = build(url, SECRET, "msg_tls", time.time(), {"receipt": "X"})
        trusting = ssl.create_default_context(cafile=pki.ca_file)
        assert send(request, 2.0, True, context=trusting) == "HTTP 200"
        [call] = receiver.received()
        assert call.verified is not None
        # A certificate the client does not trust: retried, never delivered.
        with pytest.raises(TransientError):
            send(request, 2.0, True, context=ssl.create_default_context())
    finally:
        receiver.stop()


def test_a_receiver_answering_a_byte_at_a_time_is_cut_off(receiver):
    receiver.answer("drip")
    request = build(receiver.url, SECRET, "msg_d", time.time(), {"receipt": "X"})
    started = time.monotonic()
    with pytest.raises(TransientError, match="no answer within 0.6 s"):
        send(request, 0.6, allow_private=True)
    assert time.monotonic() - started < 3
