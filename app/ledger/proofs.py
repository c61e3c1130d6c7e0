"""Proofs of work already accepted (`spent_proofs`), so each is accepted once.

A proof is spent by inserting its digest; the primary key makes the insert
the test: a second insert of the same digest conflicts and does nothing,
on SQLite (BEGIN IMMEDIATE serialises writers) and on PostgreSQL (the
second insert waits for the first's commit, then finds the row). So of two
posts carrying the same proof at the same moment, in any two processes or
machines, exactly one spends it.

A row is only needed until its proof expires (after that the proof is
refused as expired before it is looked up), so spending also deletes the
expired rows, at most once a minute per process: the table holds only the
proofs of the last few minutes.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, Float, String, bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .schema import spent_proofs

# How often (seconds) spending also deletes the expired rows.
PURGE_EVERY = 60.0
_INSERT = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}


@functools.lru_cache(maxsize=2)
def _spend_statement(dialect: str) -> Any:
    return (
        _INSERT[dialect](spent_proofs)
        .values(
            digest=bindparam("digest", type_=String),
            expires_at=bindparam("expires_at", type_=Float),
        )
        .on_conflict_do_nothing(index_elements=[spent_proofs.c.digest])
        # The row comes back only when it was inserted (rowcount is not
        # reported for this statement by every driver).
        .returning(spent_proofs.c.digest)
    )


def spend(conn: Connection, digest: str, expires_at: float) -> bool:
    """Record the proof `digest` as spent; False when it was spent already."""
    result = conn.execute(
        _spend_statement(conn.dialect.name),
        {"digest": digest, "expires_at": expires_at},
    )
    return result.first() is not None


def is_spent(conn: Connection, digest: str) -> bool:
    """Say whether the proof `digest` has been spent (and not yet purged)."""
    query = select(spent_proofs.c.digest).where(spent_proofs.c.digest == digest)
    return conn.execute(query).first() is not None


def purge_expired(conn: Connection, now: float) -> int:
    """Delete the proofs that expired before `now`; return how many."""
    result = conn.execute(spent_proofs.delete().where(spent_proofs.c.expires_at < now))
    return result.rowcount
