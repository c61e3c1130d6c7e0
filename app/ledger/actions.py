"""An owner's actions on submissions: retry now, and erase to a tombstone.

Each takes a batch of row ids and runs in one transaction that locks the
backlog counter first, as every writer of new rows does (limits.py), so the
counter stays exact: a row leaving or entering pending/sending moves it.
Row-state changes are made by UPDATEs conditioned on the state, and their
row counts are what moves the counter: a worker settling a row at the same
moment makes the condition false instead of counting twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select, update

from . import index
from .files import delete_files
from .limits import add_to_backlog
from .schema import BACKLOG, CONTENT_COLUMNS, counters, submissions

UNDELIVERED = ("pending", "sending")
# Rows not in the backlog: delivered or given up, quarantined, dropped.
DELIVERED = ("sent", "failed", "spam", "dropped")
BATCH = 500


def _lock_counters(conn: Connection) -> None:
    conn.execute(
        select(counters.c.value).where(counters.c.name == BACKLOG).with_for_update()
    )


def retry_now(conn: Connection, ids: Sequence[int], now: float) -> int:
    """Make pending and failed rows due now; leave rows being sent alone."""
    if not ids:
        return 0
    _lock_counters(conn)
    c = submissions.c
    failed = conn.execute(
        update(submissions)
        .where(c.id.in_(ids), c.state == "failed")
        .values(state="pending", next_attempt_at=now, queued_at=now)
    ).rowcount
    if failed:
        conn.execute(add_to_backlog(), {"delta": failed})
    pending = conn.execute(
        update(submissions)
        .where(c.id.in_(ids), c.state == "pending")
        .values(next_attempt_at=now)
    ).rowcount
    # Rows just moved from failed match this too: each is counted once.
    return pending


def erase(conn: Connection, ids: Sequence[int], now: float) -> int:
    """Erase rows to tombstones: content, message and search entry gone.

    Receipt, form, state times and the timeline stay; the state is
    `deleted` and `erased_at` says when. A row being sent is erased too:
    its worker's outcome then finds the row gone from under its claim.
    """
    if not ids:
        return 0
    _lock_counters(conn)
    c = submissions.c
    cleared = {name: None for name in CONTENT_COLUMNS}
    values = {
        **cleared,
        "subject": "",
        "raw": b"",
        "state": "deleted",
        "erased_at": now,
        "lease_until": None,
        "claim_token": None,
        "fingerprint": None,
        # The reasons can name the visitor's IP or address domain.
        "verdict": None,
        "body_digest": None,
    }
    erased = 0
    for states in (UNDELIVERED, DELIVERED):
        count = conn.execute(
            update(submissions).where(c.id.in_(ids), c.state.in_(states)).values(values)
        ).rowcount
        if states is UNDELIVERED and count:
            conn.execute(add_to_backlog(), {"delta": -count})
        erased += count
    if erased:
        conn.execute(index.unindex_rows(conn.dialect.name), {"ids": list(ids)})
        # The files go with the content: nothing of them stays in a tombstone.
        tombstones = select(c.id).where(c.id.in_(ids), c.state == "deleted")
        delete_files(conn, tombstones)
    return erased
