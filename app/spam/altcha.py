"""Proof of work with ALTCHA: challenges, their verification, spent solutions.

A page asks `GET /f/<form>/challenge` (the hosted form: `GET /challenge`)
for a challenge made by the `altcha` library (its v1 format, the one the
official ALTCHA widget speaks): a random number under `maxnumber` hidden
in `challenge = SHA-256(salt + number)`, signed with an HMAC. The browser
finds the number by trying them all (static/formpost-altcha.js, or the
official widget) and posts the solution as the `altcha` field: base64 of
the JSON `{algorithm, challenge, number, salt, signature}`.

The server re-hashes `salt + number`, checks the signature with a key
derived from SECRET_KEY for this purpose only (never SECRET_KEY itself),
reads the expiry and the form id that the signed salt carries, and spends
the solution in the ledger so it is accepted once (app/ledger/proofs.py).

What the layer returns, by the form's `proof_of_work`:

- `off`: nothing; the field is not read.
- `score` (the default): `altcha_missing` (no proof: a visitor without
  JavaScript, or a bot that skipped the widget), `altcha_invalid` (not a
  solution we issued: bad encoding, bad signature, a number that does not
  hash to the challenge, another form's challenge), `altcha_expired` or
  `altcha_replayed` each score 0.6 x the form's `quarantine_at` (3.0 at
  the default 5.0): alone they never quarantine, so the hosted form sent
  without JavaScript still arrives, but any second signal of about the
  same weight (links, a fast fill, a heuristic) tips the post over.
- `required`: any of the four quarantines the post; never a drop, so an
  owner can still release a real customer's message sent without JavaScript.

The signature is compared in constant time and the expiry is read from the
app's clock, which is why the checks are spelled out here with the
library's hash functions rather than through its `verify_solution_v1`
(which compares with `==` and reads `time.time()`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import altcha
from flask import current_app, has_app_context

from . import Reason, SpamContext
from .settings import SpamSettings

if TYPE_CHECKING:
    from ..services import Services

LAYER = "altcha"
# The field the widget fills (the official widget's default name too).
FIELD = "altcha"
ALGORITHM = "SHA-256"
# A challenge is good for 20 minutes: long enough to write a long message
# after the page loaded (the widget fetches a fresh one before it runs out
# on a page left open), short enough that solved proofs cannot be stockpiled.
TTL = 20 * 60
# The number is drawn from 0..MAX_NUMBER, and the widget tries them in
# order. Measured with headless chromium on the 2-core test machine under
# load: crypto.subtle managed 45,000-110,000 SHA-256 a second (a worker and
# the main thread alike), so a proof takes about 1 s on average and 2 s at
# worst there, well inside the time it takes to type a message; a recent
# laptop is faster, an old phone slower. The official widget defaults to
# 1,000,000, which would be 10-20 s here.
MAX_NUMBER = 100_000
# A missing or bad proof, with proof_of_work = "score", weighs this share
# of the form's quarantine_at: alone it never quarantines.
SCORE_SHARE = 0.6
# Longer than any payload we issue (about 300 characters): refuse unread.
MAX_PAYLOAD = 2048
# Derives the HMAC key from SECRET_KEY; a new label gives a new key.
PURPOSE = b"formpost/altcha-hmac-key/v1"


@dataclass(frozen=True)
class Proof:
    """A valid, unexpired solution: what spends it in the ledger."""

    digest: str
    expires_at: float


@dataclass(frozen=True)
class Problem:
    """Why a posted proof is not one: the reason code and what was seen."""

    rule: str
    value: str


def hmac_key(secret_key: str) -> str:
    """Derive the key that signs challenges: HMAC-SHA256(SECRET_KEY, PURPOSE)."""
    derived = hmac.new(secret_key.encode("utf-8"), PURPOSE, hashlib.sha256)
    return derived.hexdigest()


def new_challenge(
    secret_key: str, form_id: str, now: float, max_number: int = MAX_NUMBER
) -> dict[str, object]:
    """Make a challenge for `form_id` that expires TTL seconds after `now`.

    Returned as the official widget expects it (`maxnumber`; `maxNumber`
    too, as the Python library spells it), plus `expiresIn` (seconds) so a
    widget can fetch a fresh one in time whatever its own clock says.
    """
    expires = datetime.datetime.fromtimestamp(now + TTL, tz=datetime.UTC)
    made = altcha.create_challenge_v1(
        altcha.ChallengeOptionsV1(
            algorithm=ALGORITHM,
            max_number=max_number,
            hmac_key=hmac_key(secret_key),
            expires=expires,
            params={"form": form_id},
        )
    )
    return {
        "algorithm": made.algorithm,
        "challenge": made.challenge,
        "maxnumber": made.max_number,
        "maxNumber": made.max_number,
        "salt": made.salt,
        "signature": made.signature,
        "expiresIn": TTL,
    }


def examine(
    text: str | None, secret_key: str, form_id: str, now: float
) -> Proof | Problem:
    """Read a posted `altcha` value: a Proof to spend, or the Problem with it."""
    if text is None or not text.strip():
        return Problem("altcha_missing", "no proof")
    if len(text) > MAX_PAYLOAD:
        return Problem("altcha_invalid", "too long")
    try:
        data = json.loads(base64.b64decode(text.strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return Problem("altcha_invalid", "not base64 JSON")
    if not isinstance(data, dict):
        return Problem("altcha_invalid", "not a JSON object")
    number = data.get("number")
    strings = [data.get(k) for k in ("algorithm", "challenge", "salt", "signature")]
    if not all(isinstance(s, str) for s in strings) or not (
        isinstance(number, int) and not isinstance(number, bool)
    ):
        return Problem("altcha_invalid", "fields missing")
    if data["algorithm"] != ALGORITHM:
        return Problem("altcha_invalid", "other algorithm")
    salt: str = data["salt"]
    challenge: str = data["challenge"]
    # Compared as bytes: compare_digest refuses str that is not ASCII.
    expected = altcha.hash_hex(ALGORITHM, f"{salt}{number}".encode())
    if not hmac.compare_digest(expected.encode(), challenge.encode()):
        return Problem("altcha_invalid", "wrong number")
    signature = altcha.hmac_hex(ALGORITHM, challenge.encode(), hmac_key(secret_key))
    if not hmac.compare_digest(signature.encode(), data["signature"].encode()):
        return Problem("altcha_invalid", "bad signature")
    # Signed by us from here on: the salt's parameters are ours.
    params = altcha.extract_params_v1(data)  # type: ignore[arg-type]
    if params.get("form") != [form_id]:
        return Problem("altcha_invalid", "issued for another form")
    try:
        (expires_text,) = params["expires"]
        expires_at = float(int(expires_text))
    except (KeyError, ValueError):
        return Problem("altcha_invalid", "no expiry")
    if expires_at < now:
        return Problem("altcha_expired", f"expired {int(now - expires_at)} s ago")
    digest = hashlib.sha256(f"altcha:{challenge}".encode()).hexdigest()
    return Proof(digest, expires_at)


def check(ctx: SpamContext, settings: SpamSettings, services: Services) -> list[Reason]:
    """Verify the post's proof of work and spend it; reasons by the form's mode."""
    return _check(ctx, settings, services, spend=True)


def check_without_spending(
    ctx: SpamContext, settings: SpamSettings, services: Services
) -> list[Reason]:
    """The same verdict as `check`, leaving the proof unspent (for `explain`).

    A proof already spent still reads as replayed.
    """
    return _check(ctx, settings, services, spend=False)


def _check(
    ctx: SpamContext, settings: SpamSettings, services: Services, spend: bool
) -> list[Reason]:
    mode = settings.proof_of_work
    # The key comes from the app's SECRET_KEY: no app, no page that could
    # have asked for a challenge (a script calling accept() directly).
    if mode == "off" or not has_app_context():
        return []
    found = examine(
        ctx.first(FIELD),
        current_app.config["SECRET_KEY"],
        ctx.form_id,
        services.clock.now(),
    )
    if isinstance(found, Proof):
        ledger = services.ledger
        fresh = (
            ledger.spend_proof(found.digest, found.expires_at)
            if spend
            else not ledger.proof_spent(found.digest)
        )
        if fresh:
            return []
        found = Problem("altcha_replayed", "already used")
    if mode == "required":
        return [
            Reason(
                layer=LAYER,
                rule=found.rule,
                value=found.value,
                threshold="proof of work required",
                action="quarantine",
            )
        ]
    return [
        Reason(
            layer=LAYER,
            rule=found.rule,
            value=found.value,
            threshold="proof of work scored",
            score=round(SCORE_SHARE * settings.quarantine_at, 3),
        )
    ]
