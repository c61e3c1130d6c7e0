"""How Formpost answers: the hosted form again, a page, or JSON.

Shared by the views and by handlers.py, which turns errors into these
answers; neither imports the other.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from flask import current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from .forms import ContactForm
from .origin import request_origin
from .postbody import too_large_message
from .services import services
from .uploads import AttachmentSettings

HTTP_MESSAGES = {
    400: _l("The request could not be understood."),
    404: _l("There is no page at this address."),
    405: _l("This address does not accept that kind of request."),
    415: _l("This kind of upload is not supported."),
}
REFUSAL_TITLES = {
    403: _l("Not allowed"),
    404: _l("Form not found"),
    413: _l("Too large"),
    415: _l("Unsupported upload"),
    429: _l("Please slow down"),
    503: _l("Please try again later"),
}
# Werkzeug's names of the HTTP errors Formpost's pages show as titles.
HTTP_TITLES = {
    400: _l("Bad Request"),
    403: _l("Forbidden"),
    404: _l("Not Found"),
    405: _l("Method Not Allowed"),
    413: _l("Request Entity Too Large"),
    415: _l("Unsupported Media Type"),
    429: _l("Too Many Requests"),
    500: _l("Internal Server Error"),
    503: _l("Service Unavailable"),
}


def wants_json() -> bool:
    """Tell whether the client posted JSON or prefers JSON over HTML."""
    if request.is_json:
        return True
    return _prefers_json(request.headers.get("Accept", ""))


@functools.lru_cache(maxsize=256)
def _prefers_json(accept: str) -> bool:
    # Clients send a handful of distinct Accept headers (one per browser and
    # library), so each is parsed once rather than on every post.
    best = parse_accept_header(accept, MIMEAccept).best_match(
        ["text/html", "application/json"]
    )
    return best == "application/json"


def render_form(
    form: ContactForm, status: int = 200, notice: str | None = None
) -> ResponseReturnValue:
    """Render the hosted form with the visitor's input, field errors and a notice."""
    return (
        render_template(
            "form.html",
            form=form,
            notice=notice,
            development=current_app.config["DEVELOPMENT"],
            attachments=_hosted_attachments(),
        ),
        status,
    )


def _hosted_attachments() -> AttachmentSettings | None:
    # The hosted form takes files as the default form does (ATTACHMENTS_*).
    default = services().forms.get("default")
    return default.attachments if default is not None else None


# For errors that carry no code of their own (Rejected.codes).
STATUS_CODES = {
    400: "MALFORMED",
    403: "ORIGIN_NOT_ALLOWED",
    404: "NO_SUCH_FORM",
    405: "METHOD_NOT_ALLOWED",
    413: "TOO_LARGE",
    415: "UNSUPPORTED_CONTENT_TYPE",
    422: "INVALID",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


def refusal_json(
    status: int,
    errors: dict[str, str],
    codes: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> dict[str, object]:
    """Build the JSON for a refusal, readable by the services' own snippets.

    `errors` is a list of {field, code, message} (Formspree's snippet shows
    `errors.map(e => e.message)`); `message` is the whole answer in words
    (Web3Forms' and FormSubmit's snippets show it); `fields` maps each field
    to its message. `field` is null for the post as a whole; an error about
    one attached file names it in `file`. The messages are in the request's
    language; the codes are English, for programs.
    """
    codes = codes or {}
    files = files or {}
    errors = {name: str(text) for name, text in errors.items()}
    fallback = STATUS_CODES.get(status, "ERROR")
    listed = [
        {
            "field": None if name == "_form" else name,
            "code": codes.get(name, fallback),
            "message": text,
            **({"file": files[name]} if name in files else {}),
        }
        for name, text in errors.items()
    ]
    return {
        "ok": False,
        "success": False,
        "message": " ".join(errors.values()),
        "errors": listed,
        "fields": errors,
    }


def refusal(
    status: int,
    errors: dict[str, str],
    retry_after: int | None = None,
    codes: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> ResponseReturnValue:
    """Answer a refused cross-site post: JSON, or a page with a link back."""
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if wants_json():
        return jsonify(refusal_json(status, errors, codes, files)), status, headers
    body = render_template(
        "error.html",
        code=status,
        title=str(REFUSAL_TITLES.get(status) or gettext("Please check the form")),
        message=None,
        errors=errors,
        back=_back_link(),
    )
    return body, status, headers


def http_message(code: int) -> str | None:
    """Say in words what an HTTP error means for the visitor."""
    if code == 413:
        return too_large_message(current_app.config["MAX_CONTENT_LENGTH"])
    message = HTTP_MESSAGES.get(code)
    return None if message is None else str(message)


def http_title(code: int, name: str) -> str:
    """The title of an HTTP error page, in the request's language."""
    title = HTTP_TITLES.get(code)
    return name if title is None else str(title)


def error_page(
    code: int, title: str, message: str | None = None
) -> ResponseReturnValue:
    """Render our error page for anything but a refused post."""
    message = message or http_message(code) or gettext("Something went wrong.")
    return (
        render_template(
            "error.html", code=code, title=http_title(code, title), message=message
        ),
        code,
    )


def _back_link() -> str | None:
    """The posting page, when it is on one of the form's allowed origins."""
    form = services().forms.get((request.view_args or {}).get("form_id", ""))
    origin = request_origin()
    if form is None or origin is None or origin not in form.allowed_origins:
        return None
    referer = request.headers.get("Referer", "")
    parts = urlsplit(referer)
    if referer and f"{parts.scheme}://{parts.netloc}" == origin:
        return referer
    return origin + "/"
