"""The limits a submission must stay within, counted in the ledger itself.

Rate windows per form and client IP, a daily quota per recipient alias and a
cap on the undelivered backlog. They are checked inside the INSERT (INSERT
... SELECT ... WHERE the counts are below them), so every process and
machine sharing the database sees the same counts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, literal, or_, select

from .schema import submissions

ROW_COLUMNS = (
    "receipt", "form_id", "recipient_alias", "mail_from", "recipients", "subject",
    "message_id", "raw", "dedupe_key", "state", "attempts", "created_at",
    "queued_at", "next_attempt_at", "client_ip",
)  # fmt: skip


class LimitExceeded(Exception):
    """A rate limit, recipient quota or backlog cap refused the submission."""

    def __init__(self, reason: str, retry_after: float, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = max(1, int(retry_after + 0.999))
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What a submission must stay within; counted in the ledger itself.

    rate: (count, seconds) windows per form and client IP. recipient_daily:
    submissions per recipient alias in 24 h. backlog: undelivered rows in all.
    0 or () switches a limit off.
    """

    rate: tuple[tuple[int, int], ...] = ()
    recipient_daily: int = 0
    backlog: int = 0


def _count_below(where: Any, limit: Any) -> Any:
    """`(count of rows matching where) < limit`, reading at most `limit` rows."""
    capped = select(literal(1).label("one")).where(where).limit(limit).subquery()
    return select(func.count()).select_from(capped).scalar_subquery() < limit


@functools.lru_cache(maxsize=64)
def _insert_for(rate_windows: int, per_ip: bool, quota: bool, backlog: bool) -> Any:
    """Build (once per shape) the INSERT that checks the limits in its WHERE.

    Everything that varies is a bound parameter, so SQLAlchemy compiles each
    shape once and the request path pays only for executing it.
    """
    if not (rate_windows and per_ip) and not quota and not backlog:
        return (
            insert(submissions)
            .values({k: bindparam(k) for k in ROW_COLUMNS})
            .returning(submissions.c.id)
        )
    c = submissions.c
    conditions = []
    if per_ip:
        for i in range(rate_windows):
            window = (c.form_id == bindparam("form_id")) & (
                c.client_ip == bindparam("client_ip")
            )
            window &= c.created_at > bindparam(f"rate_since_{i}")
            conditions.append(_count_below(window, bindparam(f"rate_max_{i}")))
    if quota:
        day = (c.recipient_alias == bindparam("recipient_alias")) & (
            c.created_at > bindparam("quota_since")
        )
        conditions.append(_count_below(day, bindparam("quota_max")))
    if backlog:
        # Two comparisons rather than IN: an IN list would be expanded at
        # execution time, and _dbapi_form compiles the statement only once.
        undelivered = or_(c.state == "pending", c.state == "sending")
        conditions.append(_count_below(undelivered, bindparam("backlog_max")))
    values = select(
        *[bindparam(k, type_=submissions.c[k].type).label(k) for k in ROW_COLUMNS]
    ).where(*conditions)
    return (
        insert(submissions)
        .from_select(list(ROW_COLUMNS), values)
        .returning(submissions.c.id)
    )


def insert_statement(
    row: dict[str, Any], limits: Limits | None, now: float
) -> tuple[Any, dict[str, Any]]:
    limits = limits or Limits()
    per_ip = row["client_ip"] is not None
    stmt = _insert_for(
        len(limits.rate), per_ip, bool(limits.recipient_daily), bool(limits.backlog)
    )
    params = dict(row)
    if per_ip:
        for i, (count, seconds) in enumerate(limits.rate):
            params[f"rate_since_{i}"] = now - seconds
            params[f"rate_max_{i}"] = count
    if limits.recipient_daily:
        params["quota_since"] = now - 86400
        params["quota_max"] = limits.recipient_daily
    if limits.backlog:
        params["backlog_max"] = limits.backlog
    return stmt, params


def which_limit(
    conn: Connection,
    limits: Limits,
    form_id: str,
    client_ip: str | None,
    alias: str,
    now: float,
) -> LimitExceeded:
    """Say which limit refused and when trying again makes sense."""
    c = submissions.c
    if limits.backlog:
        undelivered = c.state.in_(("pending", "sending"))
        if _oldest_of_last(conn, undelivered, limits.backlog) is not None:
            return LimitExceeded("backlog", 60, 503)
    for count, seconds in limits.rate:
        if client_ip is None:
            break
        window = (c.form_id == form_id) & (c.client_ip == client_ip)
        window &= c.created_at > now - seconds
        oldest = _oldest_of_last(conn, window, count)
        if oldest is not None:
            return LimitExceeded("rate", oldest + seconds - now, 429)
    if limits.recipient_daily:
        day = (c.recipient_alias == alias) & (c.created_at > now - 86400)
        oldest = _oldest_of_last(conn, day, limits.recipient_daily)
        if oldest is not None:
            return LimitExceeded("quota", oldest + 86400 - now, 429)
    # Counts moved between the insert and this look: let the client retry.
    return LimitExceeded("rate", 1, 429)


def _oldest_of_last(conn: Connection, where: Any, count: int) -> float | None:
    """The oldest of the newest `count` rows matching `where`, if there are as many."""
    c = submissions.c
    recent = (
        select(c.created_at)
        .where(where)
        .order_by(c.created_at.desc())
        .limit(count)
        .subquery()
    )
    found = conn.execute(select(func.count(), func.min(recent.c.created_at))).one()
    return found[1] if found[0] >= count else None
