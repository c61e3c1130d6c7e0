"""Form definitions: the environment's `default` form and named forms from TOML.

A form is what a site posts to at /f/<id>: which recipients it may reach,
which origins may post, where it may redirect, how the subject is made, and
its spam settings. Everything is validated at start-up; errors name the form
and the key.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config import (
    MAX_ATTACHMENT_FILES,
    ConfigError,
    check_thresholds,
    parse_blocked_word,
    parse_email_domain,
    parse_host,
    parse_media_types,
    parse_network,
    parse_origin,
    parse_rate_limit,
    parse_size,
)

from .compose import header_text_problem
from .languages import TAGS, exact_locale
from .spam.settings import CaptchaSettings, SpamSettings
from .uploads import AttachmentSettings

FORM_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
FIELD_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
KEYS = {
    "recipients",
    "allowed_origins",
    "redirect_hosts",
    "subject",
    "honeypot",
    "rate_limit",
    "required",
    "language",
    *("notify", "notify_full_message", "webhooks", "autoresponse"),
    "spam",
    "attachments",
}
ATTACHMENT_KEYS = {"max_files", "max_file_size", "max_total_size", "types"}
SPAM_KEYS = {
    "fail",
    "quarantine_at",
    "drop_at",
    "proof_of_work",
    "captcha",
    "max_links",
    "blocked_words",
    "blocked_patterns",
    "blocked_email_domains",
    "blocked_networks",
    "repeat_window",
    "rspamd_quarantine_at",
    "rspamd_drop_at",
}
CAPTCHA_KEYS = {
    "provider",
    "secret",
    "secret_file",
    "site_key",
    "min_score",
    "verify_url",
    "timeout",
}
# The only keys a `[forms.default]` table may set: the default form (and the
# hosted page) is otherwise configured by the environment.
NOTIFY_KEYS = {"notify", "notify_full_message", "webhooks", "autoresponse"}
WEBHOOK_SECRET_PREFIX = "whsec_"
AUTORESPONSE_BODY_MAX = 5000


@dataclass(frozen=True)
class Webhook:
    """A webhook endpoint and the secret its deliveries are signed with."""

    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Autoresponse:
    """The fixed reply sent to a visitor (never their own text)."""

    subject: str
    body: str


@dataclass(frozen=True)
class Notify:
    """Where a form's submissions go besides the email (notifications.md).

    `apprise` holds Apprise URLs: secrets, never logged or shown.
    """

    webhooks: tuple[Webhook, ...] = ()
    apprise: tuple[str, ...] = field(default=(), repr=False)
    full_message: bool = False
    autoresponse: Autoresponse | None = None


@dataclass(frozen=True)
class FormDef:
    """One form on another site, and what it may do."""

    id: str
    recipients: tuple[str, ...]
    allowed_origins: frozenset[str] = frozenset()
    redirect_hosts: frozenset[str] = frozenset()
    subject: str = "{subject}"
    honeypot: str = "_gotcha"
    rate_limit: tuple[tuple[int, int], ...] = ()
    required: tuple[str, ...] = ()
    # A shipped locale id (zh_Hans_CN), or None: emails in English, pages
    # by ?lang= and Accept-Language only.
    language: str | None = None
    spam: SpamSettings = field(default_factory=SpamSettings)
    notify: Notify = Notify()
    # None: the form takes no files (415).
    attachments: AttachmentSettings | None = None

    def make_subject(self, visitor_subject: str, fallback: str | None = None) -> str:
        """Apply the template (with `{subject}`) or prefix to the visitor's subject.

        `fallback` stands in for an empty subject (the caller translates it).
        """
        fallback = fallback or f"New submission ({self.id})"
        if "{subject}" in self.subject:
            return self.subject.replace("{subject}", visitor_subject or fallback)
        if visitor_subject:
            return f"{self.subject} {visitor_subject}"
        return f"{self.subject} {fallback}"


def load_forms(config: Mapping[str, Any]) -> dict[str, FormDef]:
    """Return every form by id: `default` from the environment, others from TOML."""
    aliases = tuple(config["MAIL_RECIPIENTS"])
    language = config.get("FORM_LANGUAGE")
    spam_defaults = config.get("SPAM_DEFAULTS") or SpamSettings()
    forms = {
        "default": FormDef(
            id="default",
            recipients=aliases,
            allowed_origins=frozenset(config["ALLOWED_ORIGINS"]),
            redirect_hosts=frozenset(config["REDIRECT_HOSTS"]),
            rate_limit=config["RATE_LIMIT"],
            language=language,
            spam=spam_defaults,
            attachments=default_attachments(config),
        )
    }
    path = config.get("FORMS_FILE")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"FORMS_FILE {path}: {exc}") from None
        parsed = parse_forms(
            data,
            aliases,
            config["RATE_LIMIT"],
            path,
            default_language=language,
            spam_defaults=spam_defaults,
        )
        if "default" in parsed:
            # [forms.default] adds notifications to the environment's form.
            notify = parsed.pop("default").notify
            forms["default"] = replace(forms["default"], notify=notify)
        forms.update(parsed)
    return forms


def default_attachments(config: Mapping[str, Any]) -> AttachmentSettings | None:
    """The default form's files from ATTACHMENTS_*: None unless MAX_FILES > 0."""
    if not config.get("ATTACHMENTS_MAX_FILES"):
        return None
    return AttachmentSettings(
        max_files=config["ATTACHMENTS_MAX_FILES"],
        max_file_size=config["ATTACHMENTS_MAX_FILE_SIZE"],
        max_total_size=config["ATTACHMENTS_MAX_TOTAL_SIZE"],
        types=tuple(config["ATTACHMENTS_TYPES"]),
    )


def parse_attachments(where: str, value: Any) -> AttachmentSettings:
    """Check a form's `attachments = { ... }` table; unset keys take defaults."""
    where = f"{where}: attachments"
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table such as {{ max_files = 3 }}")
    unknown = set(value) - ATTACHMENT_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; "
            f"known: {sorted(ATTACHMENT_KEYS)}"
        )
    defaults = AttachmentSettings()
    files = value.get("max_files", defaults.max_files)
    if (
        not isinstance(files, int)
        or isinstance(files, bool)
        or not 1 <= files <= MAX_ATTACHMENT_FILES
    ):
        raise ConfigError(
            f"{where}.max_files must be a whole number from 1 to "
            f"{MAX_ATTACHMENT_FILES}, got {files!r}"
        )
    sizes = {}
    for key in ("max_file_size", "max_total_size"):
        raw = value.get(key)
        sizes[key] = (
            getattr(defaults, key) if raw is None else parse_size(f"{where}.{key}", raw)
        )
    if sizes["max_total_size"] < sizes["max_file_size"]:
        raise ConfigError(
            f"{where}.max_total_size must not be smaller than max_file_size"
        )
    types = value.get("types")
    if types is None:
        checked = defaults.types
    else:
        checked = parse_media_types(f"{where}.types", _strings(where, "types", types))
    return AttachmentSettings(
        max_files=files,
        max_file_size=sizes["max_file_size"],
        max_total_size=sizes["max_total_size"],
        types=checked,
    )


def parse_forms(
    data: Mapping[str, Any],
    aliases: tuple[str, ...],
    default_rate: tuple[tuple[int, int], ...],
    source: str = "FORMS_FILE",
    spam_defaults: SpamSettings | None = None,
    default_language: str | None = None,
) -> dict[str, FormDef]:
    """Validate the parsed TOML: a `[forms.<id>]` table per form.

    A form without `language` takes `default_language` (FORM_LANGUAGE).
    """
    extra = set(data) - {"forms"}
    if extra:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(extra)}")
    tables = data.get("forms", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: 'forms' must be a table of [forms.<id>]")
    result = {}
    for form_id, table in tables.items():
        where = f"{source}: form {form_id!r}"
        if not FORM_ID_RE.fullmatch(form_id):
            raise ConfigError(f"{where}: the id must be 1-64 of a-z, 0-9, '_', '-'")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        if form_id == "default" and set(table) - NOTIFY_KEYS:
            raise ConfigError(
                f"{where}: 'default' is the form configured by the environment "
                "(ALLOWED_ORIGINS, REDIRECT_HOSTS, RATE_LIMIT); here it may only "
                f"set {sorted(NOTIFY_KEYS)}; pick another id for a new form"
            )
        if form_id == "default":
            notify = parse_notify(table, where)
            result[form_id] = FormDef(id=form_id, recipients=aliases, notify=notify)
            continue
        unknown = set(table) - KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)}"
            )
        result[form_id] = _parse_form(
            form_id,
            table,
            aliases,
            default_rate,
            where,
            spam_defaults or SpamSettings(),
            default_language,
        )
    return result


def _field_name(name: str) -> bool:
    return bool(FIELD_NAME_RE.fullmatch(name)) and not header_text_problem(name)


def _strings(where: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return value


def _parse_form(
    form_id: str,
    table: Mapping[str, Any],
    aliases: tuple[str, ...],
    default_rate: tuple[tuple[int, int], ...],
    where: str,
    spam_defaults: SpamSettings,
    default_language: str | None = None,
) -> FormDef:
    recipients = _strings(where, "recipients", table.get("recipients", []))
    if not recipients:
        raise ConfigError(f"{where}: recipients must name at least one alias")
    for alias in recipients:
        if alias not in aliases:
            raise ConfigError(
                f"{where}: recipients: {alias!r} is not an alias in MAIL_RECIPIENTS "
                f"({', '.join(aliases)})"
            )
    origins = [
        parse_origin(f"{where}: allowed_origins", o)
        for o in _strings(where, "allowed_origins", table.get("allowed_origins", []))
    ]
    hosts = [
        parse_host(f"{where}: redirect_hosts", h)
        for h in _strings(where, "redirect_hosts", table.get("redirect_hosts", []))
    ]
    subject = table.get("subject", "{subject}")
    if not isinstance(subject, str) or not subject.strip():
        raise ConfigError(f"{where}: subject must be a non-empty string")
    if header_text_problem(subject) or len(subject) > 150:
        raise ConfigError(
            f"{where}: subject must be one line of plain text, at most 150 characters"
        )
    honeypot = table.get("honeypot", "_gotcha")
    if not isinstance(honeypot, str) or not _field_name(honeypot):
        raise ConfigError(f"{where}: honeypot must be a field name")
    rate = table.get("rate_limit")
    if rate is None:
        rate_limit = default_rate
    elif isinstance(rate, str):
        rate_limit = parse_rate_limit(f"{where}: rate_limit", rate)
    else:
        raise ConfigError(f"{where}: rate_limit must be a string like '5/minute'")
    required = _strings(where, "required", table.get("required", []))
    for name in required:
        if not _field_name(name):
            raise ConfigError(f"{where}: required: {name!r} is not a field name")
    language = default_language
    if "language" in table:
        tag = table["language"]
        language = exact_locale(tag) if isinstance(tag, str) else None
        if language is None:
            raise ConfigError(
                f"{where}: language must be one of {', '.join(TAGS)}, not {tag!r}"
            )
    notify = parse_notify(table, where)
    files = table.get("attachments")
    attachments = None if files is None else parse_attachments(where, files)
    return FormDef(
        id=form_id,
        recipients=tuple(recipients),
        allowed_origins=frozenset(origins),
        redirect_hosts=frozenset(hosts),
        subject=subject.strip(),
        honeypot=honeypot,
        rate_limit=rate_limit,
        required=tuple(required),
        language=language,
        spam=parse_spam(table.get("spam", {}), spam_defaults, f"{where}: spam"),
        notify=notify,
        attachments=attachments,
    )


def parse_spam(table: Any, defaults: SpamSettings, where: str) -> SpamSettings:
    """Apply a `[forms.<id>.spam]` table over the environment's defaults."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(table) - SPAM_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(SPAM_KEYS)}"
        )
    changes: dict[str, Any] = {}
    if "fail" in table:
        changes["fail"] = _choice(where, "fail", table["fail"], ("open", "closed"))
    if "proof_of_work" in table:
        changes["proof_of_work"] = _choice(
            where, "proof_of_work", table["proof_of_work"], ("off", "score", "required")
        )
    for key, low, high in (
        ("quarantine_at", 0.1, 1000.0),
        ("drop_at", 0.1, 1000.0),
        ("repeat_window", 0.0, 30 * 86400.0),
        ("rspamd_quarantine_at", -1000.0, 1000.0),
        ("rspamd_drop_at", -1000.0, 1000.0),
    ):
        if key in table:
            changes[key] = _number(where, key, table[key], low, high)
    if "max_links" in table:
        value = table["max_links"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (0 <= value <= 1000)
        ):
            raise ConfigError(f"{where}: max_links must be a whole number 0-1000")
        changes["max_links"] = value
    if "blocked_words" in table:
        changes["blocked_words"] = tuple(
            parse_blocked_word(f"{where}: blocked_words", w)
            for w in _strings(where, "blocked_words", table["blocked_words"])
        )
    if "blocked_patterns" in table:
        changes["blocked_patterns"] = tuple(
            _pattern(where, p)
            for p in _strings(where, "blocked_patterns", table["blocked_patterns"])
        )
    if "blocked_email_domains" in table:
        changes["blocked_email_domains"] = tuple(
            parse_email_domain(f"{where}: blocked_email_domains", d)
            for d in _strings(
                where, "blocked_email_domains", table["blocked_email_domains"]
            )
        )
    if "blocked_networks" in table:
        changes["blocked_networks"] = tuple(
            parse_network(f"{where}: blocked_networks", n)
            for n in _strings(where, "blocked_networks", table["blocked_networks"])
        )
    if "captcha" in table:
        changes["captcha"] = _captcha(table["captcha"], f"{where}: captcha")
    settings = replace(defaults, **changes)
    check_thresholds(where, where, settings)
    return settings


def _choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)}")
    return value


def _number(where: str, key: str, value: Any, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ConfigError(f"{where}: {key} must be a number from {low:g} to {high:g}")
    return float(value)


def _pattern(where: str, text: str) -> re.Pattern[str]:
    if not text or len(text) > 500:
        raise ConfigError(f"{where}: blocked_patterns: each must be 1-500 characters")
    try:
        # Case-insensitive, as blocked words are: owners write "casino".
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(
            f"{where}: blocked_patterns: {text!r} is not a regular expression: {exc}"
        ) from None


def _captcha(table: Any, where: str) -> CaptchaSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table like {{ provider = ..., ... }}")
    unknown = set(table) - CAPTCHA_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(CAPTCHA_KEYS)}"
        )
    provider = _choice(
        where, "provider", table.get("provider"), ("turnstile", "hcaptcha", "recaptcha")
    )
    secret = _captcha_secret(table, where)
    site_key = table.get("site_key", "")
    if not isinstance(site_key, str) or not _token_text(site_key, allow_empty=True):
        raise ConfigError(f"{where}: site_key must be the provider's site key")
    min_score = _number(where, "min_score", table.get("min_score", 0.5), 0.0, 1.0)
    timeout = _number(where, "timeout", table.get("timeout", 5.0), 0.1, 60.0)
    verify_url = table.get("verify_url")
    if verify_url is not None:
        if not isinstance(verify_url, str) or not re.fullmatch(
            r"https?://[^\s/?#]+(/[^\s?#]*)?", verify_url
        ):
            raise ConfigError(f"{where}: verify_url must be an http(s) URL")
    return CaptchaSettings(
        provider=provider,
        secret=secret,
        site_key=site_key,
        min_score=min_score,
        verify_url=verify_url,
        timeout=timeout,
    )


def _captcha_secret(table: Mapping[str, Any], where: str) -> str:
    literal, path = table.get("secret"), table.get("secret_file")
    if literal is not None and path is not None:
        raise ConfigError(f"{where}: set secret or secret_file, not both")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}: secret_file must name a file")
        try:
            literal = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            # The path only, never the contents.
            raise ConfigError(f"{where}: secret_file {path!r} cannot be read") from None
    if not isinstance(literal, str) or not _token_text(literal):
        raise ConfigError(
            f"{where}: secret (or secret_file) must hold the provider's secret key"
        )
    return literal


def _token_text(value: str, allow_empty: bool = False) -> bool:
    # Keys are printable ASCII without blanks; they go into a form body.
    if not value:
        return allow_empty
    return len(value) <= 512 and bool(re.fullmatch(r"[\x21-\x7e]+", value))


def parse_notify(table: Mapping[str, Any], where: str) -> Notify:
    """Read a form's notify, notify_full_message, webhooks and autoresponse.

    Errors name the form and the key, never an Apprise URL or a secret.
    """
    notify = _strings(where, "notify", table.get("notify", ["email"]))
    if "email" not in notify:
        raise ConfigError(
            f'{where}: notify must include "email": every submission is emailed; '
            "other channels are added to it"
        )
    secrets_table = table.get("webhooks", {})
    if not isinstance(secrets_table, dict):
        raise ConfigError(f"{where}: webhooks must be a table of URL = {{ secret }}")
    webhooks: list[Webhook] = []
    apprise: list[str] = []
    for n, item in enumerate(notify):
        at = f"{where}: notify[{n}]"
        kind, _, value = item.partition(":")
        if item == "email":
            continue
        if kind == "webhook":
            url = _webhook_url(at, value)
            secret = _webhook_secret(where, url, secrets_table.get(url))
            webhooks.append(Webhook(url, secret))
        elif kind == "apprise":
            apprise.append(_apprise_url(at, value))
        elif kind == "apprise_file":
            apprise += [_apprise_url(at, url) for url in _apprise_file(at, value)]
        else:
            raise ConfigError(
                f'{at}: must be "email", "webhook:<url>", "apprise:<url>" '
                'or "apprise_file:<path>"'
            )
    unused = set(secrets_table) - {w.url for w in webhooks}
    if unused:
        raise ConfigError(
            f"{where}: webhooks: {sorted(unused)} not listed in notify as webhook:<url>"
        )
    if len({w.url for w in webhooks}) < len(webhooks) or len(set(apprise)) < len(
        apprise
    ):
        raise ConfigError(f"{where}: notify lists a channel twice")
    full = table.get("notify_full_message", False)
    if not isinstance(full, bool):
        raise ConfigError(f"{where}: notify_full_message must be true or false")
    return Notify(
        webhooks=tuple(webhooks),
        apprise=tuple(apprise),
        full_message=full,
        autoresponse=_autoresponse(where, table.get("autoresponse")),
    )


def _webhook_url(at: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{at}: a webhook needs an http(s) URL with a host")
    if parts.username or parts.password or parts.fragment:
        raise ConfigError(f"{at}: a webhook URL may not hold a user, password or #")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ConfigError(f"{at}: a webhook URL may not hold spaces or controls")
    return url


def _webhook_secret(where: str, url: str, entry: Any) -> str:
    at = f"{where}: webhooks.{url!r}"
    if not isinstance(entry, dict) or set(entry) not in ({"secret"}, {"secret_file"}):
        raise ConfigError(
            f"{at}: every webhook needs a table with secret or secret_file "
            '(one of them), e.g. secret = "whsec_..."'
        )
    if "secret_file" in entry:
        path = entry["secret_file"]
        if not isinstance(path, str):
            raise ConfigError(f"{at}: secret_file must be a path")
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{at}: secret_file cannot be read: {exc}") from None
    else:
        secret = entry["secret"]
        if not isinstance(secret, str):
            raise ConfigError(f"{at}: secret must be a string")
    # The Standard Webhooks format: whsec_ and base64 of 24 to 64 random bytes.
    raw = secret.removeprefix(WEBHOOK_SECRET_PREFIX).rstrip("=")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX) or not 24 <= len(key) <= 64:
        raise ConfigError(
            f"{at}: the secret must be whsec_ followed by base64 of 24-64 random "
            'bytes; make one with: python3 -c "import base64, secrets; '
            "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\""
        )
    return secret


def _apprise_url(at: str, url: str) -> str:
    # Imported here: only forms with Apprise channels pay for loading it.
    import apprise

    url = url.strip()
    scheme = url.partition("://")[0] if "://" in url else ""
    if not scheme or not apprise.Apprise().add(url):
        # Never the URL itself: it holds tokens.
        raise ConfigError(
            f"{at}: not an Apprise URL Formpost can use (scheme {scheme[:20]!r})"
        )
    return url


def _apprise_file(at: str, path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{at}: the Apprise file cannot be read: {exc}") from None
    urls = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    if not urls:
        raise ConfigError(f"{at}: the Apprise file holds no URL")
    return urls


def _autoresponse(where: str, table: Any) -> Autoresponse | None:
    if table is None:
        return None
    at = f"{where}: autoresponse"
    if not isinstance(table, dict) or set(table) != {"subject", "body"}:
        raise ConfigError(f"{at}: must be a table with subject and body (only)")
    subject, body = table["subject"], table["body"]
    if not isinstance(subject, str) or not subject.strip():
        raise ConfigError(f"{at}: subject must be a non-empty string")
    if header_text_problem(subject) or len(subject) > 150:
        raise ConfigError(
            f"{at}: subject must be one line of plain text, at most 150 characters"
        )
    if not isinstance(body, str) or not body.strip():
        raise ConfigError(f"{at}: body must be a non-empty string")
    if len(body) > AUTORESPONSE_BODY_MAX:
        raise ConfigError(
            f"{at}: body must be at most {AUTORESPONSE_BODY_MAX} characters"
        )
    return Autoresponse(subject.strip(), body)
