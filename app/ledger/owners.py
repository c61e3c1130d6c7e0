"""The console's owner accounts, stored beside the submissions.

Holds what an account is (an email, an argon2id hash, a session key) and
nothing about how passwords are checked: app/owners.py does that.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..clock import Clock
from ..errors import StorageError
from .driver import reading, writing
from .schema import owners


class OwnerExists(Exception):
    """An owner with this email is already there."""


@dataclass(frozen=True)
class OwnerRecord:
    """One owner account as stored."""

    id: int
    email: str
    password_hash: str
    session_key: str
    created_at: float
    last_login_at: float | None


class OwnerStore:
    """Add, find, change and remove owner accounts; StorageError on failure."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def _connection(self, write: bool) -> AbstractContextManager[Connection]:
        return writing(self.engine) if write else reading(self.engine)

    def add(self, email: str, password_hash: str) -> OwnerRecord:
        """Store a new owner; raise OwnerExists if the email is taken."""
        values = {
            "email": email,
            "password_hash": password_hash,
            "session_key": secrets.token_hex(16),
            "created_at": self.clock.now(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(owners).values(**values))
        except IntegrityError as exc:
            raise OwnerExists(email) from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"could not add the owner: {exc}") from exc
        found = self.by_email(email)
        if found is None:  # removed in between by another process
            raise StorageError("the new owner vanished before it could be read")
        return found

    def by_email(self, email: str) -> OwnerRecord | None:
        """Return the owner with this (normalised) email, or None."""
        with self._connection(write=False) as conn:
            row = conn.execute(select(owners).where(owners.c.email == email)).first()
        return None if row is None else OwnerRecord(**row._mapping)

    def by_id(self, owner_id: int) -> OwnerRecord | None:
        """Return the owner with this id, or None."""
        with self._connection(write=False) as conn:
            row = conn.execute(select(owners).where(owners.c.id == owner_id)).first()
        return None if row is None else OwnerRecord(**row._mapping)

    def all(self) -> list[OwnerRecord]:
        """Every owner, oldest first."""
        with self._connection(write=False) as conn:
            rows = conn.execute(select(owners).order_by(owners.c.id)).all()
        return [OwnerRecord(**row._mapping) for row in rows]

    def count(self) -> int:
        """How many owners there are."""
        with self._connection(write=False) as conn:
            return conn.execute(select(func.count()).select_from(owners)).scalar() or 0

    def set_hash(self, email: str, password_hash: str, new_session: bool) -> bool:
        """Store a new hash; with new_session, sign every session out. Say if found."""
        values: dict[str, object] = {"password_hash": password_hash}
        if new_session:
            values["session_key"] = secrets.token_hex(16)
        with self._connection(write=True) as conn:
            result = conn.execute(
                update(owners).where(owners.c.email == email).values(**values)
            )
        return result.rowcount == 1

    def logged_in(self, owner_id: int) -> None:
        """Remember when the owner last logged in."""
        with self._connection(write=True) as conn:
            conn.execute(
                update(owners)
                .where(owners.c.id == owner_id)
                .values(last_login_at=self.clock.now())
            )

    def remove(self, email: str) -> bool:
        """Delete the owner; say whether there was one."""
        with self._connection(write=True) as conn:
            result = conn.execute(delete(owners).where(owners.c.email == email))
        return result.rowcount == 1
