"""app/accept.py: the one accept path, called as every entry point calls it."""

from __future__ import annotations

import logging

import pytest

from app.accept import Post, accept, decoy
from app.ledger import LimitExceeded, Limits, StorageError

from .helpers import deliver, ledger_of, services_of


def _post(**overrides) -> Post:
    values = {
        "form_id": "contact",
        "recipient": "sales",
        "subject": "Hello",
        "message": "A question about engines.",
        "name": "Ada Lovelace",
        "email": "ada@example.net",
        "cc": ("support",),
        "client_ip": "192.0.2.7",
    }
    values.update(overrides)
    return Post(**values)


def test_accept_stores_composes_and_delivers_to_configured_addresses(app, relay):
    receipt = accept(services_of(app), _post())
    (row,) = ledger_of(app).rows()
    assert (row.receipt, row.state, row.form_id) == (receipt, "pending", "contact")
    assert (row.recipient_alias, row.client_ip) == ("sales", "192.0.2.7")
    assert deliver(app) == 1
    (got,) = relay.received
    assert got.rcpt_tos == ["sales@example.com", "help@example.org"]
    message = got.message
    assert message["From"] == "Contact form <forms@formpost.test>"
    assert message["Reply-To"] == "Ada Lovelace <ada@example.net>"
    assert message["Subject"] == "Hello"


def test_accept_outside_a_request_logs_one_line_with_the_receipt(app, caplog):
    with caplog.at_level(logging.INFO, logger="formpost.accept"):
        receipt = accept(services_of(app), _post(limits=None))
    lines = [r.getMessage() for r in caplog.records if r.name == "formpost.accept"]
    assert lines == [f"stored receipt={receipt} form=contact verdict=accept reasons="]


def test_accept_inside_a_request_leaves_the_line_to_the_request(app, caplog):
    with app.test_request_context("/"), caplog.at_level(logging.INFO):
        from flask import g

        receipt = accept(services_of(app), _post())
        assert g.receipt == receipt
    assert not [r for r in caplog.records if r.name == "formpost.accept"]


def test_a_limit_refuses_and_nothing_is_stored(app):
    services = services_of(app)
    limits = Limits(rate=((1, 60),))
    accept(services, _post(limits=limits))
    with pytest.raises(LimitExceeded) as refused:
        accept(services, _post(limits=limits, subject="Again"))
    assert refused.value.reason == "rate"
    assert [r.subject for r in ledger_of(app).rows()] == ["Hello"]


def test_no_limits_means_no_limit_applies(app):
    """The doctor's send test passes limits=None: it is not a visitor's post."""
    services = services_of(app)
    for n in range(3):
        accept(services, _post(subject=f"Test {n}", limits=None))
    assert len(ledger_of(app).rows()) == 3


def test_a_failed_insert_raises_storage_error_and_stores_nothing(app, relay):
    """A real failure inside the database: a trigger aborts the INSERT."""
    with ledger_of(app).engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON submissions "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    with pytest.raises(StorageError, match="disk full"):
        accept(services_of(app), _post())
    assert ledger_of(app).rows() == []
    assert deliver(app) == 0
    assert relay.received == []


def test_decoy_stores_nothing_and_returns_a_receipt_shape(app, caplog):
    with caplog.at_level(logging.INFO, logger="formpost.accept"):
        receipt = decoy("contact", "honeypot")
    assert len(receipt) == 9 and receipt[4] == "-"
    assert ledger_of(app).rows() == []
    assert any("honeypot" in r.getMessage() for r in caplog.records)
