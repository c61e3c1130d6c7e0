"""The owner's own rules: honeypot, fill time, links, blocked lists, repeats.

Cheap checks on the post itself (and one indexed ledger read), first among
the layers. Each finding is a `Reason` with a fixed code:

| rule                   | when                                          | weight      |
| ---------------------- | --------------------------------------------- | ----------- |
| `honeypot`             | the hidden field is filled                    | drop        |
| `blocked_network`      | the client IP is in `blocked_networks`        | drop        |
| `blocked_word`         | a word of `blocked_words` appears             | quarantine  |
| `blocked_pattern`      | a regex of `blocked_patterns` matches         | quarantine  |
| `blocked_email_domain` | the visitor's address is at a blocked domain  | quarantine  |
| `fill_time`            | the hosted form came back faster than allowed | score 3     |
| `links`                | more links than `max_links`                   | score 2.5-5 |
| `repeated_body`        | the same body stored within `repeat_window`   | score 2-3   |

Only the honeypot and the owner's blocked networks drop by themselves:
content alone never does. The content scores together stay under the
default `drop_at` (15), so a real customer's message that trips them is
at worst quarantined, where the owner can release it.
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from typing import TYPE_CHECKING, Literal

from flask import current_app, has_app_context

from . import Reason, SpamContext
from .settings import SpamSettings

if TYPE_CHECKING:
    from ..services import Services

LAYER = "rules"
FILL_TIME_SCORE = 3.0
# One link over the form's allowance is a nudge (2.5, under the default
# quarantine_at of 5); each further one adds 1, up to 5.
LINKS_FIRST, LINKS_EACH, LINKS_MAX = 2.5, 1.0, 5.0
# A body seen once or twice before scores 2, three or more times 3: alone
# it never quarantines (a customer who writes the same text to two of the
# owner's forms, or a club whose members all send "Please add me to the
# list, thank you", is accepted); with a link too many, or no proof of
# work, a bot's repeated pitch crosses quarantine_at.
REPEAT_SOME, REPEAT_MANY, REPEAT_MANY_AT = 2.0, 3.0, 3
# Shorter bodies ("Please call me back.") are too common to call repeats.
REPEAT_MIN_CHARS = 20
# What counts as a link: a URL, a bare www. host, BBCode or HTML anchors.
LINK_RE = re.compile(r"(?:https?://|ftp://|\bwww\.)[^\s<>\"']+|\[url[=\]]", re.I)
# Fields that carry tokens, not text the visitor wrote.
NOT_TEXT = frozenset(
    {
        "altcha",
        "cf-turnstile-response",
        "h-captcha-response",
        "g-recaptcha-response",
        "csrf_token",
        "form_token",
    }
)


def check(ctx: SpamContext, settings: SpamSettings, services: Services) -> list[Reason]:
    """Apply the form's rules to the post; return what they found."""
    reasons: list[Reason] = []
    if ctx.honeypot_filled:
        reasons.append(_reason("honeypot", "filled", "left empty", action="drop"))
    reasons += _networks(ctx, settings)
    reasons += _fill_time(ctx)
    text = post_text(ctx)
    reasons += _links(text, settings)
    reasons += _words(text, settings)
    reasons += _patterns(text, settings)
    reasons += _email_domain(ctx, settings)
    reasons += _repeats(ctx, settings, services)
    return reasons


def post_text(ctx: SpamContext) -> str:
    """Return everything the visitor wrote, one field per line."""
    parts = [ctx.subject, ctx.name, ctx.message]
    seen = {ctx.subject, ctx.name, ctx.message}
    for key, value in ctx.pairs:
        # `_next`, `_subject`, ...: steering fields, not the visitor's text.
        if key.startswith("_") or key.lower() in NOT_TEXT or value in seen:
            continue
        seen.add(value)
        parts.append(value)
    return "\n".join(p for p in parts if p)


def count_links(text: str) -> int:
    """Return how many links the text carries."""
    return len(LINK_RE.findall(text))


def _links(text: str, settings: SpamSettings) -> list[Reason]:
    n = count_links(text)
    over = n - settings.max_links
    if over <= 0:
        return []
    score = min(LINKS_MAX, LINKS_FIRST + LINKS_EACH * (over - 1))
    return [
        _reason(
            "links",
            f"{n} link{'s' if n != 1 else ''}",
            f"at most {settings.max_links}",
            score=score,
        )
    ]


def _words(text: str, settings: SpamSettings) -> list[Reason]:
    if not settings.blocked_words:
        return []
    folded = text.casefold()
    for word in settings.blocked_words:
        # Whole words only ("sex" must not catch "Sussex"); a word that
        # starts or ends in a non-word character is matched as it is.
        needle = re.escape(word.casefold())
        if re.search(rf"(?<!\w){needle}(?!\w)", folded):
            return [_reason("blocked_word", word, "blocked_words", action="quarantine")]
    return []


def _patterns(text: str, settings: SpamSettings) -> list[Reason]:
    for pattern in settings.blocked_patterns:
        if pattern.search(text):
            return [
                _reason(
                    "blocked_pattern",
                    pattern.pattern[:80],
                    "blocked_patterns",
                    action="quarantine",
                )
            ]
    return []


def email_domain(address: str) -> str:
    """Return the lower-cased domain of an address ('' without one)."""
    _, at, domain = address.strip().rpartition("@")
    return domain.rstrip(".").lower() if at else ""


def _email_domain(ctx: SpamContext, settings: SpamSettings) -> list[Reason]:
    domain = email_domain(ctx.email)
    if not domain:
        return []
    for blocked in settings.blocked_email_domains:
        if domain == blocked or domain.endswith("." + blocked):
            return [
                _reason(
                    "blocked_email_domain",
                    domain,
                    blocked,
                    action="quarantine",
                )
            ]
    return []


def _networks(ctx: SpamContext, settings: SpamSettings) -> list[Reason]:
    if not ctx.client_ip or not settings.blocked_networks:
        return []
    try:
        ip = ip_address(ctx.client_ip)
    except ValueError:
        return []
    for network in settings.blocked_networks:
        if ip.version == network.version and ip in network:
            return [
                _reason(
                    "blocked_network",
                    str(ip),
                    str(network),
                    action="drop",
                )
            ]
    return []


def _fill_time(ctx: SpamContext) -> list[Reason]:
    # Only the hosted form knows when it was shown. It answers a post that
    # is too fast itself (the page comes back asking to wait), so this is
    # the backstop for a post that got past that answer, and what `explain`
    # reports.
    if ctx.fill_seconds is None or not has_app_context():
        return []
    least = float(current_app.config.get("MIN_FILL_SECONDS") or 0.0)
    if not least or ctx.fill_seconds >= least:
        return []
    return [
        _reason(
            "fill_time",
            f"{ctx.fill_seconds:.1f} s",
            f"at least {least:g} s",
            score=FILL_TIME_SCORE,
        )
    ]


def _repeats(
    ctx: SpamContext, settings: SpamSettings, services: Services
) -> list[Reason]:
    # Imported here: gate.py imports this module, and the digest lives there.
    from .gate import body_digest, normalise_body

    if settings.repeat_window <= 0:
        return []
    if len(normalise_body(ctx.message)) < REPEAT_MIN_CHARS:
        return []
    since = services.clock.now() - settings.repeat_window
    seen = services.ledger.body_count(body_digest(ctx.message), since)
    if not seen:
        return []
    score = REPEAT_MANY if seen >= REPEAT_MANY_AT else REPEAT_SOME
    return [
        _reason(
            "repeated_body",
            f"{seen} earlier cop{'ies' if seen != 1 else 'y'}",
            f"within {settings.repeat_window:g} s",
            score=score,
        )
    ]


def _reason(
    rule: str,
    value: str,
    threshold: str,
    *,
    score: float = 0.0,
    action: Literal["score", "quarantine", "drop"] = "score",
) -> Reason:
    return Reason(
        layer=LAYER,
        rule=rule,
        value=value,
        threshold=threshold,
        score=score,
        action=action,
    )
