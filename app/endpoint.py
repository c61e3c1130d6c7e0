"""POST /f/<form>: the endpoint that HTML forms on other sites post to.

No CSRF token here (the page is not ours); instead the Origin (or Referer)
must be one of the form's allowed origins. Accepted posts go through the same
accept path as the hosted form (accept.py); the workers deliver them.
`GET /f/<form>/challenge` hands those pages a proof-of-work challenge
(app/spam/altcha.py), readable by the same origins.
"""

from __future__ import annotations

import logging
import os
import re

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import force_locale, gettext
from flask_babel import lazy_gettext as _l

from .accept import Post, accept
from .answers import wants_json
from .errors import Rejected
from .fieldmap import collect, interpret
from .formdefs import FormDef
from .i18n import lang_arg, mail_locale
from .origin import client_ip, origin_allowed, request_origin
from .postbody import read_post
from .redirects import safe_next
from .services import services
from .spam import altcha
from .uploads import Uploads

bp = Blueprint("endpoint", __name__, url_prefix="/f")
log = logging.getLogger("formpost.endpoint")

IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")
RECEIPT_RE = re.compile(r"^[A-Z0-9]{4}-[A-Z0-9]{4}$")
# Shown by the drop-in snippets of Web3Forms (json.message) and FormSubmit
# (data.message) as they are.
THANKS = _l("Thank you! Your message has been received.")
PREFLIGHT_HEADERS = {"content-type", "accept", "idempotency-key"}


def _form_or_404(form_id: str) -> FormDef:
    form = services().forms.get(form_id)
    if form is None:
        raise Rejected(404, {"_form": gettext("There is no form with this address.")})
    return form


def _fields(form: FormDef) -> tuple[list[tuple[str, str]], Uploads]:
    """Read the post as (name, value) pairs in submitted order, and its files."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    spool = os.path.join(current_app.instance_path, "uploads")
    pairs, uploads = read_post(request, limit, form.attachments, spool)
    return collect(pairs), uploads


def _dedupe_key(form: FormDef) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_RE.match(key):
        raise Rejected(
            400, {"Idempotency-Key": gettext("Use 1-128 printable ASCII characters.")}
        )
    return f"idem:{form.id}:{key}"


@bp.post("/<form_id>", provide_automatic_options=False)
def submit(form_id: str) -> ResponseReturnValue:
    """Accept a post from another site: check, store, answer by negotiation."""
    form = _form_or_404(form_id)
    origin = request_origin()
    if not origin_allowed(form, origin):
        log.info("form %s: refused post from origin %s", form.id, origin)
        raise Rejected(403, {"origin": gettext("This site may not post to this form.")})
    dedupe_key = _dedupe_key(form)  # a malformed key: 400 before any work
    pairs, uploads = _fields(form)
    try:
        return _submit(form, origin, dedupe_key, pairs, uploads)
    finally:
        # Stored in the submission's transaction, or refused: gone either way.
        uploads.close()


def _submit(
    form: FormDef,
    origin: str | None,
    dedupe_key: str | None,
    pairs: list[tuple[str, str]],
    uploads: Uploads,
) -> ResponseReturnValue:
    found = interpret(pairs, form, services().recipients)
    if found.ignored_cc:
        log.warning(
            "form %s: ignored copies to addresses outside the form: %d",
            form.id,
            len(found.ignored_cc),
        )
    # A filled honeypot goes through accept() too: the spam gate stores it
    # as `dropped`, and the answer (and its timing) is a real post's.
    svc = services()
    language = mail_locale(form.language)
    with force_locale(language):
        # The subject is the email's: in the form's language, not the visitor's.
        fallback = gettext("New submission (%(form)s)", form=form.id)
    receipt = accept(
        svc,
        Post(
            form_id=form.id,
            language=language,
            recipient=found.recipient,
            subject=form.make_subject(found.subject, fallback)[:200],
            message=found.message,
            name=found.name,
            email=found.reply_to,
            fields=tuple(found.fields),
            cc=tuple(found.cc),
            dedupe_key=dedupe_key,
            client_ip=client_ip(),
            limits=svc.limits(form.rate_limit),
            origin=origin,
            user_agent=request.headers.get("User-Agent"),
            pairs=tuple(pairs),
            honeypot_filled=found.honeypot,
            channels=tuple(svc.channels(form.id, found.reply_to)),
            files=tuple(uploads.files),
        ),
    )
    return _accepted(form, receipt, found.redirect, origin)


def _accepted(
    form: FormDef, receipt: str, next_value: str, origin: str | None
) -> ResponseReturnValue:
    if wants_json():
        # 200, with both services' success keys: Web3Forms' snippet checks
        # the status is 200, FormSubmit's reads `success`; both show `message`.
        return jsonify(ok=True, success=True, id=receipt, message=str(THANKS)), 200
    target = safe_next(next_value, origin, form.redirect_hosts) if next_value else None
    if target is None:
        back = origin if origin in form.allowed_origins else None
        target = url_for(
            "endpoint.thanks",
            form_id=form.id,
            receipt=receipt,
            back=back,
            lang=lang_arg(),
            _external=True,
        )
    return redirect(target, code=303)


@bp.route("/<form_id>", methods=["OPTIONS"])
def preflight(form_id: str) -> ResponseReturnValue:
    """Answer a CORS preflight for the form's allowed origins only."""
    form = services().forms.get(form_id)
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


@bp.get("/<form_id>/challenge")
def challenge(form_id: str) -> ResponseReturnValue:
    """Answer a fresh proof-of-work challenge for the form, as JSON.

    Readable by the form's allowed origins (`cors` below), like its POST.
    Not counted toward the form's rate limit and not stored: a challenge
    costs one SHA-256 and one HMAC, and is worth nothing until solved,
    which costs the asker the work. An unknown form is a 404 (not counted
    as a refused post in /metrics).
    """
    if services().forms.get(form_id) is None:
        response = jsonify(error=gettext("There is no form with this address."))
        response.status_code = 404
        response.headers["Cache-Control"] = "no-store"
        return response
    return challenge_response(form_id)


def challenge_response(form_id: str) -> Response:
    """A fresh challenge for `form_id`, never cached (also the hosted form's)."""
    made = altcha.new_challenge(
        current_app.config["SECRET_KEY"], form_id, services().clock.now()
    )
    response = jsonify(made)
    response.headers["Cache-Control"] = "no-store"
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
    origin = request_origin() if request.headers.get("Origin") else None
    if origin is not None:
        form = services().forms.get((request.view_args or {}).get("form_id", ""))
        if form is not None and origin in form.allowed_origins:
            # The canonical form, which is what browsers compare against.
            headers["Access-Control-Allow-Origin"] = origin
    return response
