"""app/ledger/driver.py: SQLite engines, their writer lock, and what they hold open."""

from __future__ import annotations

import gc
import itertools
import os

from app.clock import SystemClock
from app.ledger import Ledger, make_engine, migrate
from app.message import Envelope


def _writer_fds(path) -> int:
    """How many descriptors this process holds on the database's writer lock."""
    target = f"{path}-writer"
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            continue
    return found


_ids = itertools.count()


def _store_one(engine) -> None:
    message_id = f"<{next(_ids)}@formpost.test>"
    envelope = Envelope("a@formpost.test", ("b@example.com",), b"x\r\n", message_id)
    Ledger(engine, SystemClock()).enqueue(
        envelope, form_id="f", alias="sales", subject="s"
    )


def test_disposing_an_engine_closes_its_writer_lock(tmp_path):
    path = tmp_path / "ledger.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    _store_one(engine)
    assert _writer_fds(path) == 1
    engine.dispose()
    assert _writer_fds(path) == 0
    _store_one(engine)  # still usable: the lock file is opened again
    assert _writer_fds(path) == 1
    engine.dispose()


def test_an_engine_that_is_garbage_leaves_nothing_open(tmp_path):
    path = tmp_path / "ledger.db"
    for _ in range(20):
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        _store_one(engine)
        del engine
    gc.collect()
    assert _writer_fds(path) == 0
