"""Releasing what the spam verdict held back: spam and dropped rows to the queue.

An owner who finds a real customer's post among the spam (console, API,
`outbox release`) releases it: the row goes to pending, due now, and joins
the backlog counter in the same transaction, which locks the counter first
as every writer of new rows does (limits.py). The verdict stays on the row
(what the owner overruled) and the timeline gains a `released` entry saying
who. Like actions.py, the UPDATE is conditioned on the state, so a row that
changed meanwhile is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, insert, select, update

from .limits import add_to_backlog
from .schema import BACKLOG, counters, delivery_attempts, submissions

# Held back by the spam verdict: quarantined, or dropped.
HELD = ("spam", "dropped")
# The timeline's outcome for a row an owner released (timeline.py).
RELEASED = "released"


def release(
    conn: Connection, ids: Sequence[int], now: float, by: str | None = None
) -> int:
    """Move spam and dropped rows to pending, due now; leave every other row alone.

    A row whose message is gone (erased by an owner or retention) has
    nothing to deliver and stays as it is. Return how many rows moved.
    """
    if not ids:
        return 0
    conn.execute(
        select(counters.c.value).where(counters.c.name == BACKLOG).with_for_update()
    )
    c = submissions.c
    released = list(
        conn.execute(
            update(submissions)
            .where(c.id.in_(ids), c.state.in_(HELD), func.length(c.raw) > 0)
            .values(state="pending", next_attempt_at=now, queued_at=now)
            .returning(c.id)
        ).scalars()
    )
    if not released:
        return 0
    conn.execute(add_to_backlog(), {"delta": len(released)})
    note = f"released by {by}" if by else "released"
    conn.execute(
        insert(delivery_attempts),
        [
            {
                "submission_id": row_id,
                "at": now,
                "outcome": RELEASED,
                "error_kind": None,
                "reply": note[:1000],
            }
            for row_id in released
        ],
    )
    return len(released)
