"""The hosted contact form: GET shows it, POST validates, composes and stores."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import (
    Blueprint,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from . import metrics
from .compose import Submission, compose, new_message_id
from .forms import ContactForm, form_token_age, new_form_token
from .ledger import Ledger, Limits, new_receipt

bp = Blueprint("hosted", __name__)
TOO_FAST = "That was quick! Please check your message, then send it again."
log = logging.getLogger("formpost.views")


def ledger() -> Ledger:
    """Return the ledger built by create_app."""
    return current_app.extensions["formpost.ledger"]


def contact_form() -> ContactForm:
    """Build the form bound to the current request, offering configured aliases."""
    form = ContactForm()
    form.set_recipients(current_app.config["MAIL_RECIPIENTS"])
    if not form.form_token.data:
        form.form_token.data = new_form_token(current_app.config["SECRET_KEY"])
    return form


def render_form(
    form: ContactForm, status: int = 200, notice: str | None = None
) -> ResponseReturnValue:
    """Render the page with the visitor's input, field errors and a notice."""
    return (
        render_template(
            "form.html",
            form=form,
            notice=notice,
            development=current_app.config["DEVELOPMENT"],
        ),
        status,
    )


@bp.get("/")
def show() -> ResponseReturnValue:
    """Show the empty form."""
    return render_form(contact_form())


@bp.post("/")
def submit() -> ResponseReturnValue:
    """Validate, compose and commit to the ledger; then 303 to the thank-you page.

    The request never talks SMTP: the workers deliver. A StorageError (the
    commit failed) propagates to handlers.py, which answers 503.
    """
    cfg = current_app.config
    form = contact_form()
    if form.website.data:
        # The honeypot: answered like success, nothing stored.
        log.info("hosted form: honeypot filled, nothing stored")
        metrics.submission("hosted", "rejected", "honeypot")
        session["receipt"] = new_receipt()
        return redirect(url_for(".thanks"), code=303)
    if not form.validate():
        metrics.submission("hosted", "rejected", "invalid")
        return render_form(form, 400, notice="Please correct the highlighted fields.")
    age = form_token_age(cfg["SECRET_KEY"], form.form_token.data)
    if age is None:
        form.form_token.data = new_form_token(cfg["SECRET_KEY"])
    if cfg["MIN_FILL_SECONDS"] and (age is None or age < cfg["MIN_FILL_SECONDS"]):
        # Faster than a person types: most likely a bot. A person loses
        # nothing: the form comes back filled in and the next try passes.
        metrics.submission("hosted", "rejected", "too_fast")
        return render_form(form, 400, notice=TOO_FAST)

    recipient = cfg["MAIL_RECIPIENTS"][form.recipient.data]
    mail_from = cfg["MAIL_FROM"]
    message = compose(
        Submission(
            recipient=recipient.address,
            subject=form.subject.data,
            message=form.message.data,
            name=form.name.data or "",
            email=form.email.data or "",
        ),
        mail_from=mail_from,
        message_id=new_message_id(mail_from),
        date=datetime.now(UTC),
    )
    receipt = ledger().enqueue(
        message,
        form_id="hosted",
        alias=recipient.alias,
        subject=form.subject.data,
        dedupe_key=form.dedupe_key(),
        client_ip=request.remote_addr,
        limits=Limits(
            rate=cfg["RATE_LIMIT"],
            recipient_daily=cfg["RECIPIENT_DAILY_QUOTA"],
            backlog=cfg["BACKLOG_LIMIT"],
        ),
    )
    session["receipt"] = g.receipt = receipt
    metrics.submission("hosted", "accepted")
    return redirect(url_for(".thanks"), code=303)


@bp.get("/thanks")
def thanks() -> ResponseReturnValue:
    """Confirm that the message is stored, with its receipt id."""
    return render_template("thanks.html", receipt=session.get("receipt"))
