"""Map errors to responses, in one place, and log each failure once here.

Delivery errors never reach a request: the workers (app/outbox.py) own them.
"""

from __future__ import annotations

import logging

from flask import Flask, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from .ledger import StorageError
from .views import contact_form, render_form

log = logging.getLogger("formpost.errors")

SEND_FAILED = "Sorry, your message could not be sent right now. Please try again."
CSRF_EXPIRED = (
    "This form has expired or was opened in another browser session. "
    "Your text is still here: please send it again."
)


def _hosted_form_post() -> bool:
    return request.method == "POST" and request.blueprint == "hosted"


def init_app(app: Flask) -> None:
    """Register the error handlers."""

    @app.errorhandler(StorageError)
    def _not_stored(exc: StorageError) -> ResponseReturnValue:
        # Nothing was committed, so we must not say "thanks". The cause goes
        # to the log for the operator, never to the visitor.
        log.error("submission not stored: %s", exc)
        if _hosted_form_post():
            form = contact_form()
            form.validate()  # re-attach normalised values; the input was valid
            response = render_form(form, 503, notice=SEND_FAILED)
        else:
            response = _error_page(ServiceUnavailable(SEND_FAILED))
        return response

    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError) -> ResponseReturnValue:
        log.info("CSRF check failed: %s", exc.description)
        if _hosted_form_post():
            # A fresh form carries a fresh token; the visitor's text is kept.
            return render_form(contact_form(), 400, notice=CSRF_EXPIRED)
        return _error_page(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        return _error_page(exc)


def _error_page(exc: HTTPException) -> ResponseReturnValue:
    messages = {
        400: "The request could not be understood.",
        404: "There is no page at this address.",
        405: "This address does not accept that kind of request.",
        413: "What you sent is too large. Please shorten your message and try again.",
    }
    code = exc.code or 500
    message = messages.get(code, exc.description or "Something went wrong.")
    return render_template(
        "error.html", code=code, title=exc.name, message=message
    ), code
