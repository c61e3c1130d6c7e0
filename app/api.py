"""The submissions API under /api/v1, for scripts and integrations.

Every route wants `Authorization: Bearer TOKEN` (`flask --app wsgi tokens
add`): 401 without a live token, 403 for a read-only token on a route that
changes something. No session and no CSRF token: a browser never sends this
header on its own, so another site cannot make one act. No CORS headers, so
no other site's script can read an answer either. Every answer is
`Cache-Control: no-store`. Errors are JSON, `{"error": {"code", "message"}}`,
made in app/handlers.py from the ApiError raised here. Registered only when
ADMIN_ENABLED, like the console.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from .ledger import STATES, BadCursor, Detail
from .ledger.content import load_fields
from .ledger.release import HELD
from .services import services
from .spam import Verdict
from .tokens import token_store

bp = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
LIST_PARAMETERS = ("form", "state", "q", "since", "until", "limit", "cursor")
READ_METHODS = ("GET", "HEAD", "OPTIONS")
_EPOCH = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)"
)
_BEARER = re.compile(r"Bearer[ ]+(\S+)[ ]*", re.IGNORECASE)


class ApiError(Exception):
    """An API request refused: its status, a stable code and a message."""

    def __init__(
        self, status: int, code: str, message: str, parameter: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.parameter = parameter


def init_app(app: Flask) -> None:
    """Register the API's routes."""
    app.register_blueprint(bp)


@bp.before_request
def _authenticate() -> None:
    match = _BEARER.fullmatch(request.headers.get("Authorization", ""))
    if match is None:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer TOKEN")
    record = token_store().authenticate(match.group(1))
    if record is None:
        raise ApiError(401, "invalid_token", "the token is unknown or revoked")
    if request.method not in READ_METHODS and not record.can_write:
        raise ApiError(403, "insufficient_scope", "this token is read-only")
    g.api_token_name = record.name  # who released a submission, in its timeline


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/submissions")
def list_submissions() -> ResponseReturnValue:
    """One page of submissions, newest first, and the cursor of the next."""
    args = request.args
    for name in args:
        if name not in LIST_PARAMETERS:
            raise _bad(name, f"unknown parameter {name!r}")
    state = _arg("state")
    if state is not None and state not in STATES:
        raise _bad("state", f"state must be one of {', '.join(STATES)}")
    try:
        page = services().ledger.search(
            query=_arg("q"),
            form=_arg("form"),
            state=state,
            since=_time("since"),
            until=_time("until"),
            cursor=_arg("cursor"),
            limit=_limit(),
            # As in the console's inbox: spam and dropped posts only when asked.
            hide=() if state else HELD,
        )
    except BadCursor:
        raise ApiError(
            400, "bad_cursor", "cursor is not one this API handed out", "cursor"
        ) from None
    return jsonify(
        submissions=[submission_json(row) for row in page.rows], next=page.next
    )


@bp.get("/submissions/<receipt>")
def get_submission(receipt: str) -> ResponseReturnValue:
    """One submission, with its delivery timeline and its other channels."""
    return jsonify(detail_json(_detail(receipt)))


@bp.post("/submissions/<receipt>/retry")
def retry_submission(receipt: str) -> ResponseReturnValue:
    """Make a pending or failed submission due now: 202; 409 if sending or done.

    Its failed, disabled or pending deliveries on other channels (webhooks,
    Apprise, autoresponse) are made due now too; 202 if anything was.
    """
    ledger = services().ledger
    found = _detail(receipt)
    email = found.row.state in ("pending", "failed") and ledger.retry_now([receipt])
    others = ledger.retry_deliveries(receipts=[receipt])
    if not email and not others:
        # Read again: a worker may have claimed or settled it meanwhile.
        state = _detail(receipt).row.state
        raise ApiError(
            409,
            "conflict",
            f"the submission is {state}: only pending or failed ones (or failed "
            "deliveries) can be retried",
        )
    return jsonify(detail_json(_detail(receipt))), 202


@bp.post("/submissions/<receipt>/release")
def release_submission(receipt: str) -> ResponseReturnValue:
    """Deliver a spam or dropped submission after all: 202; 409 for any other."""
    found = _detail(receipt)
    if found.row.state not in HELD or not found.raw:
        raise ApiError(409, "conflict", _not_releasable(found))
    if not services().release([receipt], by=f"API token {g.api_token_name}"):
        raise ApiError(409, "conflict", _not_releasable(_detail(receipt)))
    return jsonify(detail_json(_detail(receipt))), 202


def _not_releasable(found: Detail) -> str:
    if found.row.state in HELD:
        return "the submission was dropped without its message: nothing to deliver"
    return (
        f"the submission is {found.row.state}: "
        "only spam or dropped ones can be released"
    )


@bp.delete("/submissions/<receipt>")
def delete_submission(receipt: str) -> ResponseReturnValue:
    """Erase a submission to a tombstone: 204, again 204 once it is erased."""
    _detail(receipt)
    services().ledger.erase([receipt])
    return "", 204


def submission_json(row: Any) -> dict[str, Any]:
    """A submission as the API shows it (a search row or a detail's row).

    `fields` is None when erased, or when a message stored before version 5
    could not be read back. client_ip and user_agent are there for spam
    checks an integration may run (they need both); erasure clears them.
    """
    return {
        "id": row.receipt,
        "form": row.form_id,
        "recipient": row.recipient_alias,
        "state": row.state,
        "created_at": rfc3339(row.created_at),
        "subject": row.subject,
        "name": row.name,
        "email": row.email,
        "message": row.message,
        "fields": _fields(load_fields(row.fields)),
        "origin": row.origin,
        "client_ip": row.client_ip,
        "user_agent": row.user_agent,
        "attempts": row.attempts,
        "last_attempt_at": rfc3339(row.last_attempt_at),
        "last_reply": row.last_reply,
        "sent_at": rfc3339(row.sent_at),
        "erased_at": rfc3339(row.erased_at),
        "verdict": verdict_json(row.verdict),
    }


def verdict_json(stored: str | None) -> dict[str, Any] | None:
    """The spam verdict and each reason, or None for rows stored without one."""
    verdict = Verdict.from_json(stored)
    if verdict is None:
        return None
    return {
        "name": verdict.name,
        "score": verdict.score,
        "reasons": [reason.as_dict() for reason in verdict.reasons],
    }


def detail_json(detail: Detail) -> dict[str, Any]:
    """A submission with its delivery timeline, oldest attempt first."""
    shown = submission_json(detail.row)
    shown["fields"] = _fields(detail.fields)
    shown["timeline"] = [
        {
            "at": rfc3339(a.at),
            "outcome": a.outcome,
            "error_kind": a.error_kind,
            "reply": a.reply,
        }
        for a in detail.attempts
    ]
    shown["deliveries"] = [
        deliveries_json(d) for d in services().ledger.deliveries(detail.row.receipt)
    ]
    return shown


def deliveries_json(row: Any) -> dict[str, Any]:
    """One delivery beyond the email: channel, state, attempts, last error."""
    return {
        "id": row.id,
        "kind": row.kind,
        "target": row.label,
        "state": row.state,
        "attempts": row.attempts,
        "last_attempt_at": rfc3339(row.last_attempt_at),
        "next_attempt_at": rfc3339(row.next_attempt_at)
        if row.state == "pending"
        else None,
        "last_error": row.last_error,
        "sent_at": rfc3339(row.sent_at),
        "webhook_id": row.webhook_id if row.kind == "webhook" else None,
        "disabled_reason": row.disabled_reason,
    }


def rfc3339(epoch: float | None) -> str | None:
    """Format a ledger time as RFC 3339 in UTC, to the millisecond."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(pairs: list[tuple[str, str]] | None) -> list[list[str]] | None:
    return None if pairs is None else [[name, value] for name, value in pairs]


def _detail(receipt: str) -> Detail:
    found = services().ledger.detail(receipt)
    if found is None:
        raise ApiError(404, "not_found", f"no submission {receipt}")
    return found


def _arg(name: str) -> str | None:
    """A query parameter; an empty one counts as not given."""
    return request.args.get(name) or None


def _bad(name: str, message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message, parameter=name)


def _limit() -> int:
    value = _arg("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise _bad("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def _time(name: str) -> float | None:
    """Read an RFC 3339 date-time with its offset, or seconds since the epoch."""
    value = _arg(name)
    if value is None:
        return None
    if _EPOCH.fullmatch(value):
        return float(value)
    problem = f"{name} must be an RFC 3339 date-time or seconds since the epoch"
    if not _RFC3339.fullmatch(value):
        raise _bad(name, problem)
    try:
        moment = datetime.fromisoformat(value.upper())
    except ValueError:
        raise _bad(name, problem) from None
    return moment.timestamp()
