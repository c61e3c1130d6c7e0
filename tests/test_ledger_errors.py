"""Every database failure leaves app/ledger/ as StorageError, reads included."""

from __future__ import annotations

import os

import pytest

from app.clock import SystemClock
from app.ledger import (
    Claimed,
    Ledger,
    StorageError,
    current_version,
    make_engine,
    migrate,
)
from app.message import Envelope

from .helpers import PG_URL, postgres_or_skip

_ENVELOPE = Envelope("a@formpost.test", ("b@example.com",), b"x\r\n", "<1@x>")
_CLAIMED = Claimed(1, "AAAA-AAAA", "t" * 32, _ENVELOPE, 1, 0.0)

# Every public operation, as the request path, the workers and operators call it.
CALLS = {
    "enqueue": lambda ledger: ledger.enqueue(
        _ENVELOPE, form_id="f", alias="sales", subject="s"
    ),
    "claim": lambda ledger: ledger.claim(10, 60),
    "extend": lambda ledger: ledger.extend([_CLAIMED], 60),
    "settle": lambda ledger: ledger.settle([ledger.sent(_CLAIMED)]),
    "release": lambda ledger: ledger.release([_CLAIMED]),
    "record_relay": lambda ledger: ledger.record_relay("transient", "421"),
    "stats": lambda ledger: ledger.stats(),
    "rows": lambda ledger: ledger.rows(),
    "row": lambda ledger: ledger.row("AAAA-AAAA"),
    "requeue": lambda ledger: ledger.requeue(),
    "purge_sent": lambda ledger: ledger.purge_sent(86400),
    "ping": lambda ledger: ledger.ping(),
    "current_version": lambda ledger: current_version(ledger.engine),
    "migrate": lambda ledger: migrate(ledger.engine),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def broken_ledger(request, tmp_path) -> Ledger:
    """A ledger whose database went away after start-up."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        engine.dispose()
        os.unlink(path)  # deleted under the running process
        return Ledger(engine, SystemClock())
    postgres_or_skip()
    # A port nothing listens on: every connection is refused.
    url = PG_URL.replace("127.0.0.1:5432", "127.0.0.1:9") + "?connect_timeout=2"
    return Ledger(make_engine(url), SystemClock())


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_operation_on_a_lost_database_raises_storage_error(broken_ledger, call):
    with pytest.raises(StorageError):
        CALLS[call](broken_ledger)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-folder/formpost.db",
        "postgresql+psycopg://user@[bad",
        "nosuchdriver://x",
    ],
)
def test_an_engine_that_cannot_be_made_raises_storage_error(url):
    with pytest.raises(StorageError):
        migrate(make_engine(url))
