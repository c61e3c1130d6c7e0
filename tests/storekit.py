"""Helpers for content tests: real composed messages, stored as accept does."""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address

from app.accept import Post
from app.compose import Submission, compose, new_message_id
from app.ledger import Ledger
from app.message import Envelope

MAIL_FROM = Address("Formpost", addr_spec="forms@formpost.test")
RECIPIENT = Address("Sales", addr_spec="sales@example.com")


def message_for(post: Post) -> Envelope:
    """Compose the email accept() would send for `post`."""
    return compose(
        Submission(
            recipient=RECIPIENT,
            subject=post.subject,
            message=post.message,
            name=post.name,
            email=post.email,
            fields=post.fields,
        ),
        mail_from=MAIL_FROM,
        message_id=new_message_id(MAIL_FROM),
        date=datetime.now(UTC),
    )


def hosted(
    n: int = 0,
    *,
    name: str = "Jane Doe",
    email: str = "jane.doe@example.com",
    subject: str | None = None,
    message: str | None = None,
    **extra,
) -> Post:
    """A hosted-form post."""
    return Post(
        form_id="hosted",
        recipient="sales",
        subject=subject if subject is not None else f"Question {n}",
        message=message if message is not None else f"Hello there, number {n}.",
        name=name,
        email=email,
        **extra,
    )


def endpoint(fields: tuple[tuple[str, str], ...], form_id: str = "site", **kw) -> Post:
    """A /f/ post with its fields as submitted."""
    values = dict(fields)
    return Post(
        form_id=form_id,
        recipient="sales",
        subject=kw.pop("subject", "New submission"),
        message=values.get("message", ""),
        name=values.get("name", ""),
        email=values.get("email", ""),
        fields=fields,
        **kw,
    )


def store(ledger: Ledger, post: Post) -> str:
    """Store `post` as accept() does (no limits); return its receipt."""
    return ledger.enqueue(
        message_for(post),
        form_id=post.form_id,
        alias=post.recipient,
        subject=post.subject,
        client_ip=post.client_ip,
        content=post.content(),
    )
