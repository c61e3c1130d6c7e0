"""Deliveries beyond the email: webhooks, Apprise, autoresponses.

One row per (submission, channel) in `deliveries`, created in the
transaction that stores an accepted submission (queue.py) or when an owner
releases a quarantined one (`create`). Workers claim them under a lease and
settle them as the email's rows are (queue.py), in a queue of their own, so
one slow or failing channel never holds back another, nor the email.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    String,
    bindparam,
    case,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .lease import claim_due
from .schema import deliveries, disabled_targets, submissions

_UPSERT = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}
# Submission states whose deliveries may be created: accepted posts only,
# never quarantined (`spam`), `dropped` or erased ones.
ACCEPTED = ("pending", "sending", "sent", "failed")


@dataclass(frozen=True)
class Channel:
    """One channel a submission goes to, as the ledger stores it.

    `target` is a digest of the channel's configuration (never its URL: that
    may hold a secret); `label` is safe to show; `once_key` limits
    autoresponses to one per address per day (unique in the table).
    """

    kind: str
    target: str
    label: str
    once_key: str | None = None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a worker holds under lease."""

    id: int
    submission_id: int
    kind: str
    target: str
    label: str
    webhook_id: str
    attempts: int
    queued_at: float
    claim_token: str


def new_webhook_id() -> str:
    """Return a webhook-id, kept on the row so every retry repeats it."""
    return "msg_" + secrets.token_urlsafe(18)


@functools.lru_cache(maxsize=2)
def insert_statement(dialect: str) -> Any:
    """INSERT one delivery for the submission with :receipt; skip a repeat.

    A repeat is the same (submission, target), or an autoresponse whose
    `once_key` is already taken today: ON CONFLICT DO NOTHING on both.
    """
    submission_id = (
        select(submissions.c.id)
        .where(submissions.c.receipt == bindparam("receipt", type_=String))
        .scalar_subquery()
    )
    values = {
        "submission_id": submission_id,
        "kind": bindparam("kind", type_=String),
        "target": bindparam("target", type_=String),
        "label": bindparam("label", type_=String),
        "state": "pending",
        "attempts": 0,
        "created_at": bindparam("now", type_=Float),
        "queued_at": bindparam("now", type_=Float),
        "next_attempt_at": bindparam("now", type_=Float),
        "webhook_id": bindparam("webhook_id", type_=String),
        "once_key": bindparam("once_key", type_=String),
    }
    return _UPSERT[dialect](deliveries).values(values).on_conflict_do_nothing()


def params_for(receipt: str, channel: Channel, now: float) -> dict[str, Any]:
    """The parameters of insert_statement for one channel."""
    return {
        "receipt": receipt,
        "kind": channel.kind,
        "target": channel.target,
        "label": channel.label[:200],
        "now": now,
        "webhook_id": new_webhook_id(),
        "once_key": channel.once_key,
    }


def create(
    conn: Connection, receipt: str, channels: Sequence[Channel], now: float
) -> int:
    """Create the deliveries of an accepted submission; return how many are new.

    Idempotent: a channel already there is skipped. Nothing for a
    submission that is quarantined, dropped, erased or unknown.
    """
    found = conn.execute(
        select(submissions.c.id, submissions.c.state).where(
            submissions.c.receipt == receipt
        )
    ).first()
    if found is None or found.state not in ACCEPTED:
        return 0
    # Counted before and after: an INSERT ... ON CONFLICT DO NOTHING's row
    # count is not reported alike by every driver.
    count = select(func.count()).where(deliveries.c.submission_id == found.id)
    before = conn.execute(count).scalar() or 0
    stmt = insert_statement(conn.dialect.name)
    for channel in channels:
        conn.execute(stmt, params_for(receipt, channel, now))
    return (conn.execute(count).scalar() or 0) - before


@functools.lru_cache(maxsize=1)
def claim_statement() -> Any:
    """Take due deliveries under a lease: one UPDATE ... RETURNING."""
    c = deliveries.c
    return claim_due(
        deliveries,
        c.id,
        c.submission_id,
        c.kind,
        c.target,
        c.label,
        c.webhook_id,
        c.attempts,
        c.queued_at,
    )


def claim(conn: Connection, batch: int, lease: float, now: float) -> list[Any]:
    """Claim up to `batch` due deliveries; return them, oldest first."""
    token = secrets.token_hex(16)
    params = {"now": now, "lease_until": now + lease, "token": token, "batch": batch}
    rows = conn.execute(claim_statement(), params).all()
    claimed = [ClaimedDelivery(*row, claim_token=token) for row in rows]
    claimed.sort(key=lambda d: d.id)
    return claimed


def settle(
    conn: Connection, row: ClaimedDelivery, values: dict[str, Any], give_back: bool
) -> bool:
    """Record an outcome if this claim still holds the row; say whether it did."""
    c = deliveries.c
    changes: dict[str, Any] = {"lease_until": None, "claim_token": None, **values}
    if give_back:
        changes["attempts"] = c.attempts - 1
    result = conn.execute(
        update(deliveries)
        .where(c.id == row.id, c.claim_token == row.claim_token, c.state == "sending")
        .values(**changes)
    )
    return result.rowcount == 1


def extend(conn: Connection, rows: Sequence[ClaimedDelivery], until: float) -> None:
    """Push the lease of rows still held to `until`."""
    if not rows:
        return
    c = deliveries.c
    conn.execute(
        update(deliveries)
        .where(
            c.id.in_([r.id for r in rows]),
            c.claim_token == rows[0].claim_token,
            c.state == "sending",
        )
        .values(lease_until=until)
    )


def listing(conn: Connection, receipt: str) -> list[Any]:
    """Every delivery of one submission, in the order they were created.

    Each with `disabled_reason` when its endpoint answered 410.
    """
    c = deliveries.c
    query = (
        select(
            c.id,
            c.kind,
            c.label,
            c.state,
            c.attempts,
            c.created_at,
            c.next_attempt_at,
            c.last_attempt_at,
            c.last_error,
            c.sent_at,
            c.webhook_id,
            disabled_targets.c.reason.label("disabled_reason"),
        )
        .select_from(
            deliveries.join(submissions, submissions.c.id == c.submission_id).join(
                disabled_targets, disabled_targets.c.target == c.target, isouter=True
            )
        )
        .where(submissions.c.receipt == receipt)
        .order_by(c.id)
    )
    return list(conn.execute(query).all())


def retry(
    conn: Connection,
    now: float,
    submission_ids: Sequence[int] | None = None,
    delivery_ids: Sequence[int] | None = None,
    states: Sequence[str] = ("failed", "disabled", "pending"),
) -> int:
    """Make deliveries in `states` due now; return how many.

    Retrying a delivery whose endpoint answered 410 enables the endpoint
    again: the owner says it is back.
    """
    c = deliveries.c
    where = [c.state.in_(list(states))]
    if submission_ids is not None:
        where.append(c.submission_id.in_(list(submission_ids)))
    if delivery_ids is not None:
        where.append(c.id.in_(list(delivery_ids)))
    targets = select(c.target).where(*where, c.state == "disabled")
    conn.execute(delete(disabled_targets).where(disabled_targets.c.target.in_(targets)))
    # As the email's retry (actions.retry_now): a failed or disabled delivery
    # starts a new give-up window; a pending one only becomes due now, so
    # retrying it again and again cannot keep it from ever expiring.
    return conn.execute(
        update(deliveries)
        .where(*where)
        .values(
            state="pending",
            next_attempt_at=now,
            queued_at=case((c.state == "pending", c.queued_at), else_=now),
        )
    ).rowcount


def disable_target(conn: Connection, target: str, reason: str, now: float) -> None:
    """Record that an endpoint answered 410 Gone (keep the first record)."""
    stmt = _UPSERT[conn.dialect.name](disabled_targets).values(
        target=target, disabled_at=now, reason=reason[:500]
    )
    conn.execute(stmt.on_conflict_do_nothing())


def disabled_reason(conn: Connection, target: str) -> str | None:
    """Why this endpoint is disabled, or None while it is enabled."""
    query = select(disabled_targets.c.reason).where(disabled_targets.c.target == target)
    return conn.execute(query).scalar()


def source(conn: Connection, submission_id: int) -> Any | None:
    """What a delivery sends: the submission's receipt, form, times and content."""
    s = submissions.c
    query = select(
        s.receipt,
        s.form_id,
        s.state,
        s.subject,
        s.created_at,
        s.name,
        s.email,
        s.message,
        s.fields,
        s.erased_at,
    ).where(s.id == submission_id)
    return conn.execute(query).one_or_none()


def purge_for(conn: Connection, submission_ids: Any) -> None:
    """Delete the deliveries of submissions being purged (a subquery of ids)."""
    conn.execute(
        delete(deliveries).where(deliveries.c.submission_id.in_(submission_ids))
    )


def counts(conn: Connection) -> dict[str, int]:
    """Deliveries by state."""
    query = select(deliveries.c.state, func.count()).group_by(deliveries.c.state)
    return {state: n for state, n in conn.execute(query).all()}
