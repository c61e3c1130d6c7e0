"""gate: the layers in order, one verdict, remote layers skipped after a drop."""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import ip_network

import pytest

from app.spam import Reason, SpamContext
from app.spam.gate import LAYERS, REMOTE, body_digest, evaluate
from app.spam.settings import CaptchaSettings, SpamSettings

from .helpers import services_of

# Nothing listens on port 9 here: the captcha verifier is "down" at once.
DOWN = CaptchaSettings(
    provider="turnstile", secret="s", verify_url="http://127.0.0.1:9/", timeout=1
)


@pytest.fixture
def svc(app):
    with app.app_context():
        yield services_of(app)


def post(**kw) -> SpamContext:
    fields = {
        "message": "A question about engines, and their gears.",
        "client_ip": "203.0.113.9",
        "pairs": (("cf-turnstile-response", "token"),),
    }
    return SpamContext(form_id="contact", **{**fields, **kw})


def test_layers_run_cheapest_first_and_remote_last():
    names = [name for name, _ in LAYERS]
    assert names[0] == "rules"
    assert names[-2:] == ["captcha", "rspamd"]
    assert REMOTE == {"captcha", "rspamd"}
    first_remote = min(names.index(n) for n in REMOTE)
    assert all(n in REMOTE for n in names[first_remote:])


# Proof of work is off where a test is about other layers: a post built
# here carries no proof, which the default `score` mode counts.
NO_POW = {"proof_of_work": "off"}


def test_a_clean_post_is_accepted_without_reasons(svc):
    verdict = evaluate(post(), SpamSettings(**NO_POW), svc)
    assert (verdict.name, verdict.reasons, verdict.score) == ("accept", (), 0.0)


def test_a_remote_layer_runs_when_nothing_decided_drop(svc):
    verdict = evaluate(post(), SpamSettings(captcha=DOWN, **NO_POW), svc)
    assert verdict.codes == ("captcha_unavailable",)
    assert verdict.name == "accept"  # fail open
    closed = evaluate(post(), SpamSettings(captcha=DOWN, fail="closed", **NO_POW), svc)
    assert closed.name == "quarantine"


@pytest.mark.parametrize(
    ("ctx", "settings"),
    [
        pytest.param(post(honeypot_filled=True), SpamSettings(), id="honeypot"),
        pytest.param(
            post(client_ip="198.51.100.7"),
            SpamSettings(blocked_networks=(ip_network("198.51.100.0/24"),)),
            id="network",
        ),
        pytest.param(
            post(message=" ".join(f"https://s{i}.example" for i in range(9))),
            SpamSettings(quarantine_at=1, drop_at=4),
            id="score",
        ),
    ],
)
def test_remote_layers_are_skipped_once_cheaper_ones_drop(svc, ctx, settings):
    verdict = evaluate(ctx, replace(settings, captcha=DOWN), svc)
    assert verdict.name == "drop"
    assert "captcha_unavailable" not in verdict.codes


def test_evaluate_takes_its_layers_in_order():
    seen: list[str] = []

    def layer(name: str, reason: Reason | None):
        def check(ctx, settings, services):
            seen.append(name)
            return [reason] if reason else []

        return (name, check)

    drop = Reason(layer="first", rule="x", action="drop")
    layers = (layer("first", drop), layer("local", None), layer("rspamd", None))
    verdict = evaluate(post(), SpamSettings(), None, layers)
    # "local" is not remote, so it still runs; rspamd is skipped.
    assert seen == ["first", "local"]
    assert verdict.name == "drop" and verdict.codes == ("x",)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Hello world", "hello world", True),
        ("Hello\r\nworld", "Hello\nworld", True),
        ("Hello   world  ", "  Hello world", True),
        ("Ｈｅｌｌｏ world", "Hello world", True),  # full-width: NFKC
        ("Cafe\u0301", "Café", True),
        ("Hello world", "Hello world!", False),
        ("Hello world", "Hello there", False),
    ],
)
def test_body_digest_normalises_what_a_person_would_call_the_same(a, b, same):
    assert (body_digest(a) == body_digest(b)) is same
    assert re.fullmatch(r"[0-9a-f]{64}", body_digest(a))
