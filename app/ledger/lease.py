"""Claiming due rows under a lease: the one statement both queues share.

The email queue (`submissions`) and the other channels' queue
(`deliveries`) hand out work the same way, so that a worker that dies
mid-send loses nothing: a row is due when it is pending and its next
attempt has come, or when it is being sent under a lease that has run out.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    String,
    Table,
    bindparam,
    or_,
    select,
    update,
)


def claim_due(table: Table, *returning: Column[Any]) -> Any:
    """Build the UPDATE ... RETURNING that takes due rows of `table` under a lease.

    Parameters: `now`, `batch`, `lease_until` and `token` (the claim's own,
    so that only its holder can settle a row). Oldest first; on PostgreSQL
    SKIP LOCKED keeps workers from waiting on each other's rows.
    """
    c = table.c
    now = bindparam("now", type_=Float)
    due = (
        select(c.id)
        .where(
            or_(
                (c.state == "pending") & (c.next_attempt_at <= now),
                (c.state == "sending") & (c.lease_until < now),
            )
        )
        .order_by(c.next_attempt_at)
        .limit(bindparam("batch", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        update(table)
        .where(c.id.in_(due.scalar_subquery()))
        .values(
            state="sending",
            lease_until=bindparam("lease_until", type_=Float),
            claim_token=bindparam("token", type_=String),
            attempts=c.attempts + 1,
            last_attempt_at=now,
        )
        .returning(*returning)
    )
