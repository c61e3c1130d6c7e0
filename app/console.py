"""The owner's console under /admin: log in, the inbox, dashboard and forms.

The inbox (search, filters, keyset pages; spam and dropped posts in their
own view), a submission's page (with the spam verdict's reasons), retry,
release and delete (one, or every one matching the filter, behind CSRF and a
confirmation) and the streamed exports (writing in export.py) read and act
through the ledger; only the count of matches is built here, from the
ledger's own query (search.matching), as the ledger has no count.

Off (404) until an owner exists (`flask --app wsgi users add EMAIL`), and
gone entirely with ADMIN_ENABLED=false. Sessions through Flask-Login; the
session cookie is SameSite=Strict while an owner is logged in (security.py),
and a session idle for ADMIN_IDLE_TIMEOUT seconds ends. Every answer here is
`Cache-Control: no-store`: what an owner reads is not for shared caches or
the browser's back button on a shared machine.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from babel.dates import format_skeleton
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import get_locale, gettext, ngettext, pgettext
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user, login_required, login_user
from flask_login import logout_user as end_session
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from werkzeug.wrappers import Response
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from . import dashboard, export, snippets
from .doctor import Doctor, Report
from .fieldmap import HONEYPOTS
from .filelinks import read_token
from .i18n import number
from .languages import DEFAULT_LOCALE, LANGUAGES
from .ledger import STATES, BadCursor, Filters, submissions
from .ledger.content import read_message
from .ledger.driver import reading
from .ledger.release import HELD
from .ledger.search import matching
from .origin import client_ip
from .owners import Owner
from .services import services
from .spam import Verdict

# Log-in attempts, as token buckets in the ledger (so they hold across workers
# and machines): a burst of this many, refilled over this many seconds. Per
# account they stop a slow guessing of one password from many addresses; per
# address, one client trying many accounts. Each attempt also costs an
# argon2 hash, so they bound that work too.
LOGIN_PER_ACCOUNT = (10, 900.0)
LOGIN_PER_ADDRESS = (20, 900.0)
# The doctor from the dashboard: seconds per check, and runs per owner (a
# burst of this many, refilled over this many seconds). One run per owner at
# a time in each process: a double click does not stack runs.
DOCTOR_TIMEOUT = 5.0
DOCTOR_RUNS = (3, 60.0)
DOCTOR_JOIN_WAIT = 120.0
_doctor_lock = threading.Lock()
_doctor_runs: dict[int, _DoctorRun] = {}
bp = Blueprint("console", __name__, url_prefix="/admin")
log = logging.getLogger("formpost.console")
WRONG = _l("Wrong email or password.")
# The ledger's states (and "erased"), as the console shows them.
STATE_NAMES = {
    "pending": _l("pending"),
    "sending": _l("sending"),
    "sent": _l("sent"),
    "failed": _l("failed"),
    "spam": _l("spam"),
    "dropped": _l("dropped"),
    "deleted": _l("deleted"),
    "erased": _l("erased"),
    # A webhook endpoint that answered 410 Gone (deliveries only).
    "disabled": _l("disabled"),
}
# The other channels' kinds (ledger DELIVERY_KINDS), as the console names them.
CHANNEL_NAMES = {
    "webhook": _l("webhook"),
    "apprise": _l("Apprise"),
    "autoresponse": _l("autoresponse"),
}
# The doctor's results, as the report page marks them.
CHECK_MARKS = {
    "pass": _l("PASS"),
    "warn": _l("WARN"),
    "fail": _l("FAIL"),
    "skip": _l("SKIP"),
}
# Each shipped language in its own words, for the forms page.
LANGUAGE_NAMES = {"en": "English", "zh_Hans_CN": "简体中文"}
SEEN = "console_seen"


class LoginForm(FlaskForm):
    """Email and password; one generic error for either being wrong."""

    email = EmailField(_l("Email"), validators=[DataRequired(_l("Enter your email."))])
    password = PasswordField(
        _l("Password"),
        validators=[DataRequired(_l("Enter your password.")), Length(max=1024)],
    )


def init_app(app: Flask) -> None:
    """Register the console and Flask-Login's session handling."""
    manager = LoginManager()
    manager.login_view = "console.login"
    manager.login_message = _l("Please log in to see the console.")
    # Flashed into the session, which stores plain text: made one per request.
    manager.localize_callback = str
    # "strong" drops the session when the client's address or browser
    # changes; with fingerprints of IP and User-Agent that owners on mobile
    # networks would trip, "basic" plus the idle timeout is the usual choice.
    manager.session_protection = "basic"
    manager.user_loader(_load_owner)
    manager.init_app(app)
    app.register_blueprint(bp)

    @app.context_processor
    def _names() -> dict[str, Any]:
        return {
            "state_name": state_name,
            "language_name": language_name,
            "check_mark": check_mark,
            "channel_name": channel_name,
        }


def _load_owner(user_id: str) -> Owner | None:
    return services().owners.load(user_id)


@bp.before_request
def _console_is_on() -> ResponseReturnValue | None:
    if not services().owners.exist():
        abort(404)
    if not current_user.is_authenticated:
        return None
    now = services().clock.now()
    seen = session.get(SEEN)
    if isinstance(seen, int | float) and now - seen > _idle_timeout():
        end_session()
        session.pop(SEEN, None)
        flash(
            gettext(
                "Your session ended after a while without use. Please log in again."
            )
        )
        return redirect(url_for(".login", next=request.full_path.rstrip("?")))
    session[SEEN] = now
    return None


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_filter("isotime")
def isotime(epoch: float) -> str:
    """Format a ledger time (seconds since the epoch) as UTC, to the minute.

    English keeps the ISO form (2026-12-31 14:05 UTC), which sorts and
    matches the exports; other languages get Babel's date in their words.
    """
    moment = datetime.fromtimestamp(epoch, UTC)
    locale = get_locale()
    if locale is None or str(locale) == DEFAULT_LOCALE:
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    day = format_skeleton("yMMMd", moment, tzinfo=UTC, locale=locale)
    time = format_skeleton("Hm", moment, tzinfo=UTC, locale=locale)
    return f"{day} {time} UTC"


@bp.app_template_filter("number")
def number_filter(value: float) -> str:
    """Write a count as the page's language does (20,000)."""
    return number(value)


@bp.app_template_filter("duration")
def duration(seconds: float) -> str:
    """Say how long, roughly: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return gettext("%(s)s s", s=seconds)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return gettext("%(min)s min", min=minutes)
    if seconds < 86400:
        return gettext("%(h)s h %(min)s min", h=hours, min=minutes % 60)
    return gettext("%(d)s d %(h)s h", d=days, h=hours % 24)


def state_name(state: str) -> str:
    """A ledger state in the page's language."""
    name = STATE_NAMES.get(state)
    return state if name is None else str(name)


def channel_name(kind: str) -> str:
    """A delivery's channel kind (webhook, apprise, ...) in the page's language."""
    name = CHANNEL_NAMES.get(kind)
    return kind if name is None else str(name)


def check_mark(status: str) -> str:
    """A doctor's result (pass, warn, ...) as the report page marks it."""
    mark = CHECK_MARKS.get(status)
    return status.upper() if mark is None else str(mark)


def language_name(locale: str | None) -> str:
    """Name a form's language, or say that the visitor's browser decides."""
    if locale is None:
        return gettext("the visitor's (emails in English)")
    return LANGUAGE_NAMES.get(locale, LANGUAGES.get(locale, locale))


@bp.app_template_filter("verdict")
def verdict_of(stored: str | None) -> Verdict | None:
    """Read a row's stored spam verdict (None for rows stored without one)."""
    return Verdict.from_json(stored)


def _idle_timeout() -> float:
    return current_app.config["ADMIN_IDLE_TIMEOUT"]


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Show the log-in form; on a matching email and password, start a session."""
    if current_user.is_authenticated:
        return redirect(_next_page())
    form = LoginForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("console/login.html", form=form), status
    wait = _throttled(form.email.data)
    if wait is not None:
        log.warning("log-in attempts throttled from %s", client_ip())
        minutes = max(1, math.ceil(wait / 60))
        error = ngettext(
            "Too many log-in attempts. Please try again in %(num)d minute.",
            "Too many log-in attempts. Please try again in %(num)d minutes.",
            minutes,
        )
        form.password.data = ""
        page = render_template("console/login.html", form=form, error=error)
        return page, 429, {"Retry-After": str(math.ceil(wait))}
    owner = services().owners.authenticate(form.email.data, form.password.data)
    if owner is None:
        log.info("failed log-in from %s", client_ip())
        form.password.data = ""
        return render_template("console/login.html", form=form, error=str(WRONG)), 401
    session.clear()  # a new session for the owner: nothing carried over
    login_user(owner)
    session[SEEN] = services().clock.now()
    log.info("%s logged in", owner.email)
    return redirect(_next_page())


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session (a POST behind CSRF, so no page can log an owner out)."""
    end_session()
    session.clear()
    return redirect(url_for(".login"))


PAGE_SIZE = 50


@dataclass(frozen=True)
class InboxQuery:
    """The inbox's filter as the owner typed it, and the ledger's Filters."""

    q: str
    form: str
    state: str
    start: str
    end: str
    filters: Filters

    def args(self, **extra: str) -> dict[str, str]:
        """The non-empty filter values, for links and forms that keep them."""
        values = {
            "q": self.q,
            "form": self.form,
            "state": self.state,
            "from": self.start,
            "to": self.end,
            **extra,
        }
        return {k: v for k, v in values.items() if v}

    @property
    def query_string(self) -> str:
        return urlencode(self.args())


class FilterError(ValueError):
    """Filter values the inbox cannot use: what to say, and what was typed."""

    def __init__(self, message: str, typed: InboxQuery | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.typed = typed


def _day(text: str, name: str) -> float | None:
    """Midnight UTC of a YYYY-MM-DD date, as seconds since the epoch."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise FilterError(
            gettext("%(field)s must be a date like 2026-12-31.", field=name)
        ) from None
    if len(text) != 10:
        raise FilterError(
            gettext("%(field)s must be a date like 2026-12-31.", field=name)
        )
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def read_filters(args: Any) -> InboxQuery:
    """Read q, form, state, from and to; raise FilterError for a bad one."""
    q = args.get("q", "").strip()[:500]
    form = args.get("form", "").strip()
    state = args.get("state", "").strip()
    start, end = args.get("from", "").strip(), args.get("to", "").strip()
    errors = []
    if len(form) > 64:
        errors.append(gettext("Form: no form has a name that long."))
    if state and state not in STATES:
        errors.append(
            gettext(
                "State must be one of %(states)s.",
                states=", ".join(state_name(name) for name in STATES),
            )
        )
    since = until = None
    try:
        since = _day(start, pgettext("date filter", "From"))
    except FilterError as exc:
        errors.append(str(exc))
    try:
        last = _day(end, pgettext("date filter", "To"))
        until = None if last is None else last + 86400
    except FilterError as exc:
        errors.append(str(exc))
    if since is not None and until is not None and since >= until:
        errors.append(gettext("From must be on or before To."))
    query = InboxQuery(
        q,
        form,
        state,
        start,
        end,
        Filters(q or None, form or None, state or None, hide=() if state else HELD),
    )
    if errors:
        raise FilterError(" ".join(errors), query)
    # Without a state the inbox shows what reached the owner: spam and
    # dropped posts have their own view (state=spam, state=dropped), so a
    # flood of bots never buries a customer's message.
    hide = () if state else HELD
    filters = Filters(q or None, form or None, state or None, since, until, hide)
    return InboxQuery(q, form, state, start, end, filters)


def count_matching(filters: Filters) -> int:
    """Count the rows matching `filters` (the ledger has no count of its own)."""
    engine = services().ledger.engine
    stmt = matching([submissions.c.id], filters, engine.dialect.name, None)
    if stmt is None:
        return 0
    # The ORDER BY stays: on SQLite it keeps the full-text index leading the
    # plan; without it a word with a form filter took 20 s over 100,000 rows
    # instead of 70 ms.
    counting = select(func.count()).select_from(stmt.subquery())
    with reading(engine) as conn:
        return int(conn.execute(counting).scalar_one())


def _form_choices(current: str) -> list[str]:
    choices = sorted({*services().forms, "hosted"})
    if current and current not in choices:
        choices.append(current)
    return choices


class ActionForm(FlaskForm):
    """An action on submissions: its CSRF token and the confirming checkbox."""

    confirm = BooleanField(_l("Yes, I am sure"))


@bp.get("/")
@login_required
def inbox() -> ResponseReturnValue:
    """Submissions newest first, filtered and searched, 50 to a page."""
    try:
        query = read_filters(request.args)
    except FilterError as exc:
        typed = exc.typed or InboxQuery("", "", "", "", "", Filters())
        return _inbox_page(typed, rows=[], error=exc.message), 400
    cursor = request.args.get("after") or None
    try:
        found = services().ledger.search(
            query=query.filters.query,
            form=query.filters.form,
            state=query.filters.state,
            since=query.filters.since,
            until=query.filters.until,
            cursor=cursor,
            limit=PAGE_SIZE,
            hide=query.filters.hide,
        )
    except BadCursor:
        return _stale_link(), 400
    older = None
    if found.next is not None:
        older = url_for(".inbox", **query.args(after=found.next))
    return _inbox_page(
        query,
        rows=found.rows,
        older=older,
        first=cursor is None,
        total=count_matching(query.filters),
    )


def _inbox_page(query: InboxQuery, **values: Any) -> str:
    # The spam views' counts: a count per state through the state index, not
    # the whole table's, so the inbox stays quick under a flood of bots.
    return render_template(
        "console/inbox.html",
        query=query,
        forms=_form_choices(query.form),
        states=STATES,
        held=HELD,
        held_counts=services().ledger.count_in(HELD),
        action=ActionForm(),
        **values,
    )


def _stale_link() -> str:
    return render_template(
        "console/message.html",
        title=gettext("This link is stale"),
        message=gettext(
            "The page link was not one the inbox made, or it is out of date. "
            "Start again from the inbox."
        ),
    )


@bp.get("/s/<receipt>")
@login_required
def submission(receipt: str) -> ResponseReturnValue:
    """Everything stored about one submission: fields, the email, the timeline."""
    detail = services().ledger.detail(receipt) if len(receipt) <= 16 else None
    if detail is None:
        abort(404)
    row = detail.row
    fields = detail.fields
    headers: list[tuple[str, str]] = []
    text = None
    if detail.raw:
        headers, text = _message_parts(detail.raw)
        if fields is None:
            content = read_message(detail.raw, row.form_id)
            fields = list(content.fields) if content is not None else None
    return render_template(
        "console/submission.html",
        row=row,
        detail=detail,
        fields=fields,
        headers=headers,
        text=text,
        action=ActionForm(),
        files=services().ledger.files(row.id) if row.file_count else [],
        can_retry=row.state in ("pending", "failed"),
        can_release=row.state in HELD and bool(detail.raw),
        tombstone=row.state == "dropped" and not detail.raw,
        verdict=Verdict.from_json(row.verdict),
        deliveries=services().ledger.deliveries(row.receipt),
        confirming=request.args.get("confirm") == "delete",
    )


@bp.get("/s/<receipt>/files/<int:position>")
@login_required
def download(receipt: str, position: int) -> ResponseReturnValue:
    """Send one attached file as a download: never rendered, never sniffed."""
    ledger = services().ledger
    row = ledger.row(receipt) if len(receipt) <= 16 else None
    if row is None or not row.file_count:
        abort(404)
    found = [f for f in ledger.files(row.id) if f.position == position]
    if not found:
        abort(404)
    (stored,) = found
    response = Response(
        stream_with_context(ledger.file_bytes(stored.id)),
        mimetype="application/octet-stream",
    )
    # RFC 6266: an ASCII fallback name and the real one as RFC 5987 UTF-8.
    response.headers["Content-Disposition"] = content_disposition(stored.filename)
    response.headers["Content-Length"] = str(stored.size)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/files/<token>")
@login_required
def files_link(token: str) -> ResponseReturnValue:
    """Open a submission from the signed link in an email too large for its files."""
    receipt = read_token(current_app.config["SECRET_KEY"], token)
    if receipt is None:
        return render_template(
            "console/message.html",
            title=gettext("This link has expired"),
            message=gettext(
                "The link to these files is out of date or not one Formpost "
                "made. Find the submission in the inbox by its receipt."
            ),
        ), 404
    return redirect(url_for("console.submission", receipt=receipt))


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII filename and RFC 5987 filename* (RFC 6266)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
        for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def _message_parts(raw: bytes) -> tuple[list[tuple[str, str]], str | None]:
    """The stored message's header lines and its decoded text/plain part."""
    message = message_from_bytes(raw, policy=policy.default)
    try:
        headers = [(name, str(value)) for name, value in message.items()]
    except (LookupError, ValueError, AttributeError, TypeError):
        # A header the parser cannot render: show every one raw instead.
        headers = [(name, str(value)) for name, value in message.raw_items()]
    try:
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else None
    except (LookupError, ValueError, AttributeError, TypeError):
        text = None
    return headers, text


def _confirmed_action() -> bool:
    """True for a POST with a valid CSRF token and the box ticked; 400 without CSRF."""
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    return bool(form.confirm.data)


@bp.post("/s/<receipt>/retry")
@login_required
def retry_one(receipt: str) -> ResponseReturnValue:
    """Make one pending or failed submission due now."""
    _confirmed_action()
    done = services().ledger.retry_now([receipt])
    _log_action("retried", done)
    flash(_retried(done) if done else gettext("Nothing to retry."))
    return redirect(url_for(".submission", receipt=receipt))


@bp.post("/s/<receipt>/release")
@login_required
def release_one(receipt: str) -> ResponseReturnValue:
    """Deliver a spam or dropped submission after all: it joins the queue now."""
    _confirmed_action()
    done = services().release([receipt], by=current_user.email)
    _log_action("released", done)
    flash(
        ngettext(
            "%(count)s submission released: it is queued for delivery",
            "%(count)s submissions released: they are queued for delivery",
            done,
            count=number(done),
        )
        if done
        else gettext(
            "Nothing to release: only spam or dropped submissions that kept "
            "their message can be released."
        )
    )
    return redirect(url_for(".submission", receipt=receipt))


@bp.post("/s/<receipt>/deliveries/<int:delivery>/retry")
@login_required
def retry_delivery(receipt: str, delivery: int) -> ResponseReturnValue:
    """Make one failed, disabled or pending delivery due now.

    A webhook endpoint disabled by a 410 is enabled again.
    """
    _confirmed_action()
    ledger = services().ledger
    mine = {d.id for d in ledger.deliveries(receipt)} if len(receipt) <= 16 else set()
    done = ledger.retry_deliveries(delivery_ids=[delivery]) if delivery in mine else 0
    log.info("%s retried delivery %d of %s", current_user.email, delivery, receipt)
    flash(
        gettext("Delivery queued to retry.") if done else gettext("Nothing to retry.")
    )
    return redirect(url_for(".submission", receipt=receipt))


@bp.post("/s/<receipt>/delete")
@login_required
def delete_one(receipt: str) -> ResponseReturnValue:
    """Erase one submission to a tombstone, once the owner confirmed."""
    if not _confirmed_action():
        flash(gettext("Tick the box to confirm the deletion."))
        return redirect(url_for(".submission", receipt=receipt, confirm="delete"))
    done = services().ledger.erase([receipt])
    _log_action("deleted", done)
    flash(_deleted(done) if done else gettext("Nothing to delete."))
    return redirect(url_for(".submission", receipt=receipt))


@bp.route("/bulk/<action>", methods=["GET", "POST"])
@login_required
def bulk(action: str) -> ResponseReturnValue:
    """Confirm, then retry, release or delete every submission matching the filter."""
    if action not in ("retry", "release", "delete"):
        abort(404)
    source = request.args if request.method == "GET" else request.form
    try:
        query = read_filters(source)
    except FilterError:
        abort(400)
    back = url_for(".inbox", **query.args())
    if request.method == "GET" or not _confirmed_action():
        total = count_matching(query.filters)
        page = render_template(
            "console/confirm.html",
            verb=action,
            query=query,
            total=total,
            back=back,
            action=ActionForm(),
            unconfirmed=request.method == "POST",
        )
        return page, 200 if request.method == "GET" else 400
    ledger = services().ledger
    if action == "retry":
        done = ledger.retry_matching(query.filters)
        flash(_retried(done))
    elif action == "release":
        done = services().release_matching(query.filters, by=current_user.email)
        flash(_released(done))
    else:
        done = ledger.erase_matching(query.filters)
        flash(_deleted(done))
    _log_action(f"{action} matching", done)
    return redirect(back)


def _retried(count: int) -> str:
    return ngettext(
        "%(count)s submission queued to retry",
        "%(count)s submissions queued to retry",
        count,
        count=number(count),
    )


def _released(count: int) -> str:
    return ngettext(
        "%(count)s submission released: queued for delivery",
        "%(count)s submissions released: queued for delivery",
        count,
        count=number(count),
    )


def _deleted(count: int) -> str:
    return ngettext(
        "%(count)s submission deleted",
        "%(count)s submissions deleted",
        count,
        count=number(count),
    )


def _log_action(what: str, count: int) -> None:
    log.info("%s %s %d submission(s)", current_user.email, what, count)


@bp.get("/export.<kind>")
@login_required
def export_rows(kind: str) -> ResponseReturnValue:
    """Stream the current filter's submissions as CSV or JSON lines."""
    writers = {
        "csv": (export.csv_lines, "text/csv; charset=utf-8"),
        "jsonl": (export.jsonl_lines, "application/jsonl; charset=utf-8"),
    }
    if kind not in writers:
        abort(404)
    try:
        query = read_filters(request.args)
    except FilterError:
        abort(400)
    write, mimetype = writers[kind]
    rows = services().ledger.iterate(query.filters, batch=500)
    log.info("%s exported submissions as %s", current_user.email, kind)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    name = f"formpost-{stamp}.{kind}"

    def body() -> Any:
        for line in write(rows):
            yield line.encode("utf-8")

    return Response(
        stream_with_context(body()),
        content_type=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.get("/dashboard")
@login_required
def dashboard_page() -> ResponseReturnValue:
    """Submissions per form per day, the queue, the relay, and the doctor button."""
    ledger = services().ledger
    now = ledger.clock.now()
    counts = dashboard.counts_by_form_and_day(dashboard.DAYS, ledger=ledger, now=now)
    chart = dashboard.build_chart(counts, dashboard.first_day(now))
    return render_template(
        "console/dashboard.html",
        chart=chart,
        stats=ledger.stats(),
        now=now,
        doctor=DoctorForm(),
        doctor_timeout=DOCTOR_TIMEOUT,
    )


class DoctorForm(FlaskForm):
    """The doctor button: nothing but its CSRF token."""


@bp.post("/doctor")
@login_required
def doctor() -> ResponseReturnValue:
    """Run the doctor's checks (never --send-test) and show the report.

    A second press while this owner's run is under way in this process waits
    for that run and shows its report: a double click runs the checks once.
    """
    if not DoctorForm().validate_on_submit():
        abort(400)
    owner_id = current_user.record.id
    run, started = _doctor_run(owner_id)
    if run is None:
        wait = services().ledger.take_token(("doctor", owner_id), *DOCTOR_RUNS)
        if wait is not None:
            return _doctor_busy(
                math.ceil(wait), gettext("The checks ran a moment ago.")
            )
        run, started = _doctor_run(owner_id, start=True)
    if started:
        try:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            run.report = Doctor(app, timeout=DOCTOR_TIMEOUT).run()
        finally:
            with _doctor_lock:
                _doctor_runs.pop(owner_id, None)
            run.done.set()
        log.info("%s ran the doctor: %s", current_user.email, _summary(run.report))
    else:
        run.done.wait(DOCTOR_JOIN_WAIT)
    if run.report is None:  # the run it joined failed, or is still going
        return _doctor_busy(5, gettext("The checks did not finish."))
    return render_template("console/doctor.html", report=run.report)


def _doctor_busy(retry: int, why: str) -> ResponseReturnValue:
    page = render_template("console/doctor.html", report=None, retry=retry, why=why)
    return page, 429, {"Retry-After": str(retry)}


class _DoctorRun:
    """One run of the doctor, which a second press of the button can wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.report: Report | None = None


def _doctor_run(owner_id: int, start: bool = False) -> tuple[_DoctorRun | None, bool]:
    """Find this owner's run under way (and False), or start one (and True)."""
    with _doctor_lock:
        run = _doctor_runs.get(owner_id)
        if run is not None or not start:
            return run, False
        run = _doctor_runs[owner_id] = _DoctorRun()
        return run, True


def _summary(report: Report | None) -> str:
    counts: dict[str, int] = {}
    for check in report.checks if report else []:
        counts[check.status] = counts.get(check.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


@bp.get("/forms")
@login_required
def forms() -> ResponseReturnValue:
    """Every form's settings, read-only, with snippets to paste into a site."""
    recipients = services().recipients
    shown = []
    for form in services().forms.values():
        action = url_for("endpoint.submit", form_id=form.id, _external=True)
        shown.append(
            {
                "form": form,
                "action": action,
                "recipients": [
                    (alias, recipients[alias].address.addr_spec)
                    for alias in form.recipients
                    if alias in recipients
                ],
                "rate": snippets.rate_text(form.rate_limit),
                "plain": snippets.plain_html(form, action),
                "fetch": snippets.fetch_html(form, action),
            }
        )
    return render_template("console/forms.html", forms=shown, honeypots=HONEYPOTS)


def _throttled(email: str) -> float | None:
    """Take a token per account and per address; the wait if either is empty.

    The account is the email as typed, normalised, whether or not an owner
    has it: the answer must not tell which emails have accounts.
    """
    ledger = services().ledger
    account = email.strip().lower()
    waits = [
        ledger.take_token(("login-address", client_ip()), *LOGIN_PER_ADDRESS),
        ledger.take_token(("login-account", account), *LOGIN_PER_ACCOUNT),
    ]
    found = [wait for wait in waits if wait is not None]
    return max(found) if found else None


def _next_page() -> str:
    """Where to go after logging in: a console path only, never another site."""
    target = request.args.get("next", "")
    parts = urlsplit(target)
    if (
        target.startswith("/admin")
        and not parts.scheme
        and not parts.netloc
        and "\\" not in target
    ):
        return target
    return url_for(".inbox")
