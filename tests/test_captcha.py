"""The captcha layer against a local fake of each provider's siteverify.

The fake is a real HTTP server on loopback that answers as Turnstile,
hCaptcha and reCAPTCHA document (success, error codes, v3 scores) and can
also be slow, fail with 500 or answer garbage; it records every request so
the tests check what Formpost sent.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.spam import SpamContext, decide
from app.spam.captcha import check
from app.spam.settings import CaptchaSettings, SpamSettings

from .relay import free_port

PROVIDERS = ("turnstile", "hcaptcha", "recaptcha")
PATHS = {
    "turnstile": "/turnstile/v0/siteverify",
    "hcaptcha": "/siteverify",
    "recaptcha": "/recaptcha/api/siteverify",
}
FIELDS = {
    "turnstile": "cf-turnstile-response",
    "hcaptcha": "h-captcha-response",
    "recaptcha": "g-recaptcha-response",
}
# The code each provider answers for a token that is not valid.
BAD_TOKEN_CODE = {
    "turnstile": "invalid-input-response",
    "hcaptcha": "invalid-or-already-seen-response",
    "recaptcha": "invalid-input-response",
}
SECRET = "0x4AAAAAAA-owner-secret"
SLOW = 1.5


@dataclass
class Seen:
    path: str
    content_type: str
    fields: dict[str, str]


@dataclass
class FakeVerifier:
    """Each provider's siteverify, on loopback."""

    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, provider: str) -> str:
        return self.base + PATHS[provider]


def provider_reply(provider: str, fields: dict[str, str]) -> dict[str, object]:
    """What the provider answers for these fields (documented shapes)."""
    token = fields.get("response", "")
    if fields.get("secret") != SECRET:
        return {"success": False, "error-codes": ["invalid-input-secret"]}
    if token == "expired":
        return {"success": False, "error-codes": ["timeout-or-duplicate"]}
    if not token.startswith("ok"):
        return {"success": False, "error-codes": [BAD_TOKEN_CODE[provider]]}
    reply: dict[str, object] = {
        "success": True,
        "challenge_ts": "2026-12-02T21:00:00Z",
        "hostname": "shop.example",
    }
    if provider == "turnstile":
        reply.update({"error-codes": [], "action": "", "cdata": ""})
    if provider == "hcaptcha":
        reply["credit"] = False
    if token.startswith("ok-score-"):
        # reCAPTCHA v3; hCaptcha Enterprise also sends a score (a risk score,
        # higher is worse), which Formpost must not read as reCAPTCHA's.
        reply.update({"score": float(token.removeprefix("ok-score-")), "action": "c"})
    return reply


@pytest.fixture
def verifier() -> Iterator[FakeVerifier]:
    fake: FakeVerifier

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            fields = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            fake.seen.append(
                Seen(self.path, self.headers.get("Content-Type", ""), fields)
            )
            provider = next((p for p, path in PATHS.items() if path == self.path), None)
            token = fields.get("response", "")
            if provider is None:
                self.send_error(404)
                return
            if token == "slow":
                # Answers, but long after Formpost stopped waiting.
                time.sleep(SLOW)
                self.close_connection = True
                try:
                    self.send_error(504)
                except OSError:
                    pass
                return
            if token == "error500":
                self.send_error(500)
                return
            body = (
                b"<html>Service unavailable</html>"
                if token == "garbage"
                else json.dumps(provider_reply(provider, fields)).encode()
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake = FakeVerifier(server)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


def settings_for(
    provider: str,
    url: str,
    fail: str = "open",
    min_score: float = 0.5,
    site_key: str = "",
    timeout: float = 0.5,
) -> SpamSettings:
    return SpamSettings(
        fail=fail,
        captcha=CaptchaSettings(
            provider=provider,
            secret=SECRET,
            site_key=site_key,
            min_score=min_score,
            verify_url=url,
            timeout=timeout,
        ),
    )


def post(provider: str, token: str | None, ip: str | None = "203.0.113.5"):
    pairs = [("name", "Anna"), ("message", "Hello")]
    if token is not None:
        pairs.append((FIELDS[provider], token))
    return SpamContext(form_id="contact", pairs=tuple(pairs), client_ip=ip)


def run(ctx: SpamContext, settings: SpamSettings):
    # The layer does not use the services; the gate passes them to all.
    return check(ctx, settings, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_valid_token_passes_and_the_provider_gets_secret_token_and_ip(
    verifier: FakeVerifier, provider: str
) -> None:
    assert (
        run(post(provider, "ok-1"), settings_for(provider, verifier.url(provider)))
        == []
    )
    (seen,) = verifier.seen
    assert seen.path == PATHS[provider]
    assert seen.content_type == "application/x-www-form-urlencoded"
    assert seen.fields == {
        "secret": SECRET,
        "response": "ok-1",
        "remoteip": "203.0.113.5",
    }


def test_hcaptcha_also_gets_the_site_key(verifier: FakeVerifier) -> None:
    settings = settings_for(
        "hcaptcha", verifier.url("hcaptcha"), site_key="10000000-ffff"
    )
    assert run(post("hcaptcha", "ok-1"), settings) == []
    assert verifier.seen[0].fields["sitekey"] == "10000000-ffff"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_without_a_client_ip_no_remoteip_is_sent(
    verifier: FakeVerifier, provider: str
) -> None:
    run(post(provider, "ok-1", ip=None), settings_for(provider, verifier.url(provider)))
    assert "remoteip" not in verifier.seen[0].fields


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("token", [None, "", "   "])
def test_a_missing_token_quarantines_without_asking_the_provider(
    verifier: FakeVerifier, provider: str, token: str | None
) -> None:
    (reason,) = run(
        post(provider, token), settings_for(provider, verifier.url(provider))
    )
    assert (reason.layer, reason.rule, reason.action) == (
        "captcha",
        "captcha_missing",
        "quarantine",
    )
    assert reason.threshold == f"{provider} required"
    assert verifier.seen == []


@pytest.mark.parametrize(
    ("provider", "token", "codes"),
    [(p, "forged", BAD_TOKEN_CODE[p]) for p in PROVIDERS]
    + [(p, "expired", "timeout-or-duplicate") for p in PROVIDERS],
)
def test_a_refused_token_quarantines_with_the_providers_codes(
    verifier: FakeVerifier, provider: str, token: str, codes: str
) -> None:
    (reason,) = run(
        post(provider, token), settings_for(provider, verifier.url(provider))
    )
    assert (reason.rule, reason.value, reason.action) == (
        "captcha_failed",
        codes,
        "quarantine",
    )
    assert decide([reason], 5.0, 15.0).name == "quarantine"


def test_an_oversized_token_is_refused_without_asking(verifier: FakeVerifier) -> None:
    ctx = post("turnstile", "ok" + "x" * 5000)
    (reason,) = run(ctx, settings_for("turnstile", verifier.url("turnstile")))
    assert (reason.rule, reason.value) == ("captcha_failed", "token too long")
    assert verifier.seen == []


@pytest.mark.parametrize(
    ("score", "min_score", "low"),
    [(0.9, 0.5, False), (0.5, 0.5, False), (0.3, 0.5, True), (0.6, 0.7, True)],
)
def test_recaptcha_v3_scores_under_min_score_quarantine(
    verifier: FakeVerifier, score: float, min_score: float, low: bool
) -> None:
    settings = settings_for("recaptcha", verifier.url("recaptcha"), min_score=min_score)
    reasons = run(post("recaptcha", f"ok-score-{score}"), settings)
    if not low:
        assert reasons == []
        return
    (reason,) = reasons
    assert (reason.rule, reason.value, reason.threshold, reason.action) == (
        "captcha_low_score",
        f"{score:g}",
        f"at least {min_score:g}",
        "quarantine",
    )


def test_an_hcaptcha_risk_score_is_not_read_as_recaptchas(
    verifier: FakeVerifier,
) -> None:
    settings = settings_for("hcaptcha", verifier.url("hcaptcha"), min_score=0.5)
    assert run(post("hcaptcha", "ok-score-0.1"), settings) == []


@pytest.mark.parametrize(
    ("provider", "field_name"),
    [("turnstile", "g-recaptcha-response"), ("hcaptcha", "g-recaptcha-response")],
)
def test_the_recaptcha_compatible_field_is_read_too(
    verifier: FakeVerifier, provider: str, field_name: str
) -> None:
    ctx = SpamContext(form_id="contact", pairs=((field_name, "ok-2"),))
    assert run(ctx, settings_for(provider, verifier.url(provider))) == []
    assert verifier.seen[0].fields["response"] == "ok-2"


def test_recaptcha_does_not_take_a_turnstile_token(verifier: FakeVerifier) -> None:
    ctx = SpamContext(form_id="contact", pairs=(("cf-turnstile-response", "ok"),))
    (reason,) = run(ctx, settings_for("recaptcha", verifier.url("recaptcha")))
    assert reason.rule == "captcha_missing"


def test_the_hosted_form_is_not_asked_for_a_token(verifier: FakeVerifier) -> None:
    ctx = SpamContext(form_id="hosted", pairs=(("message", "Hi"),), fill_seconds=9.0)
    assert run(ctx, settings_for("turnstile", verifier.url("turnstile"))) == []
    assert verifier.seen == []


def test_no_captcha_configured_asks_nobody(verifier: FakeVerifier) -> None:
    assert run(post("turnstile", "forged"), SpamSettings()) == []
    assert verifier.seen == []


OUTAGES = [
    ("slow", "no answer within 0.5 s"),
    ("error500", "HTTP 500"),
    ("garbage", "reply is not JSON"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("token", "value"), OUTAGES)
@pytest.mark.parametrize(
    ("fail", "action", "verdict"),
    [("open", "score", "accept"), ("closed", "quarantine", "quarantine")],
)
def test_an_outage_follows_fail_open_or_closed(
    verifier: FakeVerifier,
    provider: str,
    token: str,
    value: str,
    fail: str,
    action: str,
    verdict: str,
) -> None:
    settings = settings_for(provider, verifier.url(provider), fail=fail, timeout=0.5)
    started = time.monotonic()
    (reason,) = run(post(provider, token), settings)
    assert time.monotonic() - started < SLOW
    assert (reason.rule, reason.value, reason.action, reason.score) == (
        "captcha_unavailable",
        value,
        action,
        0.0,
    )
    assert decide([reason], 5.0, 15.0).name == verdict
    assert len(verifier.seen) == 1


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_a_verifier_that_refuses_connections_follows_fail(fail: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/siteverify"
    (reason,) = run(post("hcaptcha", "ok-1"), settings_for("hcaptcha", url, fail=fail))
    assert (reason.rule, reason.value) == ("captcha_unavailable", "connection refused")
    assert reason.action == ("quarantine" if fail == "closed" else "score")


def test_a_wrong_secret_is_the_owners_problem_not_the_visitors(
    verifier: FakeVerifier,
) -> None:
    settings = SpamSettings(
        fail="open",
        captcha=CaptchaSettings(
            provider="turnstile",
            secret="mistyped",
            verify_url=verifier.url("turnstile"),
        ),
    )
    (reason,) = run(post("turnstile", "ok-1"), settings)
    assert (reason.rule, reason.value, reason.action) == (
        "captcha_unavailable",
        "provider refused: invalid-input-secret",
        "score",
    )
    assert verifier.seen[0].fields["secret"] == "mistyped"
