"""Third-party captchas with the owner's keys, verified server-side.

Cloudflare Turnstile, hCaptcha and Google reCAPTCHA (v2, and v3 with its
score) all work the same way: the widget on the page puts a token into the
form, and the server POSTs `secret`, `response` (the token) and `remoteip`
to the provider's siteverify URL, which answers JSON with `success` and,
on failure, `error-codes`. reCAPTCHA v3 adds `score` (1.0 very likely a
person, 0.0 very likely a bot) and `action`.

What the layer returns (never a drop: a captcha only ever quarantines, so
an owner can still release a real customer's message):

- `captcha_missing`: the form requires a captcha and the post has no token
  (a bot that skipped the widget, or a visitor without JavaScript);
  quarantine. The provider is not asked.
- `captcha_failed`: the provider said no; the value is its error codes
  (`invalid-input-response`, `timeout-or-duplicate`, ...); quarantine.
- `captcha_low_score`: reCAPTCHA v3 answered a score under the form's
  `min_score`; quarantine.
- `captcha_unavailable`: the provider could not be asked (timeout, refused,
  HTTP error, not JSON), rejected the owner's own keys (a setup mistake, not
  the visitor's) or reported an internal error; the form's `fail` decides:
  `open` lets the post through with the reason kept for the owner to see,
  `closed` quarantines it.

The hosted form shows no captcha widget (it would load the provider's
script on Formpost's own page), so its posts are not asked for a token.

The `hostname` the providers return is not compared: each site key is
already bound to the owner's domains in the provider's dashboard, which is
where the provider refuses a widget shown elsewhere, and Formpost's origin
check already limits which pages may post. Likewise reCAPTCHA v3's `action`
name is not checked, as Formpost does not render the widget itself.

Written here with urllib rather than a provider SDK: each provider's
server-side check is one documented form POST, and no SDK covers all three.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Literal

from . import Reason, SpamContext
from .remote import Unavailable, post_json
from .settings import CaptchaSettings, SpamSettings

if TYPE_CHECKING:
    from ..services import Services

LAYER = "captcha"

VERIFY_URLS = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
}
# Where each widget puts its token. Turnstile in reCAPTCHA-compatibility
# mode and hCaptcha (always) also fill `g-recaptcha-response`.
TOKEN_FIELDS = {
    "turnstile": ("cf-turnstile-response", "g-recaptcha-response"),
    "hcaptcha": ("h-captcha-response", "g-recaptcha-response"),
    "recaptcha": ("g-recaptcha-response",),
}
# Turnstile documents tokens of at most 2048 characters; none is longer.
MAX_TOKEN = 2048
# Error codes that are not about the visitor's token: the owner's keys are
# wrong, or the provider failed inside.
NOT_THE_VISITOR = frozenset(
    {
        "missing-input-secret",
        "invalid-input-secret",
        "invalid-keys",
        "sitekey-secret-mismatch",
        "invalid-sitekey",
        "internal-error",
    }
)


def check(ctx: SpamContext, settings: SpamSettings, services: Services) -> list[Reason]:
    """Verify the post's captcha token with the form's provider, if it has one."""
    if settings.captcha is None or ctx.fill_seconds is not None:
        # Only /f/ posts from the owner's own pages carry a widget: the
        # hosted form (the one post with a fill time) shows none, and has
        # its signed form token, fill time and proof of work instead.
        return []
    return verify(ctx, settings.captcha, settings.fail)


def verify(ctx: SpamContext, captcha: CaptchaSettings, fail: str) -> list[Reason]:
    """Ask the provider about the post's token; return the reasons."""
    token = find_token(ctx, captcha.provider)
    if not token:
        return [
            _reason(
                "captcha_missing",
                "no token",
                f"{captcha.provider} required",
                "quarantine",
            )
        ]
    if len(token) > MAX_TOKEN:
        return [
            _reason(
                "captcha_failed",
                "token too long",
                f"{captcha.provider} verified",
                "quarantine",
            )
        ]
    fields = {"secret": captcha.secret, "response": token}
    if ctx.client_ip:
        fields["remoteip"] = ctx.client_ip
    if captcha.provider == "hcaptcha" and captcha.site_key:
        # hCaptcha checks the token was issued for this site key.
        fields["sitekey"] = captcha.site_key
    url = captcha.verify_url or VERIFY_URLS[captcha.provider]
    try:
        reply = post_json(
            url,
            urllib.parse.urlencode(fields).encode("ascii"),
            {"Content-Type": "application/x-www-form-urlencoded"},
            captcha.timeout,
        )
    except Unavailable as exc:
        return [_unavailable(str(exc), fail)]
    return judge(reply, captcha, fail)


def judge(
    reply: dict[str, object], captcha: CaptchaSettings, fail: str
) -> list[Reason]:
    """Turn a siteverify reply into reasons."""
    raw = reply.get("error-codes") or []
    codes = [str(c) for c in raw] if isinstance(raw, list) else [str(raw)]
    success = reply.get("success")
    if not isinstance(success, bool):
        return [_unavailable("reply without success", fail)]
    if not success:
        setup = [c for c in codes if c in NOT_THE_VISITOR]
        if setup:
            return [_unavailable(f"provider refused: {', '.join(setup)}", fail)]
        return [
            _reason(
                "captcha_failed",
                ", ".join(codes) or "no error code",
                f"{captcha.provider} verified",
                "quarantine",
            )
        ]
    score = reply.get("score")
    if captcha.provider == "recaptcha" and isinstance(score, (int, float)):
        if score < captcha.min_score:
            return [
                _reason(
                    "captcha_low_score",
                    f"{score:g}",
                    f"at least {captcha.min_score:g}",
                    "quarantine",
                )
            ]
    return []


def find_token(ctx: SpamContext, provider: str) -> str:
    """Return the provider's token from the post ('' when there is none)."""
    for name in TOKEN_FIELDS[provider]:
        value = ctx.first(name)
        if value and value.strip():
            return value.strip()
    return ""


def _unavailable(what: str, fail: str) -> Reason:
    closed = fail == "closed"
    return _reason(
        "captcha_unavailable",
        what,
        "fail closed: quarantine" if closed else "fail open: let through",
        "quarantine" if closed else "score",
    )


def _reason(
    rule: str, value: str, threshold: str, action: Literal["score", "quarantine"]
) -> Reason:
    return Reason(
        layer=LAYER, rule=rule, value=value, threshold=threshold, action=action
    )
