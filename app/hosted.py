"""The hosted contact form (blueprint "hosted"): GET shows it, POST accepts it."""

from __future__ import annotations

import math
import os

from flask import (
    Blueprint,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext, ngettext

from . import metrics
from .accept import Post, accept, decoy
from .answers import render_form
from .endpoint import challenge_response
from .errors import Rejected
from .forms import ContactForm, form_token_age, hosted_form, new_form_token
from .i18n import lang_arg, mail_locale
from .origin import client_ip, request_origin
from .services import services
from .uploads import AttachmentSettings, Uploads, receive_parsed, size_text

bp = Blueprint("hosted", __name__)
# The hosted form's own fields that are not what the visitor wrote.
NOT_POSTED_TEXT = frozenset({"csrf_token", "form_token", "website"})


def too_fast(wait: float) -> str:
    """Tell a visitor who sent faster than MIN_FILL_SECONDS how long to wait."""
    seconds = max(1, math.ceil(wait))
    return ngettext(
        "That was quick! Please check your message, wait %(num)d more second, "
        "then send it again.",
        "That was quick! Please check your message, wait %(num)d more seconds, "
        "then send it again.",
        seconds,
    )


def file_settings() -> AttachmentSettings | None:
    """The hosted form takes files as the default form does (ATTACHMENTS_*)."""
    default = services().forms.get("default")
    return default.attachments if default is not None else None


def allow_files() -> None:
    """Before the CSRF check parses the hosted form: room for its files.

    Flask parses this body (spooling files to temporary files, not memory);
    MAX_CONTENT_LENGTH is raised by the files' total for this view only.
    """
    if request.method != "POST" or request.endpoint != "hosted.submit":
        return
    settings = file_settings()
    if settings is not None and request.mimetype == "multipart/form-data":
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        request.max_content_length = settings.body_limit(limit)


def _posted_files(settings: AttachmentSettings | None) -> Uploads:
    """The files chosen in the form, checked; none if the form takes none."""
    if settings is None:
        return Uploads()
    parts = [
        (name, storage.filename, storage.stream)
        for name, storage in request.files.items(multi=True)
        if storage.filename
    ]
    spool = os.path.join(current_app.instance_path, "uploads")
    return receive_parsed(parts, settings, spool)


@bp.app_template_filter("filesize")
def filesize(size: int) -> str:
    """Say a size in kB or MB, as the limits are written."""
    return size_text(size)


@bp.get("/")
def show() -> ResponseReturnValue:
    """Show the empty form."""
    return render_form(hosted_form())


@bp.post("/")
def submit() -> ResponseReturnValue:
    """Parse and check the form, accept it, then 303 to the thank-you page.

    The request never talks SMTP: the workers deliver. Refusals from the
    accept path (limits, storage) are answered by handlers.py.
    """
    cfg = current_app.config
    svc = services()
    form = hosted_form()
    honeypot = bool(form.website.data)
    if not form.validate():
        if honeypot:
            # A bot that also broke the form: nothing to compose, so nothing
            # stored; answered like success all the same.
            session["receipt"] = decoy("hosted", "honeypot")
            return redirect(url_for(".thanks", lang=lang_arg()), code=303)
        metrics.submission("hosted", "rejected", "invalid")
        return render_form(
            form, 400, notice=gettext("Please correct the highlighted fields.")
        )
    age = form_token_age(cfg["SECRET_KEY"], form.form_token.data, svc.clock)
    if age is None:
        form.form_token.data = new_form_token(cfg["SECRET_KEY"], svc.clock)
    least = cfg["MIN_FILL_SECONDS"]
    # A filled honeypot skips the wait below (a bot must not learn from
    # it) and goes to the gate, which drops it like an accepted post.
    if not honeypot and least and (age is None or age < least):
        # Faster than a person types: most likely a bot. A person loses
        # nothing: the form comes back filled in, saying how long to wait,
        # and the next try after that passes. A bad token was replaced by a
        # fresh one above, so the whole minimum starts again.
        metrics.submission("hosted", "rejected", "too_fast")
        return render_form(form, 400, notice=too_fast(least - (age or 0.0)))
    try:
        uploads = _posted_files(file_settings())
    except Rejected as refused:
        # Everything typed comes back; files cannot be put back in a file
        # input by the server, so the message asks for them again.
        metrics.submission("hosted", "rejected", "file")
        notice = " ".join(refused.errors.values())
        return render_form(form, refused.status, notice=notice)
    try:
        return _accept(form, uploads, honeypot, age)
    finally:
        uploads.close()


def _accept(
    form: ContactForm, uploads: Uploads, honeypot: bool, age: float | None
) -> ResponseReturnValue:
    cfg = current_app.config
    svc = services()
    session["receipt"] = accept(
        svc,
        Post(
            form_id="hosted",
            language=mail_locale(cfg["FORM_LANGUAGE"]),
            recipient=form.recipient.data,
            subject=form.subject.data,
            message=form.message.data,
            name=form.name.data or "",
            email=form.email.data or "",
            dedupe_key=form.dedupe_key(),
            client_ip=client_ip(),
            limits=svc.limits(cfg["RATE_LIMIT"]),
            origin=request_origin(),
            user_agent=request.headers.get("User-Agent"),
            # What the layers read beyond the four fields (a proof of
            # work's `altcha`); the form's own tokens are not the visitor's.
            pairs=tuple(
                (k, v)
                for k, v in request.form.items(multi=True)
                if k not in NOT_POSTED_TEXT
            ),
            honeypot_filled=honeypot,
            fill_seconds=age,
            channels=tuple(svc.channels("hosted", form.email.data or None)),
            files=tuple(uploads.files),
        ),
    )
    return redirect(url_for(".thanks", lang=lang_arg()), code=303)


@bp.get("/challenge")
def challenge() -> ResponseReturnValue:
    """The hosted form's own proof-of-work challenge (same origin: no CORS)."""
    return challenge_response("hosted")


@bp.get("/thanks")
def thanks() -> ResponseReturnValue:
    """Confirm that the message is stored, with its receipt id."""
    return render_template("thanks.html", receipt=session.get("receipt"))
