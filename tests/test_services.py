"""app/services.py: one Services object per app, found through services()."""

from __future__ import annotations

import pytest

from app.maildir import MaildirTransport
from app.outbox import Worker
from app.services import EXTENSION, Services, services
from app.signing import SigningTransport
from app.smtp import SMTPTransport

from .dns_server import key_pair
from .helpers import post_form


def test_one_services_object_under_one_key(app):
    found = [key for key in app.extensions if key.startswith("formpost")]
    assert found == [EXTENSION]
    assert isinstance(app.extensions[EXTENSION], Services)
    with app.app_context():
        assert services() is app.extensions[EXTENSION]


def test_services_outside_an_app_context_is_an_error():
    with pytest.raises(RuntimeError, match="application context"):
        services()


def test_the_worker_is_built_from_the_services(app, relay):
    svc = app.extensions[EXTENSION]
    worker = svc.worker()
    assert isinstance(worker, Worker)
    assert (worker.ledger, worker.transport, worker.settings) == (
        svc.ledger,
        svc.transport,
        svc.outbox,
    )
    assert worker.clock is svc.ledger.clock
    post_form(app.test_client())
    assert worker.run_once() == 1
    assert len(relay.received) == 1


def test_limits_take_the_form_rate_and_the_configured_caps(make_app, relay):
    app = make_app(relay.env(RECIPIENT_DAILY_QUOTA="7", BACKLOG_LIMIT="9"))
    limits = app.extensions[EXTENSION].limits(((3, 60),))
    assert (limits.rate, limits.recipient_daily, limits.backlog) == (((3, 60),), 7, 9)


def test_without_a_relay_the_transport_is_the_maildir(make_app, tmp_path):
    app = make_app({"MAILDIR_PATH": str(tmp_path / "mail")})
    transport = app.extensions[EXTENSION].transport
    assert isinstance(transport, MaildirTransport)
    assert transport.path == str(tmp_path / "mail")


def test_with_a_relay_the_transport_is_smtp(app):
    assert isinstance(app.extensions[EXTENSION].transport, SMTPTransport)


def test_with_dkim_every_transport_is_wrapped_in_signing(make_app, relay, tmp_path):
    key = tmp_path / "dkim.pem"
    key.write_bytes(key_pair()[0])
    app = make_app(
        relay.env(
            DKIM_DOMAIN="formpost.test",
            DKIM_SELECTOR="mail",
            DKIM_PRIVATE_KEY_FILE=str(key),
        )
    )
    transport = app.extensions[EXTENSION].transport
    assert isinstance(transport, SigningTransport)
    assert isinstance(transport.inner, SMTPTransport)
