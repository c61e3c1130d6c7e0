"""rspamd: the composed message through rspamd's HTTP API (`/checkv2`).

Only when RSPAMD_URL is set; without it the layer returns nothing and no
message leaves Formpost. rspamd gets the message as it would be delivered,
the visitor's IP (`IP`), the visitor's address (`From`) and the form's
first recipient (`Rcpt`), as its protocol documents. No `Helo` or `Hostname`:
there was no SMTP session, and inventing one would only feed rspamd's
session checks made-up data.

For the same reason every request carries a `Settings` header that turns
off what only makes sense for mail that came over SMTP: SPF, DKIM, DMARC
and ARC (the `policies` group: a visitor who types a gmail.com address from
their home connection would otherwise fail SPF), and the HELO/rDNS checks
(`hfilter`, RDNS_*, ONCE_RECEIVED*: a web post has no Received header and
no HELO), and the two checks that every Formpost message fails by design
(SPOOF_REPLYTO, FORGED_SENDER: the message is From the service with the
visitor in Reply-To, while rspamd is told the visitor sent it; left on,
they put a clean post at 6.2, over the default quarantine threshold).
Content checks, URL and IP blocklists, Bayes, fuzzy hashes and the
owner's own rules all stay on.

rspamd's score is weighed against the form's own thresholds
(`rspamd_quarantine_at`, `rspamd_drop_at`), not rspamd's actions, which are
tuned for mail servers: at or over the drop threshold the post is dropped,
at or over the quarantine threshold quarantined; under it rspamd adds
nothing (no reason, score 0), so a clean message carries no rspamd noise in
its verdict or in /metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from flask import current_app, has_app_context

from . import Reason, SpamContext
from .remote import Unavailable, post_json
from .settings import SpamSettings

if TYPE_CHECKING:
    from ..services import Services

LAYER = "rspamd"
DEFAULT_TIMEOUT = 5.0
# How many of rspamd's symbols a reason names (the highest-scoring ones).
TOP_SYMBOLS = 5
NOT_FOR_WEB_POSTS = json.dumps(
    {
        "groups_disabled": ["policies", "hfilter"],
        "symbols_disabled": [
            "RDNS_NONE",
            "RDNS_DNSFAIL",
            "ONCE_RECEIVED",
            "ONCE_RECEIVED_STRICT",
            "SPOOF_REPLYTO",
            "FORGED_SENDER",
        ],
    },
    separators=(",", ":"),
)


def check(ctx: SpamContext, settings: SpamSettings, services: Services) -> list[Reason]:
    """Score the composed message with rspamd, when RSPAMD_URL is set."""
    # RSPAMD_URL lives in the app's config: no app, no rspamd (a script
    # calling accept() directly).
    if not has_app_context():
        return []
    url = current_app.config.get("RSPAMD_URL")
    if not url or not ctx.message_bytes:
        return []
    timeout = float(current_app.config.get("RSPAMD_TIMEOUT") or DEFAULT_TIMEOUT)
    form = services.forms.get(ctx.form_id)
    rcpts: list[str] = []
    if form is not None:
        for alias in form.recipients:
            recipient = services.recipients.get(alias)
            if recipient is not None:
                rcpts.append(recipient.address.addr_spec)
    return scan(url, ctx, settings, timeout, rcpts)


def scan(
    url: str,
    ctx: SpamContext,
    settings: SpamSettings,
    timeout: float = DEFAULT_TIMEOUT,
    rcpts: list[str] | tuple[str, ...] = (),
) -> list[Reason]:
    """Ask the rspamd at `url` about `ctx.message_bytes`; return the reasons."""
    try:
        reply = post_json(
            url.rstrip("/") + "/checkv2",
            ctx.message_bytes,
            request_headers(ctx, rcpts),
            timeout,
        )
    except Unavailable as exc:
        return [unavailable(str(exc), settings)]
    raw = reply.get("score")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return [unavailable("reply without a score", settings)]
    score = float(raw)
    return judge(score, reply.get("symbols"), settings)


def request_headers(
    ctx: SpamContext, rcpts: list[str] | tuple[str, ...] = ()
) -> dict[str, str]:
    """Return the rspamd protocol headers for this post."""
    headers = {
        "Content-Type": "message/rfc822",
        "User-Agent": "Formpost",
        "Settings": NOT_FOR_WEB_POSTS,
    }
    if ctx.client_ip:
        headers["IP"] = ctx.client_ip
    if ctx.email and "@" in ctx.email and _header_safe(ctx.email):
        headers["From"] = ctx.email
    # rspamd wants one Rcpt header per address and urllib sends one header
    # per name: the first recipient is enough for rspamd's per-recipient
    # settings, and scoring does not depend on the count.
    safe = [r for r in rcpts if _header_safe(r)]
    if safe:
        headers["Rcpt"] = safe[0]
    return headers


def judge(score: float, symbols: object, settings: SpamSettings) -> list[Reason]:
    """Turn rspamd's score into a reason against the form's thresholds."""
    if score < settings.rspamd_quarantine_at:
        return []
    action = "drop" if score >= settings.rspamd_drop_at else "quarantine"
    names = top_symbols(symbols)
    value = f"score {score:g}"
    if names:
        value += f" ({', '.join(names)})"
    return [
        Reason(
            layer=LAYER,
            rule="rspamd_score",
            value=value,
            threshold=(
                f"quarantine at {settings.rspamd_quarantine_at:g}, "
                f"drop at {settings.rspamd_drop_at:g}"
            ),
            score=0.0,
            action=action,
        )
    ]


def top_symbols(symbols: object, limit: int = TOP_SYMBOLS) -> list[str]:
    """Return the names of the highest-scoring symbols rspamd reported."""
    if not isinstance(symbols, Mapping):
        return []
    scored = []
    for name, detail in symbols.items():
        weight = detail.get("score", 0.0) if isinstance(detail, Mapping) else 0.0
        if isinstance(weight, (int, float)) and weight > 0:
            scored.append((-float(weight), str(name)))
    # GTUBE-like forced actions carry score 0 on the symbol itself.
    if not scored:
        scored = [(0.0, str(name)) for name in symbols]
    return [name for _, name in sorted(scored)[:limit]]


def unavailable(what: str, settings: SpamSettings) -> Reason:
    """Return the reason for an rspamd that gave no answer, per `fail`."""
    closed = settings.fail == "closed"
    return Reason(
        layer=LAYER,
        rule="rspamd_unavailable",
        value=what,
        threshold="fail closed: quarantine" if closed else "fail open: let through",
        score=0.0,
        action="quarantine" if closed else "score",
    )


def _header_safe(value: str) -> bool:
    return not any(ch in value for ch in "\r\n\0") and value.isascii()
