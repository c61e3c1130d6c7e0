"""Spam defence: layers that each give reasons, and one verdict from them.

Every post that passes the origin, the limits and validation goes through
the form's layers before it is stored (accept.py). Each layer looks at the
post and returns zero or more `Reason`s; `decide` turns them into one of
three verdicts:

- `accept`: stored and delivered, as before;
- `quarantine`: stored with state `spam`, not delivered until an owner
  releases it (console, `outbox release ID`);
- `drop`: answered like success, nothing delivered; the ledger keeps a
  post (state `dropped`) with the reasons, hidden, for an owner to release
  a false drop.

The visitor never learns which: the answer is the same for all three.

| module        | layer                                                          |
| ------------- | -------------------------------------------------------------- |
| settings.py   | `SpamSettings` per form, parsed from FORMS_FILE and SPAM_*       |
| rules.py      | honeypot, fill time, links, words, patterns, domains, IPs, repeats |
| altcha.py     | proof of work: challenges, verification, spent solutions       |
| captcha.py    | Turnstile, hCaptcha, reCAPTCHA v2/v3, verified server-side      |
| rspamd.py     | the composed message through rspamd's /checkv2                 |
| gate.py       | runs a form's layers over a post; `explain` for the CLI         |

A layer that depends on another service (a captcha verifier, rspamd) and
cannot reach it returns a Reason with rule `<layer>_unavailable`; the form's
`fail` setting decides its weight: `open` scores it 0 (the post goes on),
`closed` quarantines it. Nothing is ever dropped because a service was down.

A layer is a function `check(ctx: SpamContext, settings: SpamSettings,
services: Services) -> list[Reason]`; gate.py lists them in order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

VerdictName = Literal["accept", "quarantine", "drop"]
VERDICTS: tuple[VerdictName, ...] = ("accept", "quarantine", "drop")


@dataclass(frozen=True)
class Reason:
    """One finding of one layer, with what it saw and what it weighs.

    `rule` is a stable reason code (`links`, `altcha_missing`,
    `rspamd_score`, ...), used in logs and /metrics; `value` and
    `threshold` say what was seen and what the form allows, as short text
    an owner reads ("7 links", "at most 2"). Never the visitor's content
    beyond the matched word or domain. `score` adds toward the form's
    thresholds; `action` makes the reason decisive on its own.
    """

    layer: str
    rule: str
    value: str = ""
    threshold: str = ""
    score: float = 0.0
    action: Literal["score", "quarantine", "drop"] = "score"

    def as_dict(self) -> dict[str, object]:
        """Return the reason as stored in the ledger's JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The decision for one post and every reason behind it."""

    name: VerdictName
    score: float = 0.0
    reasons: tuple[Reason, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        """Return the verdict as the ledger's `verdict` column keeps it."""
        return json.dumps(
            {
                "verdict": self.name,
                "score": round(self.score, 3),
                "reasons": [r.as_dict() for r in self.reasons],
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> Verdict | None:
        """Read a stored verdict back (None for rows stored without one)."""
        if not text:
            return None
        data = json.loads(text)
        return cls(
            name=data["verdict"],
            score=float(data.get("score", 0.0)),
            reasons=tuple(Reason(**r) for r in data.get("reasons", ())),
        )

    @property
    def codes(self) -> tuple[str, ...]:
        """Return the reason codes, for log lines and metrics labels."""
        return tuple(r.rule for r in self.reasons)


ACCEPT = Verdict("accept")


@dataclass(frozen=True)
class SpamContext:
    """What the layers see of one post (built by the endpoint that parsed it).

    `pairs` is everything posted, in order, steering fields included (the
    layers find their own: `altcha`, `cf-turnstile-response`,
    `h-captcha-response`, `g-recaptcha-response`). `message_bytes` is the
    composed message as it would be delivered (rspamd reads it); empty
    when the caller has not composed one. `fill_seconds` is the time since
    the hosted form was rendered, None where unknown (/f/ posts).
    """

    form_id: str
    pairs: tuple[tuple[str, str], ...] = ()
    subject: str = ""
    name: str = ""
    email: str = ""
    message: str = ""
    client_ip: str | None = None
    origin: str | None = None
    user_agent: str | None = None
    honeypot_filled: bool = False
    fill_seconds: float | None = None
    message_bytes: bytes = b""

    def first(self, name: str) -> str | None:
        """Return the first posted value of field `name`, or None."""
        for key, value in self.pairs:
            if key == name:
                return value
        return None


def decide(
    reasons: list[Reason] | tuple[Reason, ...],
    quarantine_at: float,
    drop_at: float,
) -> Verdict:
    """Combine reasons into one verdict.

    A reason whose action is `drop` drops the post, one whose action is
    `quarantine` quarantines it; otherwise the summed score decides:
    at or over `drop_at` drop, at or over `quarantine_at` quarantine.
    """
    score = sum(r.score for r in reasons)
    actions = {r.action for r in reasons}
    if "drop" in actions or score >= drop_at:
        name: VerdictName = "drop"
    elif "quarantine" in actions or score >= quarantine_at:
        name = "quarantine"
    else:
        name = "accept"
    return Verdict(name, score, tuple(reasons))
