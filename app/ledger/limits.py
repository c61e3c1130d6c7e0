"""The limits a submission must stay within, kept as counters in the ledger.

Rate limits per form and client IP and the daily quota per recipient alias
are token buckets, kept with GCRA: one row per key (`limit_buckets`) holding
its "theoretical arrival time". A limit of N per T seconds admits a burst of
N, then one more every T/N seconds. The undelivered backlog is one counter
row (`ledger_counters`), kept up to date wherever a row enters or leaves the
pending/sending states (queue.py). So checking a limit reads and writes a
fixed number of rows, however many submissions the table holds.

The checks run in the transaction that stores the row, after the backlog
counter row is locked (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE
serialises every writer), so every process and machine sharing the
database sees the same counts and no two posts can both take the last token.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Float, Integer, String, bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .driver import driver_args
from .schema import BACKLOG, counters, limit_buckets, submissions

DAY = 86400
# Float rounding must not refuse the Nth post of a burst of N.
_SLACK = 1e-6
_UPSERT = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}


class LimitExceeded(Exception):
    """A rate limit, recipient quota or backlog cap refused the submission."""

    def __init__(self, reason: str, retry_after: float, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = max(1, int(retry_after + 0.999))
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What a visitor's submission must stay within, kept in the ledger.

    rate: (count, seconds) token buckets per form and client IP.
    recipient_daily: a bucket of that many per recipient alias and 24 h.
    backlog: undelivered rows in all. dedupe_window: seconds within which
    the same content from the same client to the same form is one
    submission. 0 or () switches each off.
    """

    rate: tuple[tuple[int, int], ...] = ()
    recipient_daily: int = 0
    backlog: int = 0
    dedupe_window: float = 0.0


@dataclass(frozen=True)
class Bucket:
    """One token bucket a post must fit in: its key, size, period and history."""

    key: str
    reason: str
    count: int
    seconds: float
    # Which submissions rows it counts, to seed a bucket that has no row yet.
    history: Any
    history_params: tuple[tuple[str, Any], ...]

    @property
    def interval(self) -> float:
        return self.seconds / self.count


def _key(*parts: object) -> str:
    # Hashed: any form id, address or alias fits the 64-character column.
    joined = "\x00".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def buckets_for(
    limits: Limits | None, form_id: str, client_ip: str | None, alias: str
) -> list[Bucket]:
    """The buckets a post must fit in, in the order they are checked."""
    if limits is None:
        return []
    found = []
    if client_ip is not None:
        for count, seconds in limits.rate:
            found.append(
                Bucket(
                    key=_key("rate", form_id, client_ip, count, seconds),
                    reason="rate",
                    count=count,
                    seconds=float(seconds),
                    history=_rate_history(),
                    history_params=(("form_id", form_id), ("client_ip", client_ip)),
                )
            )
    if limits.recipient_daily:
        found.append(
            Bucket(
                key=_key("quota", alias, limits.recipient_daily, DAY),
                reason="quota",
                count=limits.recipient_daily,
                seconds=float(DAY),
                history=_quota_history(),
                history_params=(("alias", alias),),
            )
        )
    return found


@functools.lru_cache(maxsize=1)
def _rate_history() -> Any:
    c = submissions.c
    return (
        select(c.created_at)
        .where(
            c.form_id == bindparam("form_id", type_=String),
            c.client_ip == bindparam("client_ip", type_=String),
            c.created_at > bindparam("since", type_=Float),
        )
        .order_by(c.created_at.desc())
        .limit(bindparam("count", type_=Integer))
    )


@functools.lru_cache(maxsize=1)
def _quota_history() -> Any:
    c = submissions.c
    return (
        select(c.created_at)
        .where(
            c.recipient_alias == bindparam("alias", type_=String),
            c.created_at > bindparam("since", type_=Float),
        )
        .order_by(c.created_at.desc())
        .limit(bindparam("count", type_=Integer))
    )


@functools.lru_cache(maxsize=1)
def _read_bucket() -> Any:
    return select(limit_buckets.c.tat).where(
        limit_buckets.c.key == bindparam("key", type_=String)
    )


@functools.lru_cache(maxsize=2)
def _write_bucket(dialect: str) -> Any:
    upsert = _UPSERT[dialect](limit_buckets).values(
        key=bindparam("key", type_=String), tat=bindparam("tat", type_=Float)
    )
    return upsert.on_conflict_do_update(
        index_elements=[limit_buckets.c.key], set_={"tat": upsert.excluded.tat}
    )


@functools.lru_cache(maxsize=1)
def _read_backlog() -> Any:
    return (
        select(counters.c.value)
        .where(counters.c.name == BACKLOG)
        .with_for_update()  # PostgreSQL: one writer of new rows at a time
    )


@functools.lru_cache(maxsize=1)
def add_to_backlog() -> Any:
    """UPDATE the backlog counter by :delta (the statement, built once)."""
    return (
        counters.update()
        .where(counters.c.name == BACKLOG)
        .values(value=counters.c.value + bindparam("delta", type_=Integer))
    )


def lock_backlog(cursor: Any, engine: Engine) -> int:
    """Lock the backlog counter for this transaction and return its value.

    Every transaction that stores submissions takes this lock first, so on
    PostgreSQL they run one at a time, as SQLite's BEGIN IMMEDIATE makes
    them: each sees the buckets and rows the one before it committed.
    """
    cursor.execute(*driver_args(_read_backlog(), {}, engine))
    found = cursor.fetchone()
    return int(found[0]) if found is not None else 0


class Admission:
    """Decide, inside the storing transaction, which posts fit their limits."""

    def __init__(self, cursor: Any, engine: Engine, backlog: int) -> None:
        self.cursor = cursor
        self.engine = engine
        self.backlog = backlog

    def check(
        self, limits: Limits | None, buckets: Sequence[Bucket], now: float
    ) -> tuple[LimitExceeded | None, list[tuple[str, float]]]:
        """Return the refusal, or the bucket states to write if the post is stored.

        Reads one counter value (already held) and one row per bucket.
        """
        if limits is not None and limits.backlog and self.backlog >= limits.backlog:
            return LimitExceeded("backlog", 60, 503), []
        writes = []
        for bucket in buckets:
            tat = max(self._tat(bucket, now), now)
            if tat + bucket.interval - now > bucket.seconds + _SLACK:
                retry = tat + bucket.interval - bucket.seconds - now
                return LimitExceeded(bucket.reason, retry, 429), []
            writes.append((bucket.key, tat + bucket.interval))
        return None, writes

    def charge(self, writes: Sequence[tuple[str, float]], queued: bool = True) -> None:
        """Write the buckets' new states and count the stored row.

        `queued` False: the row is not for the workers (quarantined or
        dropped), so the backlog does not grow.
        """
        stmt = _write_bucket(self.engine.dialect.name)
        for key, tat in writes:
            params = {"key": key, "tat": tat}
            self.cursor.execute(*driver_args(stmt, params, self.engine))
        if queued:
            self.backlog += 1

    def _tat(self, bucket: Bucket, now: float) -> float:
        cursor = self.cursor
        cursor.execute(*driver_args(_read_bucket(), {"key": bucket.key}, self.engine))
        found = cursor.fetchone()
        if found is not None:
            return float(found[0])
        return self._seed(bucket, now)

    def _seed(self, bucket: Bucket, now: float) -> float:
        """Rebuild a bucket that has no row from the rows stored in its period.

        After an upgrade, a changed limit or a purge of idle buckets: at most
        `count` rows, once per bucket.
        """
        params = dict(bucket.history_params)
        params.update(since=now - bucket.seconds, count=bucket.count)
        self.cursor.execute(*driver_args(bucket.history, params, self.engine))
        tat = float("-inf")
        for (created_at,) in reversed(self.cursor.fetchall()):
            tat = max(tat, created_at) + bucket.interval
            tat = min(tat, created_at + bucket.seconds)
        return tat


@functools.lru_cache(maxsize=2)
def _open_bucket(dialect: str) -> Any:
    # A bucket's first row starts full (its time long past); one that is
    # there already is left alone, and the SELECT below then locks it.
    return (
        _UPSERT[dialect](limit_buckets)
        .values(key=bindparam("key", type_=String), tat=0.0)
        .on_conflict_do_nothing(index_elements=[limit_buckets.c.key])
    )


def take_token(
    conn: Connection, parts: Sequence[object], count: int, seconds: float, now: float
) -> float | None:
    """Take one token from a bucket of `count` per `seconds`, in `conn`'s transaction.

    Return None when there was one, or the seconds until the next comes
    back. The bucket row is locked (FOR UPDATE; SQLite's BEGIN IMMEDIATE), so
    concurrent takers across workers and machines are counted exactly.
    """
    key = _key("token", *parts, count, seconds)
    conn.execute(_open_bucket(conn.dialect.name), {"key": key})
    tat = conn.execute(_read_bucket().with_for_update(), {"key": key}).scalar_one()
    interval = seconds / count
    tat = max(float(tat), now)
    if tat + interval - now > seconds + _SLACK:
        return tat + interval - seconds - now
    conn.execute(_write_bucket(conn.dialect.name), {"key": key, "tat": tat + interval})
    return None


@dataclass(frozen=True)
class LimitCheck:
    """How one limit stands for a post, read without taking anything."""

    name: str  # "rate 5/60 s", "quota", "backlog"
    ok: bool
    detail: str


def peek(
    conn: Connection,
    limits: Limits | None,
    buckets: Sequence[Bucket],
    now: float,
) -> list[LimitCheck]:
    """Say how each limit stands for a post, reading only (explain).

    The same arithmetic as `Admission.check`, without locks or writes: a
    bucket with no row is seeded from history in memory only.
    """
    if limits is None:
        return []
    checks = []
    if limits.backlog:
        backlog = conn.execute(
            select(counters.c.value).where(counters.c.name == BACKLOG)
        ).scalar()
        backlog = int(backlog or 0)
        checks.append(
            LimitCheck(
                "backlog",
                backlog < limits.backlog,
                f"{backlog} undelivered, limit {limits.backlog}",
            )
        )
    for bucket in buckets:
        tat = conn.execute(_read_bucket(), {"key": bucket.key}).scalar()
        if tat is None:
            params = dict(bucket.history_params)
            params.update(since=now - bucket.seconds, count=bucket.count)
            tat = float("-inf")
            rows = conn.execute(bucket.history, params).scalars().all()
            for created_at in reversed(rows):
                tat = max(tat, created_at) + bucket.interval
                tat = min(tat, created_at + bucket.seconds)
        tat = max(float(tat), now)
        left = int((bucket.seconds - (tat - now)) / bucket.interval + _SLACK)
        left = max(0, min(bucket.count, left))
        name = (
            f"rate {bucket.count}/{bucket.seconds:g} s per client"
            if bucket.reason == "rate"
            else f"quota {bucket.count}/day per recipient"
        )
        if left:
            detail = f"{left} of {bucket.count} left"
        else:
            wait = tat + bucket.interval - bucket.seconds - now
            detail = f"none left; the next in {max(1, int(wait + 0.999))} s"
        checks.append(LimitCheck(name, left > 0, detail))
    return checks
