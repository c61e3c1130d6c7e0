"""Form definitions: the environment's `default` form and named forms from TOML.

A form is what a site posts to at /f/<id>: which recipients it may reach,
which origins may post, where it may redirect, how the subject is made, and
its spam settings. Everything is validated at start-up; errors name the form
and the key.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config import ConfigError, parse_host, parse_origin, parse_rate_limit

from .compose import header_text_problem

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
    *("notify", "notify_full_message", "webhooks", "autoresponse"),
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
    notify: Notify = Notify()

    def make_subject(self, visitor_subject: str) -> str:
        """Apply the template (with `{subject}`) or prefix to the visitor's subject."""
        fallback = f"New submission ({self.id})"
        if "{subject}" in self.subject:
            return self.subject.replace("{subject}", visitor_subject or fallback)
        if visitor_subject:
            return f"{self.subject} {visitor_subject}"
        return f"{self.subject} {fallback}"


def load_forms(config: Mapping[str, Any]) -> dict[str, FormDef]:
    """Return every form by id: `default` from the environment, others from TOML."""
    aliases = tuple(config["MAIL_RECIPIENTS"])
    forms = {
        "default": FormDef(
            id="default",
            recipients=aliases,
            allowed_origins=frozenset(config["ALLOWED_ORIGINS"]),
            redirect_hosts=frozenset(config["REDIRECT_HOSTS"]),
            rate_limit=config["RATE_LIMIT"],
        )
    }
    path = config.get("FORMS_FILE")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"FORMS_FILE {path}: {exc}") from None
        parsed = parse_forms(data, aliases, config["RATE_LIMIT"], path)
        if "default" in parsed:
            # [forms.default] adds notifications to the environment's form.
            notify = parsed.pop("default").notify
            forms["default"] = replace(forms["default"], notify=notify)
        forms.update(parsed)
    return forms


def parse_forms(
    data: Mapping[str, Any],
    aliases: tuple[str, ...],
    default_rate: tuple[tuple[int, int], ...],
    source: str = "FORMS_FILE",
) -> dict[str, FormDef]:
    """Validate the parsed TOML: a `[forms.<id>]` table per form."""
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
        result[form_id] = _parse_form(form_id, table, aliases, default_rate, where)
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
    notify = parse_notify(table, where)
    return FormDef(
        id=form_id,
        recipients=tuple(recipients),
        allowed_origins=frozenset(origins),
        redirect_hosts=frozenset(hosts),
        subject=subject.strip(),
        honeypot=honeypot,
        rate_limit=rate_limit,
        required=tuple(required),
        notify=notify,
    )


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
