"""Owner accounts: argon2id passwords, and the user Flask-Login keeps in a session.

Passwords are hashed with argon2-cffi's PasswordHasher (argon2id, its RFC
9106 low-memory defaults) and never stored or logged. The session holds
`<id>:<session key>`; the key changes with the password, so setting a new
password signs every session of that owner out.
"""

from __future__ import annotations

import hmac
import threading
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email
from flask_login import UserMixin

from .ledger.owners import OwnerRecord, OwnerStore

if TYPE_CHECKING:
    from argon2 import PasswordHasher

MIN_PASSWORD = 12
# argon2 hashes whatever it is given: a megabyte password is work for us.
MAX_PASSWORD = 1024


class AccountError(ValueError):
    """An email or password that cannot be used; the message says why."""


class Owner(UserMixin):
    """A logged-in owner, as Flask-Login sees one."""

    def __init__(self, record: OwnerRecord) -> None:
        self.record = record
        self.email = record.email

    def get_id(self) -> str:
        """Return `<id>:<session key>`: stale once the password changes."""
        return f"{self.record.id}:{self.record.session_key}"


def normalise_email(value: str) -> str:
    """Check an owner's email (syntax only) and return it in one canonical form."""
    try:
        info = validate_email(
            value.strip(), check_deliverability=False, test_environment=True
        )
    except EmailNotValidError:
        raise AccountError(
            f"{value.strip()!r} is not an email address like name@example.com"
        ) from None
    return (info.ascii_email or info.normalized).lower()


def check_password(password: str) -> str:
    """Return the password if it may be used; raise AccountError saying why not."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"use a password of at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"use a password of at most {MAX_PASSWORD} characters")
    if password != password.strip():
        raise AccountError("the password starts or ends with a space")
    return password


class Owners:
    """The owner accounts: add, change, remove, and check a log-in."""

    def __init__(self, store: OwnerStore, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self._hasher = hasher
        self._dummy: str | None = None
        self._lock = threading.Lock()

    @property
    def hasher(self) -> PasswordHasher:
        """argon2-cffi's hasher (argon2id), made on first use.

        Not at start-up: the delivery workers build the same app and never
        check a password, so they need not load argon2 at all.
        """
        if self._hasher is None:
            from argon2 import PasswordHasher

            self._hasher = PasswordHasher()
        return self._hasher

    @hasher.setter
    def hasher(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher

    def add(self, email: str, password: str) -> Owner:
        """Create an owner; raise AccountError or OwnerExists."""
        email = normalise_email(email)
        record = self.store.add(email, self.hasher.hash(check_password(password)))
        return Owner(record)

    def set_password(self, email: str, password: str) -> bool:
        """Set a new password and sign the owner's sessions out; say if found."""
        email = normalise_email(email)
        new_hash = self.hasher.hash(check_password(password))
        return self.store.set_hash(email, new_hash, new_session=True)

    def remove(self, email: str) -> bool:
        """Delete the owner; say whether there was one."""
        return self.store.remove(normalise_email(email))

    def all(self) -> list[OwnerRecord]:
        """Every owner, oldest first."""
        return self.store.all()

    def exist(self) -> bool:
        """Tell whether any owner exists (the console is off until one does)."""
        return self.store.count() > 0

    def authenticate(self, email: str, password: str) -> Owner | None:
        """Return the owner if the email and password match, else None.

        An unknown email costs one hash check too, so the answer's timing
        does not tell which emails have accounts.
        """
        try:
            email = normalise_email(email)
        except AccountError:
            email = ""
        record = self.store.by_email(email) if email else None
        if record is None or len(password) > MAX_PASSWORD:
            self._verify(self._dummy_hash(), password[:MAX_PASSWORD])
            return None
        if not self._verify(record.password_hash, password):
            return None
        if self.hasher.check_needs_rehash(record.password_hash):
            # Parameters were raised since this hash was made: keep it current.
            self.store.set_hash(email, self.hasher.hash(password), new_session=False)
        self.store.logged_in(record.id)
        return Owner(record)

    def load(self, user_id: str) -> Owner | None:
        """Return the owner a session names, if its session key still holds."""
        owner_id, _, key = user_id.partition(":")
        if not owner_id.isdigit() or not key:
            return None
        record = self.store.by_id(int(owner_id))
        if record is None or not hmac.compare_digest(record.session_key, key):
            return None
        return Owner(record)

    def _verify(self, password_hash: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _dummy_hash(self) -> str:
        with self._lock:
            if self._dummy is None:
                self._dummy = self.hasher.hash("not anyone's password")
            return self._dummy
