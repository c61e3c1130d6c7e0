"""Tokens for the submissions API (/api/v1), stored beside the submissions.

A token is `fp_` and 32 random bytes (secrets.token_urlsafe), shown once
when made. Only its SHA-256 is stored: a token of 256 random bits cannot be
guessed or brute-forced from its hash, so the slow, salted hashes passwords
need (argon2id, owners.py) would only cost time on every API request. A
lookup finds the row by hash and compares with hmac.compare_digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..clock import Clock
from ..errors import StorageError
from .driver import reading, writing
from .schema import api_tokens

PREFIX = "fp_"
# last_used_at is written at most this often per token: reads stay reads.
TOUCH_EVERY = 60.0
# Longer than any token we make (fp_ + 43): refuse before hashing.
MAX_TOKEN = 128


class TokenExists(Exception):
    """A token with this name is already there (revoked ones keep their name)."""


@dataclass(frozen=True)
class TokenRecord:
    """One API token as stored (its hash, never the token)."""

    id: int
    name: str
    token_hash: str
    can_write: bool
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def scope(self) -> str:
        """`write` or `read`."""
        return "write" if self.can_write else "read"


def new_token() -> str:
    """Return a fresh token: the prefix and 256 random bits, URL-safe."""
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Return what is stored for a token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Add, find, list and revoke API tokens; StorageError on database failure."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def add(self, name: str, can_write: bool) -> tuple[TokenRecord, str]:
        """Store a new token's hash; return the record and the token (shown once).

        Raise TokenExists if the name is taken.
        """
        token = new_token()
        values = {
            "name": name,
            "token_hash": token_hash(token),
            "can_write": can_write,
            "created_at": self.clock.now(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_tokens).values(**values))
        except IntegrityError as exc:
            raise TokenExists(name) from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"could not add the token: {exc}") from exc
        found = self.by_name(name)
        if found is None:  # removed in between by another process
            raise StorageError("the new token vanished before it could be read")
        return found, token

    def by_name(self, name: str) -> TokenRecord | None:
        """Return the token named `name` (revoked or not), or None."""
        with reading(self.engine) as conn:
            row = conn.execute(
                select(api_tokens).where(api_tokens.c.name == name)
            ).first()
        return None if row is None else _record(row)

    def authenticate(self, token: str) -> TokenRecord | None:
        """Return the live token's record, or None for an unknown or revoked one.

        Remembers when it was used, writing at most once a minute per token.
        """
        if not token.startswith(PREFIX) or len(token) > MAX_TOKEN:
            return None
        digest = token_hash(token)
        with reading(self.engine) as conn:
            row = conn.execute(
                select(api_tokens).where(api_tokens.c.token_hash == digest)
            ).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        record = _record(row)
        if record.revoked_at is not None:
            return None
        now = self.clock.now()
        if record.last_used_at is None or now - record.last_used_at >= TOUCH_EVERY:
            self._touch(record.id, now)
        return record

    def _touch(self, token_id: int, now: float) -> None:
        c = api_tokens.c
        stale = (c.last_used_at.is_(None)) | (c.last_used_at <= now - TOUCH_EVERY)
        with writing(self.engine) as conn:
            conn.execute(
                update(api_tokens)
                .where(c.id == token_id, stale)
                .values(last_used_at=now)
            )

    def all(self) -> list[TokenRecord]:
        """Every token, oldest first, revoked ones too."""
        with reading(self.engine) as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id)).all()
        return [_record(row) for row in rows]

    def revoke(self, name: str) -> bool:
        """Revoke the live token named `name` at once; say whether there was one."""
        c = api_tokens.c
        with writing(self.engine) as conn:
            result = conn.execute(
                update(api_tokens)
                .where(c.name == name, c.revoked_at.is_(None))
                .values(revoked_at=self.clock.now())
            )
        return result.rowcount == 1


def _record(row: object) -> TokenRecord:
    values = dict(row._mapping)  # type: ignore[attr-defined]
    values["can_write"] = bool(values["can_write"])
    return TokenRecord(**values)
