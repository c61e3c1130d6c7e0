"""Formpost configuration: read the environment (or a `.env` file) strictly.

Every setting is parsed here and nowhere else. A bad value raises `ConfigError`
naming the variable, so the service refuses to start instead of limping along.
`load_config()` is called by `create_app()`; nothing here runs at import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from pathlib import Path
from typing import Any

from dotenv import dotenv_values, find_dotenv, load_dotenv
from email_validator import EmailNotValidError, validate_email

from app.languages import TAGS, exact_locale
from app.message import header_text_problem
from app.spam.settings import SpamSettings
from app.urls import is_loopback, normalize_host, normalize_origin

# MAIL_FROM: a display name (anything, as written) before one <address>.
_NAME_ADDR = re.compile(r"(?P<name>.*?)\s*<(?P<addr>[^<>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')

SECURITY_MODES = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
DEV_MAIL_FROM = "Formpost (development) <formpost@example.com>"
DEV_RECIPIENTS = "demo=demo@example.com"
ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# ASCII digits only: int() and float() would also take "5_87" or "٥٨٧".
_INTEGER_RE = re.compile(r"-?[0-9]+")
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?|-?\.[0-9]+")
DEFAULT_RATE_LIMIT = "5/minute;50/day"
RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
RATE_RE = re.compile(r"^\s*([0-9]+)\s*(?:/|per)\s*([0-9]*)\s*([a-z]+?)s?\s*$")
TRUE_WORDS = {"true", "1", "yes"}
# Seconds to wait for PostgreSQL to answer a connection (added to DATABASE_URL
# as connect_timeout unless it names one).
DB_CONNECT_TIMEOUT = 5
_HOST_RE = re.compile(r"[A-Za-z0-9._:%-]+")
FALSE_WORDS = {"false", "0", "no"}
# Attachment sizes: binary units, as file managers show them (10MB = 10 MiB).
SIZE_UNITS = {"kb": 1024, "mb": 1024 * 1024}
SIZE_RE = re.compile(r"^\s*([0-9]+)\s*(kB|KB|kb|MB|mb|KiB|MiB)\s*$")
MAX_ATTACHMENT_SIZE = 100 * 1024 * 1024
MAX_ATTACHMENT_FILES = 20
DEFAULT_ATTACHMENT_TYPES = ("application/pdf", "image/png", "image/jpeg", "text/plain")
MEDIA_TOP = {"application", "audio", "font", "image", "model", "text", "video"}
_MEDIA_TYPE_RE = re.compile(r"^([a-z]+)/(\*|[a-z0-9][a-z0-9.+-]{0,99})$")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Recipient:
    """One allowed destination: the alias visitors pick and the real address."""

    alias: str
    address: Address


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse settings into a Flask config mapping.

    With `environ` None, read `.env` (or the file named by `FORMPOST_ENV_FILE`)
    into the process environment first, then use `os.environ`. Tests pass a
    mapping, so neither a developer's `.env` nor their shell leaks in.
    """
    if environ is None:
        env_file = _env_file()
        if env_file:
            load_dotenv(env_file, override=False)
        environ = os.environ
    env = _Env(environ)

    cfg: dict[str, Any] = {}
    smtp_host = env.text("SMTP_HOST")
    security = env.choice("SMTP_SECURITY", SECURITY_MODES, "starttls")
    cfg["SMTP_HOST"] = smtp_host
    cfg["SMTP_SECURITY"] = security
    cfg["SMTP_PORT"] = env.integer("SMTP_PORT", DEFAULT_PORTS[security], 1, 65535)
    cfg["SMTP_TIMEOUT"] = env.number("SMTP_TIMEOUT", 30.0, 0.1, 3600.0)
    cfg["SMTP_USERNAME"] = env.text("SMTP_USERNAME")
    cfg["SMTP_PASSWORD"] = _password(env)
    cfg["SMTP_CA_FILE"] = _ca_file(env)
    if cfg["SMTP_PASSWORD"] and not cfg["SMTP_USERNAME"]:
        raise ConfigError("SMTP_PASSWORD is set but SMTP_USERNAME is not")
    if smtp_host and security == "none" and cfg["SMTP_USERNAME"]:
        if not is_loopback(smtp_host):
            raise ConfigError(
                "SMTP_SECURITY=none sends SMTP_PASSWORD in clear text; it is only "
                f"allowed for a loopback relay, not {smtp_host!r}. Use starttls or tls."
            )

    # Development mode is "no relay configured": mail goes to a local Maildir
    # and the demo defaults below apply. With a relay, nothing is defaulted.
    development = not smtp_host
    cfg["DEVELOPMENT"] = development
    cfg["MAIL_FROM"] = parse_mail_from(
        env.text("MAIL_FROM") or (DEV_MAIL_FROM if development else None)
    )
    raw_recipients = env.text("MAIL_RECIPIENTS") or (
        DEV_RECIPIENTS if development else None
    )
    cfg["MAIL_RECIPIENTS"] = parse_recipients(raw_recipients)

    secret = _secret_key(env)
    if not secret and not development:
        raise ConfigError(
            "SECRET_KEY (or SECRET_KEY_FILE) is required when SMTP_HOST is set; "
            "generate one with: "
            'python3 -c "import secrets; print(secrets.token_hex(32))"'
        )
    if secret and len(secret) < 16:
        raise ConfigError("SECRET_KEY is too short: use at least 16 characters")
    # None in development: create_app() then keeps a random key in the instance
    # folder. No key is ever shipped in the code.
    cfg["SECRET_KEY"] = secret
    instance = env.text("INSTANCE_PATH")
    cfg["INSTANCE_PATH"] = os.path.abspath(instance) if instance else None

    cfg["DATABASE_URL"] = _database_url(env)
    cfg["OUTBOX_RETRY_BASE"] = env.number("OUTBOX_RETRY_BASE", 60.0, 0.01, 86400.0)
    cfg["OUTBOX_RETRY_MAX"] = env.number("OUTBOX_RETRY_MAX", 3600.0, 0.01, 7 * 86400.0)
    if cfg["OUTBOX_RETRY_MAX"] < cfg["OUTBOX_RETRY_BASE"]:
        raise ConfigError("OUTBOX_RETRY_MAX must not be smaller than OUTBOX_RETRY_BASE")
    cfg["OUTBOX_GIVE_UP_AFTER"] = env.number(
        "OUTBOX_GIVE_UP_AFTER", 432_000.0, 1.0, 90 * 86400.0
    )
    cfg["OUTBOX_LEASE"] = env.number("OUTBOX_LEASE", 300.0, 1.0, 86400.0)
    if cfg["OUTBOX_LEASE"] <= cfg["SMTP_TIMEOUT"]:
        raise ConfigError(
            f"OUTBOX_LEASE ({cfg['OUTBOX_LEASE']:g} s) must be longer than "
            f"SMTP_TIMEOUT ({cfg['SMTP_TIMEOUT']:g} s): a send attempt must end "
            "before another worker may take the message over"
        )
    # Unset: 10 s, or half the lease when that is shorter (a short lease
    # must not make a webhook-free setup fail to start).
    cfg["WEBHOOK_TIMEOUT"] = env.number(
        "WEBHOOK_TIMEOUT", min(10.0, cfg["OUTBOX_LEASE"] / 2), 0.1, 300.0
    )
    if cfg["OUTBOX_LEASE"] <= cfg["WEBHOOK_TIMEOUT"]:
        raise ConfigError(
            f"OUTBOX_LEASE ({cfg['OUTBOX_LEASE']:g} s) must be longer than "
            f"WEBHOOK_TIMEOUT ({cfg['WEBHOOK_TIMEOUT']:g} s)"
        )
    cfg["WEBHOOK_ALLOW_PRIVATE"] = env.boolean("WEBHOOK_ALLOW_PRIVATE", False)
    public_url = env.text("PUBLIC_URL")
    cfg["PUBLIC_URL"] = parse_origin("PUBLIC_URL", public_url) if public_url else None
    cfg["OUTBOX_POLL_INTERVAL"] = env.number("OUTBOX_POLL_INTERVAL", 1.0, 0.01, 60.0)
    cfg["OUTBOX_BATCH"] = env.integer("OUTBOX_BATCH", 20, 1, 1000)
    cfg["OUTBOX_NICE"] = env.integer("OUTBOX_NICE", 10, 0, 19)
    cfg["RETENTION_DAYS"] = env.integer("RETENTION_DAYS", 0, 0, 36_500)
    cfg["READY_RELAY_FAILING_AFTER"] = env.number(
        "READY_RELAY_FAILING_AFTER", 900.0, 1.0, 30 * 86400.0
    )
    cfg["MAX_CONTENT_LENGTH"] = env.integer(
        "MAX_CONTENT_LENGTH", 64 * 1024, 1024, 2**30
    )
    cfg.update(_attachments(env))
    cfg["TRUSTED_PROXY_HOPS"] = env.integer("TRUSTED_PROXY_HOPS", 0, 0, 10)
    cfg["FRAME_ANCESTORS"] = [
        parse_origin("FRAME_ANCESTORS", o) for o in env.items("FRAME_ANCESTORS")
    ]
    cfg["ALLOWED_ORIGINS"] = [
        parse_origin("ALLOWED_ORIGINS", o) for o in env.items("ALLOWED_ORIGINS")
    ]
    cfg["REDIRECT_HOSTS"] = [
        parse_host("REDIRECT_HOSTS", h) for h in env.items("REDIRECT_HOSTS")
    ]
    cfg["RATE_LIMIT"] = parse_rate_limit(
        "RATE_LIMIT", env.text("RATE_LIMIT") or DEFAULT_RATE_LIMIT
    )
    cfg["RECIPIENT_DAILY_QUOTA"] = env.integer("RECIPIENT_DAILY_QUOTA", 500, 0, 10**7)
    cfg["BACKLOG_LIMIT"] = env.integer("BACKLOG_LIMIT", 10_000, 0, 10**9)
    cfg["MIN_FILL_SECONDS"] = env.number("MIN_FILL_SECONDS", 3.0, 0.0, 3600.0)
    cfg["DEDUPE_WINDOW"] = env.number("DEDUPE_WINDOW", 600.0, 0.0, 7 * 86400.0)
    cfg["FORMS_FILE"] = env.file("FORMS_FILE")
    cfg["FORM_LANGUAGE"] = parse_language("FORM_LANGUAGE", env.text("FORM_LANGUAGE"))
    cfg["SPAM_DEFAULTS"] = _spam_defaults(env)
    cfg["RSPAMD_URL"] = _rspamd_url(env)
    cfg["RSPAMD_TIMEOUT"] = env.number("RSPAMD_TIMEOUT", 5.0, 0.1, 120.0)
    cfg["MAILDIR_PATH"] = env.text("MAILDIR_PATH")
    cfg["SESSION_COOKIE_SECURE"] = env.boolean("COOKIE_SECURE", False)
    cfg.update(_dkim(env, cfg["MAIL_FROM"]))
    token = env.text("METRICS_TOKEN")
    if token and len(token) < 16:
        raise ConfigError("METRICS_TOKEN is too short: use at least 16 characters")
    cfg["METRICS_TOKEN"] = token
    cfg["ADMIN_ENABLED"] = env.boolean("ADMIN_ENABLED", True)
    cfg["ADMIN_IDLE_TIMEOUT"] = env.number(
        "ADMIN_IDLE_TIMEOUT", 12 * 3600.0, 60.0, 30 * 86400.0
    )
    cfg["LOG_FORMAT"] = env.choice("LOG_FORMAT", ("text", "json"), "text")
    cfg["LOG_LEVEL"] = env.choice(
        "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
    )
    return cfg


def setting(name: str) -> str | None:
    """Read one raw setting as load_config() would, changing nothing.

    The environment first, then `.env` (or FORMPOST_ENV_FILE). For the process
    settings gunicorn.conf.py needs before any app exists (LOG_FORMAT); the
    environment is not touched, so a reload still reads a changed `.env`.
    """
    if name in os.environ:
        return os.environ[name]
    env_file = _env_file()
    return dotenv_values(env_file).get(name) if env_file else None


def _env_file() -> str:
    return os.environ.get("FORMPOST_ENV_FILE") or find_dotenv(usecwd=True)


def parse_mail_from(value: str | None) -> Address:
    """Parse `MAIL_FROM` (`Name <addr>` or `addr`) into an Address.

    The display name is taken as written, parentheses, commas and all (an
    email header parser would drop "(development)" as a comment); a name in
    double quotes is unquoted. Mail readers show it exactly so.
    """
    if not value:
        raise ConfigError(
            "MAIL_FROM is required when SMTP_HOST is set, "
            "e.g. MAIL_FROM=Contact form <forms@example.com>"
        )
    _reject_controls("MAIL_FROM", value)
    problem = header_text_problem(value)  # C1 controls, U+2028, =?...?= too
    if problem:
        raise ConfigError(f"MAIL_FROM contains {problem}")
    bad = ConfigError(
        f"MAIL_FROM must be one address like 'Name <a@example.com>', got {value!r}"
    )
    found = _NAME_ADDR.fullmatch(value.strip())
    if found is None:
        name, addr = "", value.strip()
    else:
        name, addr = found["name"].strip(), found["addr"].strip()
        quoted = _QUOTED.fullmatch(name)
        if quoted is not None:
            name = re.sub(r"\\(.)", r"\1", quoted[1])
        elif "<" in name or ">" in name or name.count('"') == 1:
            raise bad  # two addresses, or a stray bracket or quote
    if not addr or re.search(r"[\s<>,;\"()]", addr):
        raise bad
    return Address(display_name=name, addr_spec=_checked_address("MAIL_FROM", addr))


def parse_recipients(value: str | None) -> dict[str, Recipient]:
    """Parse `MAIL_RECIPIENTS` (`alias=address` or bare `address`, comma-separated).

    A bare address gets its local part as alias. Returns aliases in the order given.
    """
    if not value or not value.strip():
        raise ConfigError(
            "MAIL_RECIPIENTS is required when SMTP_HOST is set, "
            "e.g. MAIL_RECIPIENTS=sales=sales@example.com,support=help@example.com"
        )
    _reject_controls("MAIL_RECIPIENTS", value)
    result: dict[str, Recipient] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            alias, _, addr = (part.strip() for part in item.partition("="))
        else:
            addr = item
            alias = item.partition("@")[0].lower()
        alias = alias.lower()
        if not ALIAS_RE.match(alias):
            raise ConfigError(
                f"MAIL_RECIPIENTS: alias {alias!r} must be 1-64 of a-z, 0-9, '.', '_', "
                "'-' and start with a letter or digit"
            )
        if alias in result:
            raise ConfigError(
                f"MAIL_RECIPIENTS: alias {alias!r} appears twice; "
                "write alias=address to tell them apart"
            )
        address = _checked_address(f"MAIL_RECIPIENTS ({alias})", addr)
        result[alias] = Recipient(alias, Address(addr_spec=address))
    if not result:
        raise ConfigError("MAIL_RECIPIENTS names no address")
    return result


def parse_language(variable: str, value: str | None) -> str | None:
    """Return the shipped locale a language tag names (zh-CN), None if unset."""
    if value is None:
        return None
    locale = exact_locale(value)
    if locale is None:
        raise ConfigError(f"{variable} must be one of {', '.join(TAGS)}, got {value!r}")
    return locale


def parse_origin(variable: str, value: str) -> str:
    """Normalise an origin such as `https://www.example.com` (scheme, host, port)."""
    try:
        return normalize_origin(value)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def parse_host(variable: str, value: str) -> str:
    """Normalise a host name (lower case, IDNA) or IP address."""
    try:
        return normalize_host(value)
    except ValueError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def parse_rate_limit(variable: str, value: str) -> tuple[tuple[int, int], ...]:
    """Parse `5/minute;50/day` into ((5, 60), (50, 86400)); "" or "off" is none."""
    if value.strip().lower() in ("", "off", "none"):
        return ()
    limits = []
    for item in re.split(r"[;,]", value):
        if not item.strip():
            continue
        match = RATE_RE.match(item.lower())
        if not match or match.group(3) not in RATE_UNITS or int(match.group(1)) < 1:
            raise ConfigError(
                f"{variable}: {item.strip()!r} is not a limit like 5/minute "
                "(units: second, minute, hour, day; several separated by ';')"
            )
        count, multiple, unit = match.groups()
        seconds = RATE_UNITS[unit] * int(multiple or 1)
        limits.append((int(count), seconds))
    return tuple(limits)


def _spam_defaults(env: _Env) -> SpamSettings:
    """Read the SPAM_* defaults every form starts from (FORMS_FILE overrides)."""
    base = SpamSettings()
    fail = env.choice("SPAM_FAIL", ("open", "closed"), base.fail)
    pow_mode = env.choice(
        "SPAM_PROOF_OF_WORK", ("off", "score", "required"), base.proof_of_work
    )
    settings = SpamSettings(
        fail="closed" if fail == "closed" else "open",
        quarantine_at=env.number("SPAM_QUARANTINE_AT", base.quarantine_at, 0.1, 1000.0),
        drop_at=env.number("SPAM_DROP_AT", base.drop_at, 0.1, 1000.0),
        proof_of_work=(
            "off"
            if pow_mode == "off"
            else "required"
            if pow_mode == "required"
            else "score"
        ),
        max_links=env.integer("SPAM_MAX_LINKS", base.max_links, 0, 1000),
        blocked_words=tuple(
            parse_blocked_word("SPAM_BLOCKED_WORDS", w)
            for w in env.items("SPAM_BLOCKED_WORDS")
        ),
        blocked_email_domains=tuple(
            parse_email_domain("SPAM_BLOCKED_EMAIL_DOMAINS", d)
            for d in env.items("SPAM_BLOCKED_EMAIL_DOMAINS")
        ),
        blocked_networks=tuple(
            parse_network("SPAM_BLOCKED_NETWORKS", n)
            for n in env.items("SPAM_BLOCKED_NETWORKS")
        ),
        repeat_window=env.number(
            "SPAM_REPEAT_WINDOW", base.repeat_window, 0.0, 30 * 86400.0
        ),
        rspamd_quarantine_at=env.number(
            "SPAM_RSPAMD_QUARANTINE_AT", base.rspamd_quarantine_at, -1000.0, 1000.0
        ),
        rspamd_drop_at=env.number(
            "SPAM_RSPAMD_DROP_AT", base.rspamd_drop_at, -1000.0, 1000.0
        ),
    )
    check_thresholds(
        "SPAM_QUARANTINE_AT and SPAM_DROP_AT",
        "SPAM_RSPAMD_QUARANTINE_AT and SPAM_RSPAMD_DROP_AT",
        settings,
    )
    return settings


def check_thresholds(where: str, rspamd_where: str, settings: SpamSettings) -> None:
    """Refuse a drop threshold at or under the quarantine threshold."""
    if settings.drop_at <= settings.quarantine_at:
        raise ConfigError(
            f"{where}: drop_at ({settings.drop_at:g}) must be above "
            f"quarantine_at ({settings.quarantine_at:g})"
        )
    if settings.rspamd_drop_at <= settings.rspamd_quarantine_at:
        raise ConfigError(
            f"{rspamd_where}: rspamd_drop_at ({settings.rspamd_drop_at:g}) must be "
            f"above rspamd_quarantine_at ({settings.rspamd_quarantine_at:g})"
        )


def parse_blocked_word(variable: str, value: str) -> str:
    """Check one blocked word or phrase: 1-100 characters, no control characters."""
    word = value.strip()
    if not 1 <= len(word) <= 100 or not word.isprintable():
        raise ConfigError(
            f"{variable}: {value!r} must be a word or phrase of 1-100 characters"
        )
    return word


def parse_email_domain(variable: str, value: str) -> str:
    """Normalise an email domain to block (`example.com`; subdomains match too)."""
    domain = value.strip().lower().rstrip(".")
    if not domain or "@" in domain or "/" in domain or ":" in domain:
        raise ConfigError(
            f"{variable}: {value!r} is not a domain like example.com (no @ or URL)"
        )
    host = parse_host(variable, domain)
    if "." not in host:
        raise ConfigError(f"{variable}: {value!r} is not a domain like example.com")
    return host


def parse_network(
    variable: str, value: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse an IP address or CIDR block (`203.0.113.7`, `198.51.100.0/24`)."""
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(
            f"{variable}: {value!r} is not an IP address or network "
            f"(host bits must be zero, e.g. 198.51.100.0/24): {exc}"
        ) from None


def _rspamd_url(env: _Env) -> str | None:
    """Read RSPAMD_URL: an http(s) URL of rspamd's normal worker, no query."""
    raw = env.text("RSPAMD_URL")
    if raw is None:
        return None
    parts = urllib.parse.urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or port == -1
        or any(ch.isspace() for ch in raw)
    ):
        raise ConfigError(
            "RSPAMD_URL must be an http(s) URL like http://127.0.0.1:11333 "
            f"(no query, fragment or credentials), got {raw!r}"
        )
    return raw.rstrip("/")


def parse_size(variable: str, value: str) -> int:
    """Parse a size such as '10MB' or '512kB' (binary units) into bytes."""
    match = SIZE_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            f"{variable} must be a size with a unit, like '10MB' or '512kB', "
            f"got {value!r}"
        )
    unit = match.group(2).lower().replace("i", "")
    size = int(match.group(1)) * SIZE_UNITS[unit]
    if not 1 <= size <= MAX_ATTACHMENT_SIZE:
        raise ConfigError(f"{variable} must be between 1kB and 100MB, got {value!r}")
    return size


def parse_media_types(variable: str, values: list[str]) -> tuple[str, ...]:
    """Check a list of media types ('image/png') or families ('image/*')."""
    if not values:
        raise ConfigError(f"{variable} must name at least one type")
    checked = []
    for value in values:
        lowered = value.strip().lower()
        match = _MEDIA_TYPE_RE.match(lowered)
        if match is None or match.group(1) not in MEDIA_TOP:
            raise ConfigError(
                f"{variable}: {value!r} is not a media type such as "
                "'application/pdf' or a family such as 'image/*'"
            )
        checked.append(lowered)
    return tuple(dict.fromkeys(checked))


def _attachments(env: _Env) -> dict[str, Any]:
    # The default form takes files only when ATTACHMENTS_MAX_FILES is set.
    files = env.integer("ATTACHMENTS_MAX_FILES", 0, 0, MAX_ATTACHMENT_FILES)
    size = env.text("ATTACHMENTS_MAX_FILE_SIZE") or "10MB"
    total = env.text("ATTACHMENTS_MAX_TOTAL_SIZE") or "20MB"
    types = env.items("ATTACHMENTS_TYPES") or list(DEFAULT_ATTACHMENT_TYPES)
    per_file = parse_size("ATTACHMENTS_MAX_FILE_SIZE", size)
    together = parse_size("ATTACHMENTS_MAX_TOTAL_SIZE", total)
    if together < per_file:
        raise ConfigError(
            "ATTACHMENTS_MAX_TOTAL_SIZE must not be smaller than "
            "ATTACHMENTS_MAX_FILE_SIZE"
        )
    return {
        "ATTACHMENTS_MAX_FILES": files,
        "ATTACHMENTS_MAX_FILE_SIZE": per_file,
        "ATTACHMENTS_MAX_TOTAL_SIZE": together,
        "ATTACHMENTS_TYPES": parse_media_types("ATTACHMENTS_TYPES", types),
        # 0: only the relay's advertised SIZE bounds a message with files.
        "MAIL_MAX_SIZE": env.integer("MAIL_MAX_SIZE", 0, 0, 2**31),
        **_clamd(env),
    }


def _clamd(env: _Env) -> dict[str, Any]:
    # Files are scanned only when one of these is set.
    path, host = env.text("CLAMD_SOCKET"), env.text("CLAMD_HOST")
    if path and host:
        raise ConfigError("set CLAMD_SOCKET or CLAMD_HOST, not both")
    if path and not os.path.isabs(path):
        raise ConfigError(f"CLAMD_SOCKET must be an absolute path, got {path!r}")
    if host:
        host = parse_host("CLAMD_HOST", host)
    return {
        "CLAMD_SOCKET": path,
        "CLAMD_HOST": host,
        "CLAMD_PORT": env.integer("CLAMD_PORT", 3310, 1, 65535),
        "CLAMD_TIMEOUT": env.number("CLAMD_TIMEOUT", 30.0, 0.1, 600.0),
    }


def _checked_address(variable: str, addr: str) -> str:
    try:
        # Syntax only: start-up must not depend on DNS being reachable.
        info = validate_email(addr, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ConfigError(
            f"{variable}: {addr!r} is not a valid address: {exc}"
        ) from None
    return info.ascii_email or info.normalized


def _reject_controls(variable: str, value: str) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ConfigError(f"{variable} contains control characters")


def _secret_key(env: _Env) -> str | None:
    return env.secret("SECRET_KEY")


def _password(env: _Env) -> str | None:
    # Spaces can be part of a password: only the file's final newline goes.
    return env.secret("SMTP_PASSWORD", strip=False)


def _ca_file(env: _Env) -> str | None:
    path = env.file("SMTP_CA_FILE")
    if path is None:
        return None
    try:
        # What the SMTP transport and the doctor do with it, now rather than
        # at the first delivery.
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"SMTP_CA_FILE does not hold PEM CA certificates ({exc})"
        ) from None
    return path


def _database_url(env: _Env) -> str | None:
    url = env.secret("DATABASE_URL")
    if url is None:
        return None  # create_app() puts SQLite in the instance folder
    scheme = url.partition("://")[0]
    if not scheme.startswith(("sqlite", "postgresql")):
        raise ConfigError(
            "DATABASE_URL must start with sqlite:/// or postgresql+psycopg://, "
            f"got a URL with scheme {scheme!r}"
        )
    if scheme in ("postgresql", "postgres"):
        url = "postgresql+psycopg" + url[len(scheme) :]
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        host = parsed.host
    except (ArgumentError, ValueError) as exc:
        # The URL itself is not echoed: it may hold the password.
        raise ConfigError(f"DATABASE_URL is not a valid URL ({exc})") from None
    if url.startswith("sqlite"):
        _check_sqlite_path(parsed.database, parsed.query)
        return url
    authority = url.partition("://")[2].partition("/")[0]
    if authority and not (host and _HOST_RE.fullmatch(host)):
        raise ConfigError(
            "DATABASE_URL names no valid host; write "
            "postgresql+psycopg://user:password@host:5432/dbname"
        )
    if "connect_timeout" not in parsed.query:
        # libpq waits for ever on a host that drops packets: start-up must
        # stop with a message instead, and a request must not hang.
        url = parsed.update_query_dict(
            {"connect_timeout": str(DB_CONNECT_TIMEOUT)}
        ).render_as_string(hide_password=False)
    return url


def _check_sqlite_path(path: str | None, query: Mapping[str, Any]) -> None:
    memory = (
        not path
        or path == ":memory:"
        or "mode=memory" in (path or "")
        or query.get("mode") == "memory"
    )
    if memory:
        raise ConfigError(
            "DATABASE_URL points at an in-memory SQLite database, which each "
            "process and connection sees empty: use a file, "
            "e.g. sqlite:////var/lib/formpost/formpost.db, or unset it"
        )
    if path.startswith("file:"):
        path = path[len("file:") :].partition("?")[0]
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(
            f"DATABASE_URL: the folder {folder} does not exist; create it, or "
            "point DATABASE_URL at a file in an existing folder"
        )


def _dkim(env: _Env, mail_from: Address) -> dict[str, Any]:
    domain = env.text("DKIM_DOMAIN")
    selector = env.text("DKIM_SELECTOR")
    key_file = env.file("DKIM_PRIVATE_KEY_FILE")
    if env.text("DKIM_PRIVATE_KEY"):
        raise ConfigError(
            "DKIM_PRIVATE_KEY is not read: put the key in a file and set "
            "DKIM_PRIVATE_KEY_FILE (keys do not belong in the environment)"
        )
    if not (domain or selector or key_file):
        return {"DKIM_DOMAIN": None, "DKIM_SELECTOR": None, "DKIM_PRIVATE_KEY": None}
    if not (domain and selector and key_file):
        raise ConfigError(
            "DKIM needs all of DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY_FILE"
        )
    domain = parse_host("DKIM_DOMAIN", domain)
    if not re.fullmatch(
        r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*",
        selector.lower(),
    ):
        raise ConfigError(
            f"DKIM_SELECTOR must be a DNS label like 'mail', got {selector!r}"
        )
    mail_domain = mail_from.domain.lower()
    if mail_domain != domain and not mail_domain.endswith("." + domain):
        raise ConfigError(
            f"DKIM_DOMAIN {domain} does not align with MAIL_FROM's domain "
            f"{mail_domain}: DMARC would not count the signature"
        )
    try:
        key = Path(key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"DKIM_PRIVATE_KEY_FILE cannot be read: {exc.strerror}"
        ) from None
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError("DKIM_PRIVATE_KEY_FILE does not hold a PEM private key")
    from app.signing import SigningError, check_key

    try:
        check_key(domain, selector, key)
    except SigningError as exc:
        raise ConfigError(
            f"DKIM_PRIVATE_KEY_FILE: {exc}; it must hold an RSA private key in "
            "PEM, unencrypted (openssl genrsa 2048)"
        ) from None
    return {"DKIM_DOMAIN": domain, "DKIM_SELECTOR": selector, "DKIM_PRIVATE_KEY": key}


def development_secret(instance_path: str) -> str:
    """Return a per-installation random key kept in the instance folder.

    All gunicorn workers must share one key (CSRF tokens cross workers), so it
    is created once with O_EXCL and read by every process after that.
    """
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "dev-secret-key"
    if not path.exists():
        # Write a private temp file, then link it into place: the link either
        # appears with the whole key in it or fails because another process
        # won, so no reader ever sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".dev-secret-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32))
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text(encoding="ascii").strip()


class _Env:
    """Typed, strict accessors over an environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        return self._environ.get(name) or None

    def text(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        if not _INTEGER_RE.fullmatch(raw):
            raise ConfigError(f"{name} must be a whole number, got {raw!r}")
        value = int(raw)
        if not low <= value <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        if not _NUMBER_RE.fullmatch(raw):
            raise ConfigError(f"{name} must be a number of seconds, got {raw!r}")
        value = float(raw)
        if not low <= value <= high:  # also rejects nan
            raise ConfigError(f"{name} must be between {low} and {high}, got {raw}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        word = raw.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ConfigError(f"{name} must be one of true/false/1/0/yes/no, got {raw!r}")

    def choice(
        self, name: str, choices: tuple[str, ...], default: str, upper: bool = False
    ) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ConfigError(
                f"{name} must be one of {', '.join(choices)}, got {raw!r}"
            )
        return value

    def items(self, name: str) -> list[str]:
        raw = self.text(name)
        if raw is None:
            return []
        return [item.strip() for item in raw.split(",") if item.strip()]

    def secret(self, name: str, strip: bool = True) -> str | None:
        """Read NAME, or the file named by NAME_FILE (Docker/systemd secrets)."""
        literal = self.raw(name) if not strip else self.text(name)
        path = self.file(f"{name}_FILE")
        if literal and path:
            raise ConfigError(f"set {name} or {name}_FILE, not both")
        if not path:
            return literal
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}_FILE cannot be read: {exc}") from None
        # A secrets file ends with a newline that is not part of the value.
        return (value.strip() if strip else value.rstrip("\r\n")) or None

    def file(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        if not Path(raw).is_file():
            # The value is not echoed: people paste the secret itself here.
            raise ConfigError(f"{name} does not name a readable file")
        return raw
