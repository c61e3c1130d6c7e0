"""The hosted contact form and its validation rules."""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterable

from email_validator import EmailNotValidError
from flask import current_app
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, TimestampSigner
from wtforms import EmailField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from .clock import Clock
from .compose import reply_address
from .fieldmap import EMAIL_EXAMPLE, MAX_NAME, MAX_SUBJECT, MAX_VALUE
from .i18n import number
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


# header_text_problem's words (app/message.py, a leaf), for the visitor.
PROBLEMS = {
    "control characters or line breaks": _l("control characters or line breaks"),
    "an encoded-word sequence (=?...?=)": _l("an encoded-word sequence (=?...?=)"),
}


def single_line(form: FlaskForm, field: StringField) -> None:
    """Reject text that could break out of its header (see compose)."""
    problem = field.data and header_text_problem(field.data)
    if problem:
        raise ValidationError(
            gettext(
                "Use a single line of plain text, without %(problem)s.",
                problem=str(PROBLEMS.get(problem, problem)),
            )
        )


def no_binary(form: FlaskForm, field: TextAreaField) -> None:
    """Allow newlines and tabs in the message, but no other control characters."""
    if field.data and any(
        unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in field.data
    ):
        raise ValidationError(gettext("The message contains control characters."))


def email_syntax(form: FlaskForm, field: EmailField) -> None:
    """Check the address syntax only: no DNS on the request path."""
    if not field.data:
        return
    try:
        field.data = reply_address(field.data)
    except EmailNotValidError:
        # The validator's own reason is written for developers.
        raise ValidationError(str(EMAIL_EXAMPLE)) from None


class AliasField(SelectField):
    """A select whose only valid values are configured recipient aliases."""

    def pre_validate(self, form: FlaskForm) -> None:
        if self.data not in {value for value, _ in self.choices or ()}:
            raise ValidationError(gettext("Choose one of the listed recipients."))


class MaxLength(Length):
    """Length(max=...) whose message shows the limit as the locale writes numbers."""

    def __init__(self, limit: int, message: str) -> None:
        # `message` is a lazy_gettext with a %(max)s placeholder.
        super().__init__(max=limit)
        self.text = message

    def __call__(self, form: FlaskForm, field: StringField) -> None:
        if field.data and len(field.data) > self.max:
            raise ValidationError(str(self.text) % {"max": number(self.max)})


class ContactForm(FlaskForm):
    """Recipient alias, optional name and email, subject and message."""

    recipient = AliasField(_l("Recipient"))
    name = StringField(
        _l("Your name"),
        filters=[_strip],
        validators=[
            Optional(),
            single_line,
            MaxLength(NAME_MAX, _l("Keep your name under %(max)s characters.")),
        ],
    )
    email = EmailField(
        _l("Your email"),
        filters=[_strip],
        validators=[
            Optional(),
            single_line,
            Length(max=EMAIL_MAX, message=_l("That email address is too long.")),
            email_syntax,
        ],
    )
    subject = StringField(
        _l("Subject"),
        filters=[_strip],
        validators=[
            DataRequired(_l("Enter a subject.")),
            single_line,
            MaxLength(SUBJECT_MAX, _l("Keep the subject under %(max)s characters.")),
        ],
    )
    message = TextAreaField(
        _l("Message"),
        filters=[_crlf_to_lf],
        validators=[
            DataRequired(_l("Enter a message.")),
            no_binary,
            MaxLength(MESSAGE_MAX, _l("Keep the message under %(max)s characters.")),
        ],
    )

    # Hidden from people by CSS; bots that fill every field fill this one.
    website = StringField(_l("Leave this field empty"))
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
