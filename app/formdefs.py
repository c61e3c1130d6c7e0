"""Form definitions: the environment's `default` form and named forms from TOML.

A form is what a site posts to at /f/<id>: which recipients it may reach,
which origins may post, where it may redirect, how the subject is made, and
its spam settings. Everything is validated at start-up; errors name the form
and the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config import (
    MAX_ATTACHMENT_FILES,
    ConfigError,
    parse_host,
    parse_media_types,
    parse_origin,
    parse_rate_limit,
    parse_size,
)

from .compose import header_text_problem
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
    "attachments",
}
ATTACHMENT_KEYS = {"max_files", "max_file_size", "max_total_size", "types"}


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
    # None: the form takes no files (415).
    attachments: AttachmentSettings | None = None

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
        forms.update(parse_forms(data, aliases, config["RATE_LIMIT"], path))
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
        if form_id == "default":
            raise ConfigError(
                f"{where}: 'default' is the form configured by the environment "
                "(ALLOWED_ORIGINS, REDIRECT_HOSTS, RATE_LIMIT); pick another id"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
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
        attachments=attachments,
    )
