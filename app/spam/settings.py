"""Per-form spam settings: `[forms.<id>.spam]` in FORMS_FILE, SPAM_* for defaults.

Every form gets a SpamSettings; a form's table overrides the environment's
defaults key by key. Parsing is strict, as everywhere in config: a bad value
stops start-up with a message naming the form and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from re import Pattern
from typing import Literal

ProofOfWork = Literal["off", "score", "required"]
CaptchaProvider = Literal["turnstile", "hcaptcha", "recaptcha"]


@dataclass(frozen=True)
class CaptchaSettings:
    """A third-party captcha with the owner's own keys."""

    provider: CaptchaProvider
    # Kept out of repr: settings end up in tracebacks and debug output.
    secret: str = field(repr=False)
    site_key: str = ""
    # reCAPTCHA v3 only: a score under this counts toward quarantine.
    min_score: float = 0.5
    # The provider's siteverify URL; set only to point at a local verifier
    # (tests) or a compatible self-hosted one.
    verify_url: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class SpamSettings:
    """What one form checks, and where its verdicts fall."""

    # What a verifier that cannot be reached (captcha, rspamd) does:
    # "open" lets the post through, "closed" quarantines it.
    fail: Literal["open", "closed"] = "open"
    quarantine_at: float = 5.0
    drop_at: float = 15.0
    proof_of_work: ProofOfWork = "score"
    captcha: CaptchaSettings | None = None
    max_links: int = 2
    blocked_words: tuple[str, ...] = ()
    blocked_patterns: tuple[Pattern[str], ...] = ()
    blocked_email_domains: tuple[str, ...] = ()
    blocked_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    # The same message body already stored (any form) within this many
    # seconds counts toward quarantine; 0 turns the rule off.
    repeat_window: float = 86400.0
    # rspamd (only when RSPAMD_URL is set): its score at or over these
    # quarantines or drops.
    rspamd_quarantine_at: float = 6.0
    rspamd_drop_at: float = 15.0
