"""A submission's delivery timeline, and everything stored about it.

Each attempt the worker settles adds one `delivery_attempts` row (its time,
what came of it and the relay's reply) in the same transaction as the
outcome. `read_detail` gathers a submission for its console page.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Float, String, bindparam, insert, select

from .content import load_fields
from .driver import dbapi_form
from .schema import delivery_attempts, submissions

# What an outcome's new state says about the attempt.
OUTCOME_OF_STATE = {"sent": "sent", "pending": "retry", "failed": "failed"}


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: when, what came of it, and the relay's reply."""

    at: float
    outcome: str  # sent, retry or failed
    error_kind: str | None
    reply: str | None


@dataclass(frozen=True)
class Detail:
    """Everything stored about one submission, and its delivery timeline.

    `fields` is None when the content was erased or could not be read back
    from a message stored before version 5 (then `raw` is all there is);
    `raw` is None once erased.
    """

    row: Any  # every submissions column (raw too; use `raw` below)
    fields: list[tuple[str, str]] | None
    raw: bytes | None
    attempts: list[Attempt]

    @property
    def erased(self) -> bool:
        return self.row.erased_at is not None


@functools.lru_cache(maxsize=1)
def _attempt_statement() -> Any:
    return insert(delivery_attempts).values(
        submission_id=bindparam("submission_id"),
        at=bindparam("at", type_=Float),
        outcome=bindparam("outcome", type_=String),
        error_kind=bindparam("error_kind", type_=String),
        reply=bindparam("reply", type_=String),
    )


def attempt_params(outcome: Any, now: float) -> dict[str, Any]:
    """The timeline row for a settled Outcome (queue.py)."""
    values = outcome.values
    return {
        "submission_id": outcome.row.id,
        "at": now,
        "outcome": OUTCOME_OF_STATE.get(values.get("state", ""), "retry"),
        "error_kind": values.get("last_error_kind"),
        "reply": values.get("last_reply"),
    }


def record_attempts(cursor: Any, engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Add timeline rows on the driver's cursor, in its transaction (one call)."""
    sql, order, constants = dbapi_form(_attempt_statement(), engine.dialect)
    if order is None:
        params: list[Any] = [{**constants, **row} for row in rows]
    else:
        params = [[{**constants, **row}[k] for k in order] for row in rows]
    cursor.executemany(sql, params)


def read_detail(conn: Connection, receipt: str, listed: list[Any]) -> Detail | None:
    """Read one submission, its message bytes and its attempts in order."""
    found = conn.execute(
        select(*listed, submissions.c.raw).where(submissions.c.receipt == receipt)
    ).one_or_none()
    if found is None:
        return None
    attempts = conn.execute(
        select(
            delivery_attempts.c.at,
            delivery_attempts.c.outcome,
            delivery_attempts.c.error_kind,
            delivery_attempts.c.reply,
        )
        .where(delivery_attempts.c.submission_id == found.id)
        .order_by(delivery_attempts.c.id)
    ).all()
    erased = found.erased_at is not None
    return Detail(
        row=found,
        fields=None if erased else load_fields(found.fields),
        raw=None if erased else bytes(found.raw),
        attempts=[Attempt(*a) for a in attempts],
    )
