"""Signed, expiring links to a submission's files, for email too large to carry them.

The link names the submission (its receipt) and is signed with SECRET_KEY
(itsdangerous), so it cannot be made up or pointed at another submission,
and it expires after LINK_DAYS. It is not a bearer token: the console route
also requires the owner to be logged in, so a forwarded email does not hand
the files to whoever reads it.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer

LINK_DAYS = 30
_SALT = "formpost.attachments"


def make_token(secret: str, receipt: str) -> str:
    """Sign a submission's receipt into a URL-safe token."""
    return URLSafeTimedSerializer(secret, salt=_SALT).dumps(receipt)


def read_token(
    secret: str, token: str, max_age: float = LINK_DAYS * 86400
) -> str | None:
    """Return the receipt a valid, unexpired token names; None for any other."""
    try:
        receipt = URLSafeTimedSerializer(secret, salt=_SALT).loads(
            token, max_age=max_age
        )
    except BadSignature:  # SignatureExpired is one
        return None
    return receipt if isinstance(receipt, str) else None
