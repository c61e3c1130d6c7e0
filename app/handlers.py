"""Map errors to responses, in one place, and log each failure once here.

Delivery errors never reach a request: the workers (app/outbox.py) own them.
Requests to the cross-site endpoint get JSON when the client wants JSON, and
a readable page otherwise; the hosted form gets itself back, input kept.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from . import metrics
from .endpoint import forms, request_origin, wants_json
from .errors import Rejected
from .ledger import LimitExceeded, StorageError
from .views import contact_form, render_form

log = logging.getLogger("formpost.errors")

SEND_FAILED = "Sorry, your message could not be sent right now. Please try again."
CSRF_EXPIRED = (
    "This form has expired or was opened in another browser session. "
    "Your text is still here: please send it again."
)
HTTP_MESSAGES = {
    400: "The request could not be understood.",
    404: "There is no page at this address.",
    405: "This address does not accept that kind of request.",
    413: "What you sent is too large. Please shorten your message and try again.",
    415: "This kind of upload is not supported.",
}


REJECTION_REASONS = {
    400: "malformed",
    403: "origin",
    404: "unknown_form",
    413: "too_large",
    415: "content_type",
    422: "invalid",
}


def _count(reason: str) -> None:
    """Count a refused submission under its form (known forms only)."""
    if request.method != "POST":
        return
    if request.blueprint == "hosted":
        form = "hosted"
    else:
        form_id = (request.view_args or {}).get("form_id", "")
        form = form_id if form_id in forms() else "unknown"
    metrics.submission(form, "rejected", reason)


def limit_message(exc: LimitExceeded) -> str:
    """Explain a refused submission to a person."""
    wait = _duration(exc.retry_after)
    if exc.reason == "backlog":
        return "We are receiving too many messages right now. Please try again soon."
    if exc.reason == "quota":
        return f"This recipient cannot take more messages today. Try again in {wait}."
    return f"Too many messages from your address. Please try again in {wait}."


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes"
    return f"{round(seconds / 3600)} hours"


def _hosted_form_post() -> bool:
    return request.method == "POST" and request.blueprint == "hosted"


def _endpoint() -> bool:
    return request.blueprint == "endpoint"


def init_app(app: Flask) -> None:
    """Register the error handlers."""

    @app.errorhandler(Rejected)
    def _rejected(exc: Rejected) -> ResponseReturnValue:
        log.info("rejected %s %s: %s", request.method, request.path, exc.status)
        _count(REJECTION_REASONS.get(exc.status, "invalid"))
        return refusal(exc.status, exc.errors, exc.retry_after)

    @app.errorhandler(LimitExceeded)
    def _limited(exc: LimitExceeded) -> ResponseReturnValue:
        log.warning(
            "%s limit reached for %s from %s",
            exc.reason,
            request.path,
            request.remote_addr,
        )
        _count(exc.reason)
        message = limit_message(exc)
        if _hosted_form_post():
            form = contact_form()
            form.validate()
            body, status = render_form(form, exc.status, notice=message)
            return body, status, {"Retry-After": str(exc.retry_after)}
        return refusal(exc.status, {"_form": message}, exc.retry_after)

    @app.errorhandler(StorageError)
    def _not_stored(exc: StorageError) -> ResponseReturnValue:
        # Nothing was committed, so we must not say "thanks". The cause goes
        # to the log for the operator, never to the visitor.
        log.error("submission not stored: %s", exc)
        _count("storage")
        if _hosted_form_post():
            form = contact_form()
            form.validate()  # re-attach normalised values; the input was valid
            return render_form(form, 503, notice=SEND_FAILED)
        return refusal(503, {"_form": SEND_FAILED})

    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError) -> ResponseReturnValue:
        log.info("CSRF check failed: %s", exc.description)
        _count("csrf")
        if _hosted_form_post():
            # A fresh form carries a fresh token; the visitor's text is kept.
            return render_form(contact_form(), 400, notice=CSRF_EXPIRED)
        return _error_page(exc.code or 400, exc.name)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        if request.method == "POST" and code in REJECTION_REASONS:
            _count(REJECTION_REASONS[code])
        message = HTTP_MESSAGES.get(code, exc.description or "Something went wrong.")
        if _endpoint() or request.path.startswith("/f/"):
            return refusal(code, {"_form": message})
        return _error_page(code, exc.name, message)


def refusal(
    status: int, errors: dict[str, str], retry_after: int | None = None
) -> ResponseReturnValue:
    """Answer a refused cross-site post: JSON, or a page with a link back."""
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if wants_json():
        return jsonify(ok=False, errors=errors), status, headers
    title = {
        403: "Not allowed",
        404: "Form not found",
        413: "Too large",
        415: "Unsupported upload",
        429: "Please slow down",
        503: "Please try again later",
    }.get(status, "Please check the form")
    body = render_template(
        "error.html",
        code=status,
        title=title,
        message=None,
        errors=errors,
        back=_back_link(),
    )
    return body, status, headers


def _back_link() -> str | None:
    """The posting page, when it is on one of the form's allowed origins."""
    form = forms().get((request.view_args or {}).get("form_id", ""))
    origin = request_origin()
    if form is None or origin is None or origin not in form.allowed_origins:
        return None
    referer = request.headers.get("Referer", "")
    parts = urlsplit(referer)
    if referer and f"{parts.scheme}://{parts.netloc}" == origin:
        return referer
    return origin + "/"


def _error_page(
    code: int, title: str, message: str | None = None
) -> ResponseReturnValue:
    message = message or HTTP_MESSAGES.get(code, "Something went wrong.")
    return (
        render_template("error.html", code=code, title=title, message=message),
        code,
    )
