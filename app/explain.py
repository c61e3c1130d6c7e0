"""`flask --app wsgi explain FORM --origin O --ip I [--file POST]`: why a post fares so.

The owner's answer to "why did this form not reach me?". A post (from a
file, or an empty one) goes through every gate a live post to `/f/<form>`
meets, in the same order: the origin, the fields, dedupe, the limits and
each spam layer. Nothing is stored, sent or taken: the limits and dedupe
are read, never charged (Ledger.preview), and the spam layers run on a
post that is never enqueued. Every layer runs, the remote ones (captcha,
rspamd) too, even where a live post would have skipped them after an
earlier `drop`.

The file is read as:

- JSON when it starts with `{` (one object, as a JSON post);
- `name=value` lines when it has more than one line (the value is the rest
  of the line, as typed; no percent-decoding; blank lines and lines starting
  with `#` are skipped; a value continues on lines starting with a space);
- otherwise a urlencoded body (`a=1&b=2`), as browsers post.

`--format` forces one. Exit status 0: the post would be delivered; 1: it
would be refused, quarantined or dropped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import IO

import click
from flask import current_app
from flask.cli import with_appcontext

from .accept import Post, compose_post, content_fingerprint
from .errors import Rejected
from .fieldmap import collect, interpret
from .formdefs import FormDef
from .postbody import parse_body
from .services import Services, services
from .spam import Reason, Verdict, altcha, decide
from .spam.gate import LAYERS, REMOTE
from .spam.settings import SpamSettings
from .urls import normalize_origin

FORMATS = ("auto", "urlencoded", "lines", "json")
# Layers that would change something when they run (a proof of work is
# spent), replaced by their side-effect-free twin.
PREVIEWS = {"altcha": altcha.check_without_spending}


@dataclass
class Gate:
    """One gate's answer: its name, whether the post passes, and what it saw."""

    name: str
    ok: bool
    lines: list[str] = field(default_factory=list)


@dataclass
class Explanation:
    """Every gate's answer, the spam verdict, the outcome and the advice."""

    gates: list[Gate] = field(default_factory=list)
    verdict: Verdict | None = None
    outcome: str = ""
    delivered: bool = False
    advice: list[str] = field(default_factory=list)
    thresholds: str = ""

    def text(self) -> str:
        """Return the explanation as the command prints it."""
        out = []
        for gate in self.gates:
            mark = "ok  " if gate.ok else "NO  "
            first, *rest = gate.lines or [""]
            out.append(f"{mark}{gate.name:<8} {first}".rstrip())
            out.extend(f"{'':13}{line}" for line in rest)
        if self.verdict is not None:
            out.append("")
            out.append(f"verdict  {describe(self.verdict)}{self.thresholds}")
            for reason in self.verdict.reasons:
                out.append(f"         - {reason_text(reason)}")
        out.append("")
        out.append(f"outcome  {self.outcome}")
        if self.advice:
            out.append("")
            out.append("to change it:")
            out.extend(f"  - {line}" for line in self.advice)
        return "\n".join(out)


def read_post(raw: bytes, fmt: str = "auto") -> list[tuple[str, str]]:
    """Read a post from a file's bytes; raise Rejected or click.BadParameter."""
    if fmt == "auto":
        text = raw.decode("utf-8", errors="replace").strip()
        if text.startswith("{"):
            fmt = "json"
        elif "\n" in text:
            fmt = "lines"
        else:
            fmt = "urlencoded"
    if fmt == "lines":
        return _lines(raw)
    return parse_body(raw.strip(), fmt)


def _lines(raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise click.BadParameter("the file is not UTF-8 text") from None
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if pairs and line.startswith((" ", "\t")) and line.strip():
            # A continuation: the previous value goes on, on a new line.
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value}\n{line.strip()}")
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if not eq or not name.strip():
            raise click.BadParameter(f"line {number} is not name=value")
        pairs.append((name.strip(), value.strip()))
    return pairs


def explain(
    svc: Services,
    form: FormDef,
    origin: str | None,
    client_ip: str | None,
    pairs: list[tuple[str, str]],
) -> Explanation:
    """Run the post through every gate without storing or sending anything."""
    result = Explanation()
    refused = ""
    where = settings_place(form)

    # 1. The origin.
    if origin is not None and origin in form.allowed_origins:
        result.gates.append(Gate("origin", True, [f"{origin} is allowed"]))
    else:
        shown = origin or "no Origin or Referer"
        result.gates.append(
            Gate(
                "origin",
                False,
                [f"{shown} is not among the form's allowed origins (403)"],
            )
        )
        refused = refused or "refused with 403: the origin may not post to this form"
        if origin is not None:
            key = (
                "ALLOWED_ORIGINS"
                if form.id == "default"
                else f"allowed_origins in [forms.{form.id}]"
            )
            result.advice.append(f"add {origin} to {key}")

    # 2. The fields.
    fields = collect(pairs)
    try:
        found = interpret(fields, form, svc.recipients)
    except Rejected as exc:
        problems = [f"{name}: {message}" for name, message in exc.errors.items()]
        result.gates.append(
            Gate("fields", False, [f"refused ({exc.status})"] + problems)
        )
        result.outcome = (
            refused or f"refused with {exc.status}: the fields are not usable"
        )
        result.advice.append("correct the fields above (the visitor sees the same)")
        result.gates.append(Gate("spam", True, ["not reached"]))
        return result
    lines = [
        f"to {found.recipient}"
        + (f", copy to {', '.join(found.cc)}" if found.cc else "")
    ]
    if found.honeypot:
        lines.append("a honeypot field is filled")
    else:
        count = len(found.fields)
        lines.append(
            f"reply-to {found.reply_to or '(none)'}; "
            f"{count} field{'s' if count != 1 else ''} in the mail"
        )
    result.gates.append(Gate("fields", True, lines))

    limits = svc.limits(form.rate_limit)
    post = Post(
        form_id=form.id,
        recipient=found.recipient,
        subject=form.make_subject(found.subject)[:200],
        message=found.message,
        name=found.name,
        email=found.reply_to,
        fields=tuple(found.fields),
        cc=tuple(found.cc),
        client_ip=client_ip,
        limits=limits,
        origin=origin,
        pairs=tuple(fields),
        honeypot_filled=found.honeypot,
    )

    # 3. Dedupe and 4. the limits: read, never charged.
    checks, first = svc.ledger.preview(
        form_id=form.id,
        alias=found.recipient,
        client_ip=client_ip,
        limits=limits,
        fingerprint=content_fingerprint(post) if limits.dedupe_window else None,
    )
    if first is not None:
        result.gates.append(
            Gate(
                "dedupe",
                False,
                [
                    f"repeats {first} (the same content from this client within "
                    f"{limits.dedupe_window:g} s): the visitor gets its receipt, "
                    "nothing new is stored"
                ],
            )
        )
        refused = refused or f"answered with {first}'s receipt; nothing new stored"
    else:
        window = (
            f"within {limits.dedupe_window:g} s" if limits.dedupe_window else "(off)"
        )
        result.gates.append(Gate("dedupe", True, [f"no earlier copy {window}"]))
    if not checks:
        result.gates.append(Gate("limits", True, ["none apply"]))
    else:
        over = [c for c in checks if not c.ok]
        result.gates.append(
            Gate(
                "limits",
                not over,
                [f"{c.name}: {c.detail}" for c in checks],
            )
        )
        if over:
            status = 503 if over[0].name == "backlog" else 429
            refused = refused or f"refused with {status}: {over[0].name}"

    # 5. Each spam layer, all of them.
    settings = svc.spam_settings(form.id)
    message = compose_post(svc, post)
    ctx = post.spam_context(message.data)
    reasons: list[Reason] = []
    spam_lines = []
    for name, check in LAYERS:
        # A proof of work is judged as a live post would be, but not spent.
        check = PREVIEWS.get(name, check)
        found_reasons = check(ctx, settings, svc)
        reasons.extend(found_reasons)
        note = " (remote; a live post skips it after a drop)" if name in REMOTE else ""
        off = _layer_off(name, settings)
        if off:
            spam_lines.append(f"{name}: off ({off})")
        elif not found_reasons:
            spam_lines.append(f"{name}: nothing found{note}")
        for reason in found_reasons:
            spam_lines.append(f"{name}: {reason_text(reason)}{note}")
    verdict = decide(reasons, settings.quarantine_at, settings.drop_at)
    result.verdict = verdict
    result.thresholds = (
        f"; quarantine at {settings.quarantine_at:g}, drop at {settings.drop_at:g}"
    )
    result.gates.append(Gate("spam", verdict.name == "accept", spam_lines))
    for reason in verdict.reasons:
        tip = advice(reason, form, where)
        if tip and tip not in result.advice:
            result.advice.append(tip)
    if verdict.name != "accept" and not any(
        r.action != "score" for r in verdict.reasons
    ):
        result.advice.append(
            f"or raise quarantine_at above {verdict.score:g} in {where}"
        )

    if refused:
        result.outcome = refused
    elif verdict.name == "accept":
        result.outcome = "stored and delivered (accept)"
        result.delivered = True
    elif verdict.name == "quarantine":
        result.outcome = (
            "the visitor sees success; stored as spam, not delivered until "
            "released (outbox release ID, or the console)"
        )
    else:
        result.outcome = (
            "the visitor sees success; stored as dropped (hidden), not delivered "
            "unless released"
        )
    return result


def _layer_off(name: str, settings: SpamSettings) -> str:
    """Say why a layer does not apply to this form ('' when it does)."""
    if name == "captcha" and settings.captcha is None:
        return "no captcha in the form's spam settings"
    if name == "rspamd" and not current_app.config.get("RSPAMD_URL"):
        return "RSPAMD_URL is not set"
    if name == "altcha" and settings.proof_of_work == "off":
        return "proof_of_work is off"
    return ""


def describe(verdict: Verdict) -> str:
    """Return a verdict's one-line summary."""
    return f"{verdict.name} (score {verdict.score:g})"


def reason_text(reason: Reason) -> str:
    """Return a reason as one line: rule, value, threshold, weight."""
    weight = (
        f"score {reason.score:g}"
        if reason.action == "score"
        else f"{reason.action}" + (f", score {reason.score:g}" if reason.score else "")
    )
    parts = [reason.rule]
    if reason.value:
        parts.append(reason.value)
    text = " ".join(parts)
    if reason.threshold:
        text += f" ({reason.threshold})"
    return f"{text}: {weight}"


def settings_place(form: FormDef) -> str:
    """Where an owner changes a form's spam settings."""
    if form.id == "default":
        return "the environment (SPAM_*)"
    return f"[forms.{form.id}.spam]"


def advice(reason: Reason, form: FormDef, where: str) -> str:
    """Return what the owner can change about one reason ('' for none)."""
    rule, value = reason.rule, reason.value
    env = form.id == "default"
    if rule == "links":
        count = value.split()[0] if value else "more"
        key = "SPAM_MAX_LINKS" if env else "max_links"
        return f"raise {key} to {count} in {where}"
    if rule == "blocked_word":
        key = "SPAM_BLOCKED_WORDS" if env else "blocked_words"
        return f"remove {value!r} from {key} in {where}"
    if rule == "blocked_pattern":
        return f"change or remove the pattern {value!r} in blocked_patterns ({where})"
    if rule == "blocked_email_domain":
        key = "SPAM_BLOCKED_EMAIL_DOMAINS" if env else "blocked_email_domains"
        return f"remove {reason.threshold!r} from {key} in {where}"
    if rule == "blocked_network":
        key = "SPAM_BLOCKED_NETWORKS" if env else "blocked_networks"
        return f"remove {reason.threshold} from {key} in {where}"
    if rule == "repeated_body":
        key = "SPAM_REPEAT_WINDOW" if env else "repeat_window"
        return f"set {key} = 0 in {where} to stop counting repeated bodies"
    if rule == "honeypot":
        return (
            f"the honeypot field ({form.honeypot}, _gotcha, _honey, botcheck) must "
            'stay empty: hide it from people, with autocomplete="off"'
        )
    if rule == "fill_time":
        return "lower MIN_FILL_SECONDS (the hosted form's minimum)"
    if rule.endswith("_unavailable"):
        return (
            f"{reason.layer} could not be asked ({value}); check it, or set "
            f'fail = "open" in {where}'
        )
    if rule == "captcha_missing":
        return "put the captcha widget in the form (docs/forms.md#captchas-and-rspamd)"
    if rule == "captcha_low_score":
        return f"lower min_score in the captcha settings of {where}"
    if rule == "rspamd_score":
        key = "SPAM_RSPAMD_QUARANTINE_AT" if env else "rspamd_quarantine_at"
        return (
            f"raise {key} above the score in {where}, or change the rspamd rules named"
        )
    if rule.startswith("altcha_"):
        key = "SPAM_PROOF_OF_WORK" if env else "proof_of_work"
        if rule == "altcha_missing":
            return (
                "put the proof-of-work script and element in the form "
                f"(docs/forms.md#proof-of-work-altcha), or set {key} in {where}"
            )
        return (
            f"a live page's proof comes fresh from /f/{form.id}/challenge; "
            f"a saved post's has expired or been spent (or set {key} in {where})"
        )
    return f"see docs/spam.md for the rule {rule}"


@click.command("explain")
@with_appcontext
@click.argument("form_id")
@click.option(
    "--origin",
    required=True,
    help="The posting page's origin, e.g. https://www.example.com.",
)
@click.option("--ip", "ip", required=True, help="The visitor's IP address.")
@click.option(
    "--file",
    "post_file",
    type=click.File("rb"),
    help=(
        "The post: a JSON object, name=value lines, or a urlencoded body "
        "(a=1&b=2); '-' reads standard input. Without it: an empty post."
    ),
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="How to read --file: auto is JSON if it starts with '{', lines if "
    "it has several lines, urlencoded otherwise.",
)
def explain_command(
    form_id: str, origin: str, ip: str, post_file: IO[bytes] | None, fmt: str
) -> None:
    """Run a post through every gate of FORM; store, send and take nothing.

    Prints each gate's answer (origin, fields, dedupe, limits, each spam
    layer), the verdict with its reasons and what to change. Exit status 0
    when the post would be delivered, 1 otherwise.
    """
    svc = services()
    form = svc.forms.get(form_id)
    if form is None:
        known = ", ".join(sorted(svc.forms))
        raise click.BadParameter(f"no form {form_id!r} (forms: {known})")
    try:
        canonical = normalize_origin(origin)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--origin") from None
    try:
        address = str(ipaddress.ip_address(ip.strip().strip("[]")))
    except ValueError:
        raise click.BadParameter(
            f"{ip!r} is not an IP address", param_hint="--ip"
        ) from None
    raw = (
        post_file.read(current_app.config["MAX_CONTENT_LENGTH"] + 1)
        if post_file
        else b""
    )
    if len(raw) > current_app.config["MAX_CONTENT_LENGTH"]:
        raise click.BadParameter("larger than MAX_CONTENT_LENGTH", param_hint="--file")
    try:
        pairs = read_post(raw, fmt) if raw.strip() else []
    except Rejected as exc:
        message = "; ".join(exc.errors.values())
        raise click.BadParameter(message, param_hint="--file") from None
    result = explain(svc, form, canonical, address, pairs)
    click.echo(result.text())
    raise SystemExit(0 if result.delivered else 1)
