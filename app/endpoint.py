"""POST /f/<form>: the endpoint that HTML forms on other sites post to.

No CSRF token here (the page is not ours); instead the Origin (or Referer)
must be one of the form's allowed origins. Accepted posts go through the same
compose and ledger as the hosted form; the workers deliver them.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from config import ConfigError, parse_origin

from . import metrics
from .compose import Submission, compose, new_message_id
from .errors import Rejected
from .fieldmap import collect, interpret
from .formdefs import FormDef
from .ledger import Ledger, Limits, new_receipt
from .redirects import safe_next

bp = Blueprint("endpoint", __name__, url_prefix="/f")
log = logging.getLogger("formpost.endpoint")

IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
RECEIPT_RE = re.compile(r"^[A-Z0-9]{4}-[A-Z0-9]{4}$")
PREFLIGHT_HEADERS = {"content-type", "accept", "idempotency-key"}


def forms() -> dict[str, FormDef]:
    """Return the forms loaded by create_app."""
    return current_app.extensions["formpost.forms"]


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


def request_origin() -> str | None:
    """Return the normalised origin of the posting page, from Origin or Referer."""
    if "formpost_origin" not in g:
        raw = request.headers.get("Origin")
        if not raw:
            referer = urlsplit(request.headers.get("Referer", ""))
            raw = f"{referer.scheme}://{referer.netloc}" if referer.netloc else ""
        g.formpost_origin = _normalised_origin(raw) if raw else None
    return g.formpost_origin


@functools.lru_cache(maxsize=512)
def _normalised_origin(raw: str) -> str | None:
    try:
        return parse_origin("Origin", raw)
    except ConfigError:
        return None  # "null" (sandboxed frames, file://) and garbage


def origin_allowed(form: FormDef, origin: str | None) -> bool:
    """Allowed: one of the form's origins, or our own."""
    if origin is None:
        return False
    return origin in form.allowed_origins or origin == request.host_url.rstrip("/")


def _form_or_404(form_id: str) -> FormDef:
    form = forms().get(form_id)
    if form is None:
        raise Rejected(404, {"_form": "There is no form with this address."})
    return form


def _fields() -> list[tuple[str, str]]:
    """Read the post as (name, value) pairs in submitted order."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise Rejected(400, {"_form": "Send a JSON object of field names."})
        return [(str(k), _json_value(str(k), v)) for k, v in data.items()]
    mimetype = request.mimetype
    if mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Rejected(
            415,
            {
                "_form": "Send the form as application/x-www-form-urlencoded, "
                "multipart/form-data or application/json."
            },
        )
    if any(f.filename for f in request.files.values()):
        raise Rejected(415, {"_form": "File uploads are not supported."})
    return collect(request.form.items(multi=True))


def _json_value(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    raise Rejected(422, {name: "Use text, a number, true/false or a list of text."})


def _dedupe_key(form: FormDef) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_RE.match(key):
        raise Rejected(
            400, {"Idempotency-Key": "Use 1-128 printable ASCII characters."}
        )
    return f"idem:{form.id}:{key}"


@bp.post("/<form_id>", provide_automatic_options=False)
def submit(form_id: str) -> ResponseReturnValue:
    """Accept a post from another site: check, store, answer by negotiation."""
    form = _form_or_404(form_id)
    origin = request_origin()
    if not origin_allowed(form, origin):
        log.info("form %s: refused post from origin %s", form.id, origin)
        raise Rejected(403, {"origin": "This site may not post to this form."})
    dedupe_key = _dedupe_key(form)  # a malformed key: 400 before any work
    pairs = _fields()
    cfg = current_app.config
    found = interpret(pairs, form, cfg["MAIL_RECIPIENTS"])
    if found.ignored_cc:
        log.warning(
            "form %s: ignored copies to addresses outside the form: %d",
            form.id,
            len(found.ignored_cc),
        )
    if found.honeypot:
        # Answer exactly as for a real post, so a bot learns nothing.
        log.info("form %s: honeypot filled, nothing stored", form.id)
        metrics.submission(form.id, "rejected", "honeypot")
        return _accepted(form, new_receipt(), found.redirect, origin)

    recipients = cfg["MAIL_RECIPIENTS"]
    mail_from = cfg["MAIL_FROM"]
    subject = form.make_subject(found.subject)[:200]
    message = compose(
        Submission(
            recipient=recipients[found.recipient].address,
            subject=subject,
            message=found.message,
            name=found.name,
            email=found.reply_to,
            fields=tuple(found.fields),
            cc=tuple(recipients[a].address for a in found.cc),
        ),
        mail_from=mail_from,
        message_id=new_message_id(mail_from),
        date=datetime.now(UTC),
    )
    ledger: Ledger = current_app.extensions["formpost.ledger"]
    receipt = ledger.enqueue(
        message,
        form_id=form.id,
        alias=found.recipient,
        subject=subject,
        dedupe_key=dedupe_key,
        client_ip=request.remote_addr,
        limits=Limits(
            rate=form.rate_limit,
            recipient_daily=cfg["RECIPIENT_DAILY_QUOTA"],
            backlog=cfg["BACKLOG_LIMIT"],
        ),
    )
    g.receipt = receipt
    metrics.submission(form.id, "accepted")
    return _accepted(form, receipt, found.redirect, origin)


def _accepted(
    form: FormDef, receipt: str, next_value: str, origin: str | None
) -> ResponseReturnValue:
    if wants_json():
        return jsonify(ok=True, id=receipt), 202
    target = safe_next(next_value, origin, form.redirect_hosts) if next_value else None
    if target is None:
        back = origin if origin in form.allowed_origins else None
        target = url_for(
            "endpoint.thanks",
            form_id=form.id,
            receipt=receipt,
            back=back,
            _external=True,
        )
    return redirect(target, code=303)


@bp.route("/<form_id>", methods=["OPTIONS"])
def preflight(form_id: str) -> ResponseReturnValue:
    """Answer a CORS preflight for the form's allowed origins only."""
    form = forms().get(form_id)
    origin = request_origin() if request.headers.get("Origin") else None
    if form is None or origin is None or origin not in form.allowed_origins:
        return Response(status=403)
    requested = {
        h.strip().lower()
        for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
        if h.strip()
    }
    if request.headers.get("Access-Control-Request-Method", "POST") != "POST" or (
        requested - PREFLIGHT_HEADERS
    ):
        return Response(status=403)
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = "POST"
    response.headers["Access-Control-Allow-Headers"] = (
        "Content-Type, Accept, Idempotency-Key"
    )
    response.headers["Access-Control-Max-Age"] = "600"
    return response


@bp.get("/<form_id>/thanks")
def thanks(form_id: str) -> ResponseReturnValue:
    """Our own thank-you page, for posts without a usable `_next`."""
    form = _form_or_404(form_id)
    receipt = request.args.get("receipt", "")
    back = request.args.get("back")
    return render_template(
        "thanks.html",
        receipt=receipt if RECEIPT_RE.match(receipt) else None,
        back=back if back in form.allowed_origins else None,
    )


@bp.after_request
def cors(response: Response) -> Response:
    """Echo an allowed Origin (never `*`); say that answers vary by Origin."""
    headers = response.headers
    if "Vary" in headers:
        response.vary.add("Origin")
    else:
        headers["Vary"] = "Origin"
    raw = request.headers.get("Origin")
    origin = request_origin() if raw else None
    if origin is not None:
        form = forms().get((request.view_args or {}).get("form_id", ""))
        if form is not None and origin in form.allowed_origins:
            headers["Access-Control-Allow-Origin"] = raw
    return response
