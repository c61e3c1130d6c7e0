"""The proof-of-work layer (app/spam/altcha.py) and its spent proofs in the ledger.

Challenges come from the app (its challenge endpoints or `new_challenge`),
solutions from the `altcha` library's own solver, as the official widget
would find them. Expiry runs on the fake clock. Spending runs on SQLite and
PostgreSQL, from threads at once.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from unittest.mock import ANY

import altcha as altcha_lib
import pytest
from flask import Flask

from app.ledger import Ledger, make_engine, migrate
from app.spam import Reason, SpamContext, Verdict, decide
from app.spam import altcha as pow_
from app.spam.settings import SpamSettings

from .fakeclock import FakeClock
from .helpers import post_form, services_of, use_fake_clock
from .relay import Relay

SITE = "https://www.example.com"
EVIL = "https://evil.example"
RULES = ("altcha_missing", "altcha_invalid", "altcha_expired", "altcha_replayed")


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app({"ALLOWED_ORIGINS": SITE, "SPAM_PROOF_OF_WORK": "score"})


def encode(data: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def solve(made: dict[str, Any], /, **changes: Any) -> str:
    """Solve a challenge as the widget does; return the `altcha` field's value."""
    found = altcha_lib.solve_challenge_v1(
        made["challenge"], made["salt"], made["algorithm"], made["maxnumber"]
    )
    assert found is not None
    payload = {
        "algorithm": made["algorithm"],
        "challenge": made["challenge"],
        "number": found.number,
        "salt": made["salt"],
        "signature": made["signature"],
        "took": 12,
    }
    payload.update(changes)
    return encode(payload)


def issue(app: Flask, form_id: str = "default", secret: str | None = None) -> dict:
    """A challenge as the app issues it now (small, so the solver is quick)."""
    return pow_.new_challenge(
        secret or app.config["SECRET_KEY"],
        form_id,
        services_of(app).clock.now(),
        max_number=2000,
    )


def run(
    app: Flask,
    value: str | None,
    mode: str = "score",
    form_id: str = "default",
    layer: Callable[..., list[Reason]] = pow_.check,
) -> list[Reason]:
    pairs = (("message", "Hello"),) + (() if value is None else (("altcha", value),))
    ctx = SpamContext(form_id=form_id, pairs=pairs, message="Hello")
    with app.app_context():
        return layer(ctx, SpamSettings(proof_of_work=mode), services_of(app))


def rules(reasons: list[Reason]) -> list[str]:
    return [r.rule for r in reasons]


# -- verification ------------------------------------------------------------


def test_a_solved_challenge_passes_and_is_spent(app: Flask) -> None:
    value = solve(issue(app))
    assert run(app, value) == []
    found = pow_.examine(value, app.config["SECRET_KEY"], "default", 0.0)
    assert isinstance(found, pow_.Proof)
    assert services_of(app).ledger.proof_spent(found.digest)


def test_the_same_solution_twice_is_a_replay(app: Flask) -> None:
    value = solve(issue(app))
    assert run(app, value) == []
    (again,) = run(app, value)
    assert (again.rule, again.value) == ("altcha_replayed", "already used")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_proof_is_missing(app: Flask, value: str | None) -> None:
    (reason,) = run(app, value)
    assert (reason.layer, reason.rule, reason.value) == (
        "altcha",
        "altcha_missing",
        "no proof",
    )


def test_a_challenge_signed_with_another_key_is_invalid(app: Flask) -> None:
    forged = issue(app, secret="another-secret-key-of-32-chars!!")
    (reason,) = run(app, solve(forged))
    assert (reason.rule, reason.value) == ("altcha_invalid", "bad signature")


def test_secret_key_itself_does_not_sign_challenges(app: Flask) -> None:
    """The HMAC key is derived from SECRET_KEY with a purpose label."""
    secret = app.config["SECRET_KEY"]
    made = issue(app)
    assert pow_.hmac_key(secret) != secret
    assert made["signature"] != altcha_lib.hmac_hex(
        "SHA-256", made["challenge"].encode(), secret
    )
    assert made["signature"] == altcha_lib.hmac_hex(
        "SHA-256", made["challenge"].encode(), pow_.hmac_key(secret)
    )


def test_a_tampered_number_is_invalid(app: Flask) -> None:
    made = issue(app)
    right = json.loads(base64.b64decode(solve(made)))["number"]
    (reason,) = run(app, solve(made, number=right + 1))
    assert (reason.rule, reason.value) == ("altcha_invalid", "wrong number")
    # and the real solution is still unspent: a bad try spends nothing
    assert run(app, solve(made)) == []


def test_a_challenge_for_another_form_is_invalid(app: Flask) -> None:
    (reason,) = run(app, solve(issue(app, form_id="hosted")))
    assert (reason.rule, reason.value) == ("altcha_invalid", "issued for another form")


@pytest.mark.parametrize(
    ("value", "seen"),
    [
        ("not base64 at all!", "not base64 JSON"),
        (base64.b64encode(b"\xff\xfe").decode(), "not base64 JSON"),
        (base64.b64encode(b"[" * 1500).decode(), "not base64 JSON"),
        (encode([1, 2]), "not a JSON object"),  # type: ignore[arg-type]
        (encode({"algorithm": "SHA-256"}), "fields missing"),
        ("A" * 3000, "too long"),
    ],
)
def test_garbage_is_invalid(app: Flask, value: str, seen: str) -> None:
    (reason,) = run(app, value)
    assert (reason.rule, reason.value) == ("altcha_invalid", seen)


@pytest.mark.parametrize(
    ("change", "seen"),
    [
        ({"number": "7"}, "fields missing"),
        ({"number": True}, "fields missing"),
        ({"algorithm": "SHA-1"}, "other algorithm"),
        ({"signature": None}, "fields missing"),
        ({"challenge": "é" * 64}, "wrong number"),
        ({"signature": "é" * 64}, "bad signature"),
        ({"salt": "sel☃?form=default&"}, "wrong number"),
    ],
)
def test_wrong_types_are_invalid(app: Flask, change: dict, seen: str) -> None:
    (reason,) = run(app, solve(issue(app), **change))
    assert (reason.rule, reason.value) == ("altcha_invalid", seen)


def test_an_expired_proof_is_refused_on_the_apps_clock(app: Flask) -> None:
    clock = use_fake_clock(app)
    value = solve(issue(app))
    clock.advance(pow_.TTL)
    assert run(app, value, layer=pow_.check_without_spending) == []
    clock.advance(61)
    (reason,) = run(app, value)
    assert (reason.rule, reason.value) == ("altcha_expired", "expired 61 s ago")


def test_challenges_expire_twenty_minutes_after_issue(app: Flask) -> None:
    clock = use_fake_clock(app)
    made = issue(app)
    assert f"expires={int(clock.now()) + 1200}&" in made["salt"]
    assert made["expiresIn"] == 1200
    assert made["maxnumber"] == made["maxNumber"] == 2000


def test_explain_does_not_spend(app: Flask) -> None:
    value = solve(issue(app))
    assert run(app, value, layer=pow_.check_without_spending) == []
    assert run(app, value, layer=pow_.check_without_spending) == []
    assert run(app, value) == []
    (reason,) = run(app, value, layer=pow_.check_without_spending)
    assert reason.rule == "altcha_replayed"


# -- weights by proof_of_work ------------------------------------------------


def bad_proof(app: Flask, rule: str) -> str | None:
    """A post value that trips `rule`."""
    if rule == "altcha_missing":
        return None
    if rule == "altcha_invalid":
        return solve(issue(app, secret="another-secret-key-of-32-chars!!"))
    if rule == "altcha_expired":
        clock = use_fake_clock(app)
        value = solve(issue(app))
        clock.advance(pow_.TTL + 1)
        return value
    value = solve(issue(app))
    assert run(app, value) == []
    return value


@pytest.mark.parametrize("rule", RULES)
def test_off_reads_nothing(app: Flask, rule: str) -> None:
    assert run(app, bad_proof(app, rule), mode="off") == []


def test_off_does_not_spend_a_good_proof(app: Flask) -> None:
    value = solve(issue(app))
    assert run(app, value, mode="off") == []
    assert run(app, value) == []


@pytest.mark.parametrize("rule", RULES)
def test_score_alone_stays_under_quarantine(app: Flask, rule: str) -> None:
    """The hosted form sent without JavaScript is still delivered."""
    settings = SpamSettings(proof_of_work="score")
    (reason,) = run(app, bad_proof(app, rule))
    assert (reason.rule, reason.action, reason.score) == (rule, "score", 3.0)
    assert reason.threshold == "proof of work scored"
    assert decide([reason], settings.quarantine_at, settings.drop_at).name == "accept"
    # ... but with one more signal of about the same weight, it is quarantined.
    other = Reason(layer="rules", rule="links", score=2.0)
    verdict = decide([reason, other], settings.quarantine_at, settings.drop_at)
    assert verdict.name == "quarantine"


def test_score_follows_the_forms_quarantine_threshold(app: Flask) -> None:
    settings = replace(SpamSettings(), quarantine_at=2.0)
    ctx = SpamContext(form_id="default")
    with app.app_context():
        (reason,) = pow_.check(ctx, settings, services_of(app))
    assert reason.score == pytest.approx(1.2)
    assert decide([reason], settings.quarantine_at, settings.drop_at).name == "accept"


@pytest.mark.parametrize("rule", RULES)
def test_required_quarantines_and_never_drops(app: Flask, rule: str) -> None:
    settings = SpamSettings(proof_of_work="required")
    (reason,) = run(app, bad_proof(app, rule), mode="required")
    assert (reason.rule, reason.action, reason.score) == (rule, "quarantine", 0.0)
    assert reason.threshold == "proof of work required"
    verdict = decide([reason], settings.quarantine_at, settings.drop_at)
    assert verdict.name == "quarantine"


@pytest.mark.parametrize("mode", ["score", "required"])
def test_a_good_proof_adds_nothing_in_any_mode(app: Flask, mode: str) -> None:
    assert run(app, solve(issue(app)), mode=mode) == []


# -- spending, on both databases ---------------------------------------------


def test_spend_once(ledger: Ledger, clock: FakeClock) -> None:
    expires = clock.now() + 600
    assert ledger.spend_proof("a" * 64, expires) is True
    assert ledger.spend_proof("a" * 64, expires) is False
    assert ledger.spend_proof("b" * 64, expires) is True
    assert ledger.proof_spent("a" * 64)
    assert not ledger.proof_spent("c" * 64)


def test_concurrent_spends_exactly_one_wins(
    database_url: str, clock: FakeClock
) -> None:
    """Threads, each with its own Ledger (as separate processes would be)."""
    threads = 8
    ledgers = [Ledger(make_engine(database_url), clock) for _ in range(threads)]
    migrate(ledgers[0].engine)
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    errors: list[BaseException] = []

    def spend(ledger: Ledger) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(ledger.spend_proof("d" * 64, clock.now() + 600))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    try:
        workers = [threading.Thread(target=spend, args=(lg,)) for lg in ledgers]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
    finally:
        for lg in ledgers:
            lg.engine.dispose()
    assert errors == []
    assert sorted(results) == [False] * (threads - 1) + [True]


def test_expired_proofs_are_purged_when_spending(
    ledger: Ledger, clock: FakeClock
) -> None:
    ledger.spend_proof("e" * 64, clock.now() + 10)  # purges, then not for a minute
    clock.advance(30)
    ledger.spend_proof("f" * 64, clock.now() + 600)
    assert ledger.proof_spent("e" * 64)  # expired, but purged at most once a minute
    clock.advance(31)
    ledger.spend_proof("g" * 64, clock.now() + 600)
    assert not ledger.proof_spent("e" * 64)
    assert ledger.proof_spent("f" * 64)
    assert ledger.proof_spent("g" * 64)


def test_replay_is_refused_on_both_databases(
    make_app: Callable[..., Flask], database_url: str
) -> None:
    app = make_app({"DATABASE_URL": database_url})
    value = solve(issue(app))
    assert run(app, value) == []
    assert rules(run(app, value)) == ["altcha_replayed"]


# -- the challenge endpoints -------------------------------------------------


def test_challenge_endpoint_answers_a_solvable_challenge(app: Flask) -> None:
    client = app.test_client()
    reply = client.get("/f/default/challenge")
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"
    made = reply.get_json()
    assert set(made) == {
        "algorithm",
        "challenge",
        "maxnumber",
        "maxNumber",
        "salt",
        "signature",
        "expiresIn",
    }
    assert made["maxnumber"] == pow_.MAX_NUMBER
    assert "form=default&" in made["salt"]
    # What the official widget checks before it solves one.
    assert made["algorithm"] == "SHA-256"
    assert len(made["challenge"]) >= 40 and len(made["salt"]) >= 10
    assert client.get("/f/default/challenge").get_json()["salt"] != made["salt"]
    assert run(app, solve(made)) == []


def test_challenge_is_readable_by_the_forms_allowed_origins_only(app: Flask) -> None:
    client = app.test_client()
    allowed = client.get("/f/default/challenge", headers={"Origin": SITE})
    assert allowed.headers["Access-Control-Allow-Origin"] == SITE
    assert "Origin" in allowed.headers["Vary"]
    other = client.get("/f/default/challenge", headers={"Origin": EVIL})
    assert other.status_code == 200  # a challenge is worth nothing unsolved
    assert "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Credentials" not in allowed.headers


def test_challenge_for_an_unknown_form_is_404(app: Flask) -> None:
    reply = app.test_client().get("/f/nope/challenge", headers={"Origin": SITE})
    assert reply.status_code == 404
    assert reply.headers["Cache-Control"] == "no-store"
    assert "Access-Control-Allow-Origin" not in reply.headers


def test_challenges_do_not_count_toward_the_rate_limit(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app({"ALLOWED_ORIGINS": SITE, "RATE_LIMIT": "2/minute"})
    client = app.test_client()
    for _ in range(5):
        assert client.get("/f/default/challenge").status_code == 200
    assert services_of(app).ledger.rows() == []


def test_hosted_form_has_its_own_challenge(app: Flask) -> None:
    client = app.test_client()
    reply = client.get("/challenge")
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"
    made = reply.get_json()
    assert "form=hosted&" in made["salt"]
    assert run(app, solve(made), form_id="hosted") == []


def test_hosted_page_loads_the_widget_under_its_csp(app: Flask) -> None:
    page = app.test_client().get("/")
    html = page.get_data(as_text=True)
    assert '<script src="/static/formpost-altcha.js" defer></script>' in html
    assert 'data-formpost-challenge="/challenge"' in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    widget = app.test_client().get("/static/formpost-altcha.js")
    assert widget.status_code == 200
    assert len(widget.get_data()) < 8000


def test_the_altcha_field_never_reaches_the_email(app: Flask) -> None:
    value = solve(issue(app))
    reply = app.test_client().post(
        "/f/default",
        data={"email": "ada@example.net", "message": "Hello", "altcha": value},
        headers={"Origin": SITE, "Accept": "application/json"},
    )
    assert reply.status_code == 200
    (row,) = services_of(app).ledger.rows()
    assert "altcha" not in (row.fields or "")
    assert value not in (row.fields or "")


# -- end to end, through the gate --------------------------------------------


def stored_verdict(app: Flask) -> tuple[str, list[tuple[str, str]]]:
    """The newest row's state and its (rule, action) reasons."""
    row = services_of(app).ledger.rows()[0]
    verdict = Verdict.from_json(row.verdict)
    assert verdict is not None
    return row.state, [(r.rule, r.action) for r in verdict.reasons]


def post_to_endpoint(app: Flask, **fields: str):
    reply = app.test_client().post(
        "/f/default",
        data={"email": "ada@example.net", "message": "A question.", **fields},
        headers={"Origin": SITE, "Accept": "application/json"},
    )
    assert reply.status_code == 200
    return reply


@pytest.mark.parametrize(
    ("mode", "state", "action"),
    [("score", "pending", "score"), ("required", "spam", "quarantine")],
)
def test_a_post_without_proof_is_scored_or_quarantined(
    make_app: Callable[..., Flask], mode: str, state: str, action: str
) -> None:
    app = make_app({"ALLOWED_ORIGINS": SITE, "SPAM_PROOF_OF_WORK": mode})
    reply = post_to_endpoint(app)
    assert stored_verdict(app) == (state, [("altcha_missing", action)])
    # The visitor's answer is the same either way.
    assert reply.get_json()["ok"] is True


def test_a_proof_solved_from_the_endpoint_passes_once(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app({"ALLOWED_ORIGINS": SITE, "SPAM_PROOF_OF_WORK": "required"})
    client = app.test_client()
    value = solve(client.get("/f/default/challenge").get_json())
    first = post_to_endpoint(app, altcha=value)
    assert stored_verdict(app) == ("pending", [])
    second = post_to_endpoint(app, altcha=value, message="Another question.")
    assert stored_verdict(app) == ("spam", [("altcha_replayed", "quarantine")])
    assert first.status_code == second.status_code


@pytest.mark.parametrize(
    ("mode", "state"), [("score", "pending"), ("required", "spam"), ("off", "pending")]
)
def test_the_hosted_form_without_javascript_still_sends(
    make_app: Callable[..., Flask], relay: Relay, mode: str, state: str
) -> None:
    app = make_app(relay.env(SPAM_PROOF_OF_WORK=mode))
    client = app.test_client()
    reply = post_form(client)
    assert reply.status_code == 303
    expected = [] if mode == "off" else [("altcha_missing", ANY)]
    assert stored_verdict(app) == (state, expected)


def test_the_hosted_form_with_its_proof_is_clean(
    make_app: Callable[..., Flask], relay: Relay
) -> None:
    app = make_app(relay.env(SPAM_PROOF_OF_WORK="required"))
    client = app.test_client()
    value = solve(client.get("/challenge").get_json())
    assert post_form(client, altcha=value).status_code == 303
    assert stored_verdict(app) == ("pending", [])


def test_explain_judges_a_proof_without_spending_it(
    make_app: Callable[..., Flask], relay: Relay, tmp_path
) -> None:
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE, SPAM_PROOF_OF_WORK="required"))
    value = solve(app.test_client().get("/f/default/challenge").get_json())
    post = tmp_path / "post.txt"
    post.write_text(
        f"email=ada@example.net\nmessage=A question.\naltcha={value}\n",
        encoding="utf-8",
    )
    argv = ["explain", "default", "--origin", SITE, "--ip", "203.0.113.9"]
    for _ in range(2):
        result = app.test_cli_runner().invoke(args=[*argv, "--file", str(post)])
        assert "altcha: nothing found" in result.output, result.output
    # Still unspent: the real post with it is clean.
    post_to_endpoint(app, altcha=value)
    assert stored_verdict(app) == ("pending", [])
    result = app.test_cli_runner().invoke(args=[*argv, "--file", str(post)])
    assert "altcha_replayed" in result.output
    assert "/f/default/challenge" in result.output  # what to change
    post.write_text("email=ada@example.net\nmessage=A question.\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=[*argv, "--file", str(post)])
    assert "altcha_missing" in result.output
    assert "docs/forms.md#proof-of-work-altcha" in result.output


def test_explain_says_when_proof_of_work_is_off(
    make_app: Callable[..., Flask], relay: Relay, tmp_path
) -> None:
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE, SPAM_PROOF_OF_WORK="off"))
    post = tmp_path / "post.txt"
    post.write_text("email=ada@example.net\nmessage=A question.\n", encoding="utf-8")
    argv = ["explain", "default", "--origin", SITE, "--ip", "203.0.113.9"]
    result = app.test_cli_runner().invoke(args=[*argv, "--file", str(post)])
    assert "altcha: off (proof_of_work is off)" in result.output
