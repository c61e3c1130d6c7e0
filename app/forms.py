"""The hosted contact form and its validation rules."""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterable

from email_validator import EmailNotValidError
from flask import current_app
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, TimestampSigner
from wtforms import EmailField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from .clock import Clock
from .compose import reply_address
from .fieldmap import EMAIL_EXAMPLE, MAX_NAME, MAX_SUBJECT, MAX_VALUE
from .message import header_text_problem, normalize_newlines
from .services import services

TOKEN_MAX_AGE = 7 * 86400
SUBJECT_MAX = MAX_SUBJECT
MESSAGE_MAX = MAX_VALUE
NAME_MAX = MAX_NAME
EMAIL_MAX = 254


class _ClockSigner(TimestampSigner):
    """A TimestampSigner that reads the app's clock, so tests can move it."""

    def __init__(self, secret_key: str, clock: Clock) -> None:
        super().__init__(secret_key, salt="formpost.form-token")
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock.now())


def new_form_token(secret_key: str, clock: Clock) -> str:
    """Return a fresh single-use token for one rendered form, signed with the time."""
    signer = _ClockSigner(secret_key, clock)
    return signer.sign(secrets.token_urlsafe(18)).decode("ascii")


def form_token_age(secret_key: str, token: str | None, clock: Clock) -> float | None:
    """Return seconds since the form was rendered, or None for a bad token."""
    if not token or len(token) > 100:
        return None
    try:
        _, signed_at = _ClockSigner(secret_key, clock).unsign(
            token, max_age=TOKEN_MAX_AGE, return_timestamp=True
        )
    except BadSignature:
        return None
    return max(0.0, clock.now() - signed_at.timestamp())


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def _crlf_to_lf(value: str | None) -> str | None:
    # Browsers submit textarea newlines as CRLF; count and store one character.
    return normalize_newlines(value) if isinstance(value, str) else value


def single_line(form: FlaskForm, field: StringField) -> None:
    """Reject text that could break out of its header (see compose)."""
    problem = field.data and header_text_problem(field.data)
    if problem:
        raise ValidationError(f"Use a single line of plain text, without {problem}.")


def no_binary(form: FlaskForm, field: TextAreaField) -> None:
    """Allow newlines and tabs in the message, but no other control characters."""
    if field.data and any(
        unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in field.data
    ):
        raise ValidationError("The message contains control characters.")


def email_syntax(form: FlaskForm, field: EmailField) -> None:
    """Check the address syntax only: no DNS on the request path."""
    if not field.data:
        return
    try:
        field.data = reply_address(field.data)
    except EmailNotValidError:
        # The validator's own reason is written for developers.
        raise ValidationError(EMAIL_EXAMPLE) from None


class AliasField(SelectField):
    """A select whose only valid values are configured recipient aliases."""

    def pre_validate(self, form: FlaskForm) -> None:
        if self.data not in {value for value, _ in self.choices or ()}:
            raise ValidationError("Choose one of the listed recipients.")


class ContactForm(FlaskForm):
    """Recipient alias, optional name and email, subject and message."""

    recipient = AliasField("Recipient")
    name = StringField(
        "Your name",
        filters=[_strip],
        validators=[
            Optional(),
            single_line,
            Length(
                max=NAME_MAX, message=f"Keep your name under {NAME_MAX} characters."
            ),
        ],
    )
    email = EmailField(
        "Your email",
        filters=[_strip],
        validators=[
            Optional(),
            single_line,
            Length(max=EMAIL_MAX, message="That email address is too long."),
            email_syntax,
        ],
    )
    subject = StringField(
        "Subject",
        filters=[_strip],
        validators=[
            DataRequired("Enter a subject."),
            single_line,
            Length(
                max=SUBJECT_MAX,
                message=f"Keep the subject under {SUBJECT_MAX} characters.",
            ),
        ],
    )
    message = TextAreaField(
        "Message",
        filters=[_crlf_to_lf],
        validators=[
            DataRequired("Enter a message."),
            no_binary,
            Length(
                max=MESSAGE_MAX,
                message=f"Keep the message under {MESSAGE_MAX:,} characters.",
            ),
        ],
    )

    # Hidden from people by CSS; bots that fill every field fill this one.
    website = StringField("Leave this field empty")
    # One per rendered form, signed with the render time: posting the same
    # page twice (double click, reload, back-and-resubmit) maps to one ledger
    # row through it, and it tells how long the visitor took to fill the form.
    form_token = HiddenField()

    def dedupe_key(self) -> str:
        """Return the ledger's dedupe key for this rendered form."""
        return f"hosted:{self.form_token.data}"

    def set_recipients(self, aliases: Iterable[str]) -> None:
        """Offer exactly the configured aliases; anything else fails validation."""
        self.recipient.choices = [(alias, alias) for alias in aliases]
        # The select is hidden when there is one recipient; a post without it
        # still means that one.
        if len(self.recipient.choices) == 1 and not self.recipient.data:
            self.recipient.data = self.recipient.choices[0][0]


def hosted_form() -> ContactForm:
    """Build the hosted form bound to this request, offering the configured aliases.

    A form rendered fresh gets a new form token, signed with the time now.
    """
    form = ContactForm()
    form.set_recipients(current_app.config["MAIL_RECIPIENTS"])
    if not form.form_token.data:
        form.form_token.data = new_form_token(
            current_app.config["SECRET_KEY"], services().clock
        )
    return form
