"""Map errors to responses, in one place, and log each failure once here.

Delivery errors never reach a request: the workers (app/outbox.py) own them.
Requests to the cross-site endpoint get JSON when the client wants JSON, and
a readable page otherwise; the hosted form gets itself back, input kept.
The API (/api/v1, when ADMIN_ENABLED) answers every error as JSON,
`{"error": {"code", "message"}}`, with `Cache-Control: no-store`.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from flask_babel import get_locale, gettext, ngettext
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from . import metrics
from .answers import error_page, http_message, refusal, render_form
from .api import ApiError
from .errors import Rejected, StorageError
from .forms import hosted_form
from .languages import DEFAULT_LOCALE
from .ledger import LimitExceeded
from .services import services

log = logging.getLogger("formpost.errors")

SEND_FAILED = _l("Sorry, your message could not be sent right now. Please try again.")
CSRF_EXPIRED = _l(
    "This form has expired or was opened in another browser session. "
    "Your text is still here: please send it again."
)
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
        form = form_id if form_id in services().forms else "unknown"
    metrics.submission(form, "rejected", reason)


def limit_message(exc: LimitExceeded) -> str:
    """Explain a refused submission to a person."""
    wait = _duration(exc.retry_after)
    if exc.reason == "backlog":
        return gettext(
            "We are receiving too many messages right now. Please try again soon."
        )
    if exc.reason == "quota":
        return gettext(
            "This recipient cannot take more messages today. Try again in %(wait)s.",
            wait=wait,
        )
    return gettext(
        "Too many messages from your address. Please try again in %(wait)s.",
        wait=wait,
    )


def _duration(seconds: int) -> str:
    if seconds < 90:
        return ngettext("%(num)d second", "%(num)d seconds", seconds)
    if seconds < 5400:
        minutes = round(seconds / 60)
        return ngettext("%(num)d minute", "%(num)d minutes", minutes)
    hours = round(seconds / 3600)
    return ngettext("%(num)d hour", "%(num)d hours", hours)


def _description(exc: HTTPException) -> str:
    """Werkzeug's own explanation, which is English only: other languages get ours."""
    if exc.description and str(get_locale()) == DEFAULT_LOCALE:
        return exc.description
    return gettext("Something went wrong.")


def _hosted_form_post() -> bool:
    return request.method == "POST" and request.blueprint == "hosted"


def _endpoint() -> bool:
    return request.blueprint == "endpoint"


def _api() -> bool:
    """Is this a request to the API (registered only when ADMIN_ENABLED)?"""
    path = request.path
    return (path == "/api" or path.startswith("/api/")) and (
        "api" in current_app.blueprints
    )


def api_error(
    status: int,
    code: str,
    message: str,
    parameter: str | None = None,
    headers: dict[str, str] | None = None,
) -> ResponseReturnValue:
    """An API error as JSON, never cached; 401 and 403 say Bearer (RFC 6750)."""
    error: dict[str, str] = {"code": code, "message": message}
    if parameter is not None:
        error["parameter"] = parameter
    headers = {**(headers or {}), "Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="formpost"' + (
            ', error="invalid_token"' if code == "invalid_token" else ""
        )
    elif status == 403:
        headers["WWW-Authenticate"] = (
            'Bearer realm="formpost", error="insufficient_scope"'
        )
    return jsonify(error=error), status, headers


def init_app(app: Flask) -> None:
    """Register the error handlers."""

    @app.errorhandler(ApiError)
    def _api_refused(exc: ApiError) -> ResponseReturnValue:
        log.info("API %s %s: %s %s", request.method, request.path, exc.status, exc.code)
        return api_error(exc.status, exc.code, exc.message, exc.parameter)

    @app.errorhandler(Rejected)
    def _rejected(exc: Rejected) -> ResponseReturnValue:
        log.info("rejected %s %s: %s", request.method, request.path, exc.status)
        _count(REJECTION_REASONS.get(exc.status, "invalid"))
        return refusal(exc.status, exc.errors, exc.retry_after, exc.codes, exc.files)

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
            form = hosted_form()
            form.validate()
            body, status = render_form(form, exc.status, notice=message)
            return body, status, {"Retry-After": str(exc.retry_after)}
        return refusal(exc.status, {"_form": message}, exc.retry_after)

    @app.errorhandler(StorageError)
    def _not_stored(exc: StorageError) -> ResponseReturnValue:
        if _api():
            log.error("API %s %s: %s", request.method, request.path, exc)
            return api_error(503, "unavailable", "the database did not answer")
        # Nothing was committed, so we must not say "thanks". The cause goes
        # to the log for the operator, never to the visitor.
        log.error("submission not stored: %s", exc)
        _count("storage")
        if _hosted_form_post():
            form = hosted_form()
            form.validate()  # re-attach normalised values; the input was valid
            return render_form(form, 503, notice=str(SEND_FAILED))
        return refusal(503, {"_form": str(SEND_FAILED)})

    @app.errorhandler(CSRFError)
    def _csrf_failed(exc: CSRFError) -> ResponseReturnValue:
        log.info("CSRF check failed: %s", exc.description)
        _count("csrf")
        if _hosted_form_post():
            # A fresh form carries a fresh token; the visitor's text is kept.
            return render_form(hosted_form(), 400, notice=str(CSRF_EXPIRED))
        return error_page(exc.code or 400, exc.name)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        code = exc.code or 500
        if _api():
            extra = {
                name: value
                for name, value in exc.get_headers()
                if name.lower() != "content-type"
            }
            name = (exc.name or "error").lower().replace(" ", "_")
            return api_error(code, name, exc.description or name, headers=extra)
        if request.method == "POST" and code in REJECTION_REASONS:
            _count(REJECTION_REASONS[code])
        message = http_message(code) or _description(exc)
        if _endpoint() or request.path.startswith("/f/"):
            return refusal(code, {"_form": message})
        return error_page(code, exc.name, message)
