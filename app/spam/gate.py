"""Run a form's spam layers over a post and decide its verdict.

`LAYERS` lists the layers in order, cheapest first and the ones that ask
another service (captcha, rspamd) last. `evaluate` runs them and combines
their reasons with `decide`. Once the cheaper layers have already decided
`drop` (a filled honeypot, a blocked network, a score at `drop_at`), the
remote layers are skipped: their answer could not change the verdict, and
a bot should not cost the owner a captcha verification or an rspamd scan.
`flask --app wsgi explain` (app/explain.py) runs every layer regardless.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..message import normalize_newlines
from . import (
    Reason,
    SpamContext,
    Verdict,
    altcha,
    captcha,
    decide,
    heuristics,
    rspamd,
    rules,
)
from .settings import SpamSettings

if TYPE_CHECKING:
    from ..services import Services

Check = Callable[[SpamContext, SpamSettings, "Services"], list[Reason]]

LAYERS: tuple[tuple[str, Check], ...] = (
    ("rules", rules.check),
    ("heuristics", heuristics.check),
    ("altcha", altcha.check),
    ("captcha", captcha.check),
    ("rspamd", rspamd.check),
)
# Layers that ask another service over the network: skipped once the
# layers before them have decided `drop`.
REMOTE = frozenset({"captcha", "rspamd"})

_BLANKS = re.compile(r"\s+")


def evaluate(
    ctx: SpamContext,
    settings: SpamSettings,
    services: Services,
    layers: tuple[tuple[str, Check], ...] = LAYERS,
) -> Verdict:
    """Run `layers` in order over the post; return the verdict and its reasons."""
    reasons: list[Reason] = []
    for name, check in layers:
        if name in REMOTE and _dropped(reasons, settings):
            continue
        reasons.extend(check(ctx, settings, services))
    return decide(reasons, settings.quarantine_at, settings.drop_at)


def _dropped(reasons: list[Reason], settings: SpamSettings) -> bool:
    return decide(reasons, settings.quarantine_at, settings.drop_at).name == "drop"


def normalise_body(message: str) -> str:
    """Return the body as compared for repeats: NFKC, casefolded, blanks as one."""
    text = unicodedata.normalize("NFKC", normalize_newlines(message)).casefold()
    return _BLANKS.sub(" ", text).strip()


def body_digest(message: str) -> str:
    """Return the SHA-256 hex digest of the normalised message body.

    Line endings, Unicode form, case and runs of blanks do not make two
    bodies different: a bot that reposts its text with other spacing is
    still repeating it.
    """
    return hashlib.sha256(normalise_body(message).encode("utf-8")).hexdigest()
