"""Strict parsing of the environment in config.py.

Every test passes its own mapping to `load_config`, so neither the shell nor a
developer's `.env` can change the outcome.
"""

from __future__ import annotations

import os
import stat
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.headerregistry import Address
from typing import Any

import pytest

import config
from config import (
    ConfigError,
    development_secret,
    load_config,
    parse_mail_from,
    parse_recipients,
)

PASSWORD = "S3cret-Pa55word!xyzzy"
SECRET_KEY = "k" * 24 + "-not-in-errors"


def production(**overrides: str) -> dict[str, str]:
    """A complete, valid relay configuration; overrides replace or add values.

    An override of None removes the variable, so each test differs from a
    working setup in exactly the one way it is about.
    """
    env = {
        "SMTP_HOST": "smtp.example.com",
        "SMTP_USERNAME": "forms",
        "SMTP_PASSWORD": PASSWORD,
        "SECRET_KEY": SECRET_KEY,
        "MAIL_FROM": "Contact form <forms@example.com>",
        "MAIL_RECIPIENTS": "sales=sales@example.com",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def config_error(environ: dict[str, str]) -> ConfigError:
    """Load `environ`, expecting start-up to stop; return the error."""
    return rejected(load_config, environ)


def rejected(parse: Callable[[Any], object], value: Any) -> ConfigError:
    """Call `parse(value)`, expecting a ConfigError; return it."""
    with pytest.raises(ConfigError) as info:
        parse(value)
    return info.value


# --- defaults ---------------------------------------------------------------


def test_production_baseline_is_valid():
    """The helper's configuration loads, so the failures below are each one fault."""
    cfg = load_config(production())
    assert cfg["DEVELOPMENT"] is False
    assert cfg["SMTP_HOST"] == "smtp.example.com"
    assert cfg["SMTP_PASSWORD"] == PASSWORD
    assert cfg["SECRET_KEY"] == SECRET_KEY
    assert cfg["MAIL_FROM"] == Address("Contact form", addr_spec="forms@example.com")
    assert list(cfg["MAIL_RECIPIENTS"]) == ["sales"]


def test_development_defaults():
    cfg = load_config({})
    assert cfg["DEVELOPMENT"] is True
    assert cfg["SMTP_HOST"] is None
    assert cfg["SECRET_KEY"] is None
    assert cfg["SMTP_USERNAME"] is None
    assert cfg["SMTP_PASSWORD"] is None
    assert cfg["MAIL_FROM"].addr_spec == "formpost@example.com"
    recipients = cfg["MAIL_RECIPIENTS"]
    assert list(recipients) == ["demo"]
    assert recipients["demo"].address.addr_spec == "demo@example.com"
    assert cfg["SMTP_SECURITY"] == "starttls"
    assert cfg["SMTP_PORT"] == 587
    assert cfg["SMTP_TIMEOUT"] == 30.0
    assert cfg["MAX_CONTENT_LENGTH"] == 64 * 1024
    assert cfg["TRUSTED_PROXY_HOPS"] == 0
    assert cfg["SESSION_COOKIE_SECURE"] is False
    assert cfg["LOG_LEVEL"] == "INFO"
    assert cfg["INSTANCE_PATH"] is None
    assert cfg["FRAME_ANCESTORS"] == []


def test_mapping_is_the_only_source(monkeypatch):
    """A relay in the process environment does not leak into load_config({})."""
    monkeypatch.setenv("SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("SMTP_PORT", "abc")
    assert load_config({})["DEVELOPMENT"] is True


def test_empty_value_means_unset():
    cfg = load_config({"SMTP_PORT": "", "COOKIE_SECURE": "  ", "SMTP_HOST": ""})
    assert cfg["DEVELOPMENT"] is True
    assert cfg["SMTP_PORT"] == 587
    assert cfg["SESSION_COOKIE_SECURE"] is False


@pytest.mark.parametrize(
    ("security", "port"), [("starttls", 587), ("tls", 465), ("none", 25)]
)
def test_default_port_follows_security_mode(security, port):
    cfg = load_config({"SMTP_SECURITY": security})
    assert cfg["SMTP_SECURITY"] == security
    assert cfg["SMTP_PORT"] == port


def test_explicit_port_wins_over_mode_default():
    cfg = load_config({"SMTP_SECURITY": "TLS", "SMTP_PORT": "2465"})
    assert cfg["SMTP_SECURITY"] == "tls"
    assert cfg["SMTP_PORT"] == 2465


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("SMTP_PORT", "1", 1),
        ("SMTP_PORT", " 65535 ", 65535),
        ("SMTP_TIMEOUT", "2.5", 2.5),
        ("MAX_CONTENT_LENGTH", "1048576", 1048576),
        ("TRUSTED_PROXY_HOPS", "2", 2),
        ("LOG_LEVEL", "debug", "DEBUG"),
        ("WEBHOOK_TIMEOUT", "2.5", 2.5),
        ("WEBHOOK_ALLOW_PRIVATE", "yes", True),
        ("PUBLIC_URL", "https://Forms.Example.com/", "https://forms.example.com"),
        (
            "FRAME_ANCESTORS",
            " https://a.example , ,https://b.example",
            ["https://a.example", "https://b.example"],
        ),
    ],
)
def test_good_values_are_parsed(name, raw, value):
    assert load_config({name: raw})[name] == value


def test_a_short_lease_shortens_the_default_webhook_timeout():
    assert (
        load_config({"OUTBOX_LEASE": "4", "SMTP_TIMEOUT": "3"})["WEBHOOK_TIMEOUT"]
        == 2.0
    )
    assert load_config({})["WEBHOOK_TIMEOUT"] == 10.0


# --- bad values stop start-up, naming the variable ----------------------------


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("SMTP_PORT", "abc"),
        ("SMTP_PORT", "0"),
        ("SMTP_PORT", "70000"),
        ("SMTP_PORT", "-1"),
        ("SMTP_PORT", "587.0"),
        ("SMTP_PORT", "5_87"),
        ("SMTP_PORT", "+587"),
        ("SMTP_PORT", "\u0665\u0668\u0667"),  # Arabic-Indic digits
        ("SMTP_SECURITY", "maybe"),
        ("SMTP_SECURITY", "ssl"),
        ("SMTP_TIMEOUT", "-1"),
        ("SMTP_TIMEOUT", "0"),
        ("SMTP_TIMEOUT", "nan"),
        ("SMTP_TIMEOUT", "inf"),
        ("SMTP_TIMEOUT", "abc"),
        ("SMTP_TIMEOUT", "10s"),
        ("SMTP_TIMEOUT", "1_0"),
        ("SMTP_TIMEOUT", "1e3"),
        ("OUTBOX_LEASE", "5"),  # not longer than SMTP_TIMEOUT (30)
        ("OUTBOX_LEASE", "abc"),
        ("OUTBOX_RETRY_BASE", "0"),
        ("OUTBOX_RETRY_MAX", "1"),  # smaller than OUTBOX_RETRY_BASE
        ("OUTBOX_POLL_INTERVAL", "never"),
        ("OUTBOX_BATCH", "0"),
        ("OUTBOX_NICE", "20"),
        ("OUTBOX_NICE", "-5"),
        ("OUTBOX_NICE", "low"),
        ("OUTBOX_GIVE_UP_AFTER", "-1"),
        ("DATABASE_URL", "mysql://u:p@h/db"),
        ("MAX_CONTENT_LENGTH", "abc"),
        ("MAX_CONTENT_LENGTH", "64k"),
        ("MAX_CONTENT_LENGTH", "-5"),
        ("TRUSTED_PROXY_HOPS", "-1"),
        ("TRUSTED_PROXY_HOPS", "one"),
        ("COOKIE_SECURE", "maybe"),
        ("LOG_LEVEL", "loud"),
        ("FORM_LANGUAGE", "fr"),
        ("FORM_LANGUAGE", "zh-XX"),
        ("FORM_LANGUAGE", "en_US:en"),  # GNU gettext's LANGUAGE list, mistyped
        ("WEBHOOK_TIMEOUT", "0"),
        ("WEBHOOK_TIMEOUT", "ten"),
        ("WEBHOOK_TIMEOUT", "300"),  # not shorter than OUTBOX_LEASE (300)
        ("WEBHOOK_ALLOW_PRIVATE", "maybe"),
        ("PUBLIC_URL", "forms.example.com"),
        ("PUBLIC_URL", "https://forms.example.com/admin"),
    ],
)
@pytest.mark.parametrize("mode", ["development", "production"])
def test_bad_value_names_the_variable(name, raw, mode):
    base = {} if mode == "development" else production()
    error = config_error({**base, name: raw})
    assert name in str(error)


@pytest.mark.parametrize("raw", ["true", "TRUE", "True", "1", "yes", "YES", " yes "])
def test_boolean_true_words(raw):
    assert load_config({"COOKIE_SECURE": raw})["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("raw", ["false", "FALSE", "0", "no", "No"])
def test_boolean_false_words(raw):
    assert load_config({"COOKIE_SECURE": raw})["SESSION_COOKIE_SECURE"] is False


@pytest.mark.parametrize(
    "raw", ["on", "off", "y", "n", "t", "f", "2", "-1", "enabled", "true!"]
)
def test_boolean_other_words_rejected(raw):
    error = config_error({"COOKIE_SECURE": raw})
    assert "COOKIE_SECURE" in str(error)


# --- what a relay configuration requires ------------------------------------


@pytest.mark.parametrize("name", ["SECRET_KEY", "MAIL_FROM", "MAIL_RECIPIENTS"])
def test_required_with_smtp_host(name):
    assert name in str(config_error(production(**{name: None})))


def test_secret_key_optional_in_development():
    assert load_config({"SECRET_KEY": ""})["SECRET_KEY"] is None


@pytest.mark.parametrize("mode", ["development", "production"])
def test_short_secret_key_rejected(mode):
    base = {} if mode == "development" else production()
    error = config_error({**base, "SECRET_KEY": "x" * 15})
    assert "SECRET_KEY" in str(error)
    assert load_config({**base, "SECRET_KEY": "x" * 16})["SECRET_KEY"] == "x" * 16


# --- SMTP credentials ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("hunter2\n", "hunter2"),
        ("hunter2\r\n", "hunter2"),
        ("hunter2", "hunter2"),
        (" spaced pass \n", " spaced pass "),
    ],
)
def test_password_file_strips_only_the_trailing_newline(tmp_path, content, expected):
    secret = tmp_path / "smtp_password"
    secret.write_bytes(content.encode())
    env = production(SMTP_PASSWORD=None, SMTP_PASSWORD_FILE=str(secret))
    assert load_config(env)["SMTP_PASSWORD"] == expected


def test_password_and_password_file_together_rejected(tmp_path):
    secret = tmp_path / "smtp_password"
    secret.write_text("hunter2\n")
    error = config_error(production(SMTP_PASSWORD_FILE=str(secret)))
    assert "SMTP_PASSWORD_FILE" in str(error)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_password_file_names_the_variable(tmp_path, kind):
    path = tmp_path / "nope"
    if kind == "directory":
        path.mkdir()
    env = production(SMTP_PASSWORD=None, SMTP_PASSWORD_FILE=str(path))
    assert "SMTP_PASSWORD_FILE" in str(config_error(env))


@pytest.mark.parametrize("mode", ["development", "production"])
def test_password_without_username_rejected(mode):
    base = {"SMTP_PASSWORD": PASSWORD} if mode == "development" else production()
    base.pop("SMTP_USERNAME", None)
    assert "SMTP_USERNAME" in str(config_error(base))


@pytest.mark.parametrize(
    "host", ["smtp.example.com", "10.0.0.5", "192.0.2.1", "localhost.example.com"]
)
def test_clear_text_auth_to_remote_host_rejected(host):
    error = config_error(production(SMTP_HOST=host, SMTP_SECURITY="none"))
    assert "SMTP_SECURITY" in str(error)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_clear_text_auth_to_loopback_allowed(host):
    cfg = load_config(production(SMTP_HOST=host, SMTP_SECURITY="none"))
    assert cfg["SMTP_SECURITY"] == "none"
    assert cfg["SMTP_PORT"] == 25
    assert cfg["SMTP_USERNAME"] == "forms"


def test_no_auth_to_remote_host_without_tls_allowed():
    """Without credentials there is nothing to leak; an internal relay may be plain."""
    env = production(SMTP_SECURITY="none", SMTP_USERNAME=None, SMTP_PASSWORD=None)
    assert load_config(env)["SMTP_SECURITY"] == "none"


# --- secrets never appear in errors -------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"SMTP_PORT": "abc"},
        {"SMTP_TIMEOUT": "nan"},
        {"SMTP_SECURITY": "none"},
        {"SMTP_SECURITY": "maybe"},
        {"MAIL_FROM": "garbage"},
        {"MAIL_FROM": None},
        {"MAIL_RECIPIENTS": "bad alias=x@example.com"},
        {"MAIL_RECIPIENTS": "sales=not-an-address"},
        {"SECRET_KEY": None},
        {"SECRET_KEY": "short"},
        {"SMTP_USERNAME": None},
        {"SMTP_PASSWORD_FILE": "/nonexistent/formpost-secret"},
        {"LOG_LEVEL": "loud"},
        {"COOKIE_SECURE": "maybe"},
    ],
    ids=lambda overrides: ",".join(f"{k}={v}" for k, v in overrides.items()),
)
def test_errors_never_contain_secrets(overrides):
    """The message, its repr and the whole printed traceback stay secret-free."""
    error = config_error(production(**overrides))
    printed = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), printed):
        assert PASSWORD not in text
        assert SECRET_KEY not in text


# --- MAIL_RECIPIENTS ------------------------------------------------------------


def addresses(recipients: dict[str, config.Recipient]) -> dict[str, str]:
    return {alias: r.address.addr_spec for alias, r in recipients.items()}


def test_recipients_alias_and_bare_forms_keep_order():
    parsed = parse_recipients(
        "support=help@example.com, sales@Example.ORG ,billing = money@example.net"
    )
    assert list(parsed) == ["support", "sales", "billing"]
    assert addresses(parsed) == {
        "support": "help@example.com",
        "sales": "sales@example.org",
        "billing": "money@example.net",
    }
    assert all(alias == r.alias for alias, r in parsed.items())


def test_recipient_alias_is_lower_cased():
    assert list(parse_recipients("Sales=s@example.com")) == ["sales"]


def test_recipient_domain_is_normalised_to_ascii():
    parsed = parse_recipients("intl=info@bücher.example")
    assert parsed["intl"].address.addr_spec == "info@xn--bcher-kva.example"


def test_recipients_skip_empty_items():
    assert list(parse_recipients("a@example.com,,b@example.com,")) == ["a", "b"]


@pytest.mark.parametrize(
    "raw",
    [
        "sales=a@example.com,sales=b@example.com",
        "sales=a@example.com,SALES=b@example.com",
        "team@example.com,team@example.org",
    ],
)
def test_duplicate_alias_rejected(raw):
    error = str(rejected(parse_recipients, raw))
    assert "MAIL_RECIPIENTS" in error
    assert "twice" in error


@pytest.mark.parametrize(
    "raw",
    [
        "=a@example.com",
        "sales team=a@example.com",
        "sales/x=a@example.com",
        "-sales=a@example.com",
        "_x=a@example.com",
        "ventas✓=a@example.com",
        "a+b@example.com",  # a bare address whose local part is no valid alias
        "x" * 65 + "=a@example.com",
    ],
)
def test_bad_alias_rejected(raw):
    error = str(rejected(parse_recipients, raw))
    assert "MAIL_RECIPIENTS" in error
    assert "alias" in error


@pytest.mark.parametrize(
    "raw",
    [
        "sales=",
        "sales=not-an-address",
        "sales=a@@example.com",
        "sales=a@example",
        "sales=Sales <s@example.com>",
        "sales=a b@example.com",
        "plainword",
    ],
)
def test_bad_recipient_address_rejected(raw):
    assert "MAIL_RECIPIENTS" in str(rejected(parse_recipients, raw))


@pytest.mark.parametrize("raw", [None, "", "   ", ",", " , , "])
def test_empty_recipients_rejected(raw):
    assert "MAIL_RECIPIENTS" in str(rejected(parse_recipients, raw))


@pytest.mark.parametrize(
    "raw",
    [
        "sales=a@example.com\r\nbcc=evil@example.com",
        "sales=a@example.com\n",
        "sales=a@exa\x00mple.com",
        "sales=a@example.com\x7f",
        "sa\tles=a@example.com",
    ],
)
def test_control_characters_in_recipients_rejected(raw):
    error = str(rejected(parse_recipients, raw))
    assert "MAIL_RECIPIENTS" in error


def test_recipients_through_load_config():
    cfg = load_config(
        production(MAIL_RECIPIENTS="sales=s@example.com,help@example.com")
    )
    assert addresses(cfg["MAIL_RECIPIENTS"]) == {
        "sales": "s@example.com",
        "help": "help@example.com",
    }


# --- MAIL_FROM --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "display_name", "addr_spec"),
    [
        ("Contact form <forms@example.com>", "Contact form", "forms@example.com"),
        ('"Acme, Inc." <forms@example.com>', "Acme, Inc.", "forms@example.com"),
        ("Formulário <forms@example.com>", "Formulário", "forms@example.com"),
        ("forms@example.com", "", "forms@example.com"),
        ("<forms@example.com>", "", "forms@example.com"),
        ("  forms@Example.COM  ", "", "forms@example.com"),
    ],
)
def test_mail_from_parsed(raw, display_name, addr_spec):
    parsed = parse_mail_from(raw)
    assert parsed.display_name == display_name
    assert parsed.addr_spec == addr_spec


@pytest.mark.parametrize(
    "raw",
    [
        "a@example.com, b@example.com",
        "A <a@example.com>, B <b@example.com>",
        "team: a@example.com, b@example.com;",
    ],
)
def test_mail_from_two_addresses_rejected(raw):
    assert "MAIL_FROM" in str(rejected(parse_mail_from, raw))


@pytest.mark.parametrize(
    "raw",
    [
        "not an address",
        "forms",
        "forms@example",
        "@example.com",
        "Name <forms@example.com",
        "x <a@example.com> y",
        "a@@example.com",
        "<>",
        ",",
        # The stdlib header parser raises IndexError on these; start-up must
        # still end in a ConfigError that names the variable.
        "<",
        "a@",
        '"',
    ],
)
def test_mail_from_garbage_rejected(raw):
    assert "MAIL_FROM" in str(rejected(parse_mail_from, raw))


@pytest.mark.parametrize(
    "raw",
    [
        "Forms <forms@example.com>\r\nBcc: evil@example.com",
        "forms@example.com\n",
        "Forms\r <forms@example.com>",
        "Forms\x00 <forms@example.com>",
    ],
)
def test_mail_from_line_breaks_rejected(raw):
    assert "MAIL_FROM" in str(rejected(parse_mail_from, raw))


def test_mail_from_through_load_config():
    cfg = load_config(production(MAIL_FROM="Web form <web@example.org>"))
    assert str(cfg["MAIL_FROM"]) == "Web form <web@example.org>"
    assert "MAIL_FROM" in str(config_error(production(MAIL_FROM="a@b.c, d@e.f")))


# --- instance folder and the development key ---------------------------------------


def test_instance_path_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = load_config({"INSTANCE_PATH": "var/instance"})["INSTANCE_PATH"]
    assert os.path.isabs(path)
    assert path == os.path.join(os.getcwd(), "var", "instance")


def test_development_secret_created_once_private(tmp_path):
    folder = tmp_path / "new" / "instance"
    first = development_secret(str(folder))
    key_file = folder / "dev-secret-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert key_file.read_text().strip() == first
    assert development_secret(str(folder)) == first
    assert development_secret(str(tmp_path / "other")) != first


def test_development_secret_is_one_whole_key_under_concurrent_starts(tmp_path):
    """gunicorn starts its workers at once: all must read the same full key.

    The key is written to a temp file and linked into place, so no process can
    ever read a created-but-empty file.
    """
    with ThreadPoolExecutor(max_workers=16) as pool:
        keys = set(pool.map(lambda _: development_secret(str(tmp_path)), range(64)))
    (key,) = keys
    assert len(key) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["dev-secret-key"]  # no temp left


def test_secret_key_from_a_file(tmp_path):
    """Docker/systemd secrets: the key comes from a file, its newline dropped."""
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 40 + "\n")
    base = {
        "SMTP_HOST": "relay.example.com",
        "MAIL_FROM": "forms@example.com",
        "MAIL_RECIPIENTS": "sales@example.com",
    }
    assert load_config({**base, "SECRET_KEY_FILE": str(key_file)})["SECRET_KEY"] == (
        "k" * 40
    )
    with pytest.raises(ConfigError, match="not both"):
        load_config({**base, "SECRET_KEY_FILE": str(key_file), "SECRET_KEY": "x" * 20})
    with pytest.raises(ConfigError, match="SECRET_KEY_FILE"):
        load_config({**base, "SECRET_KEY_FILE": str(tmp_path / "missing")})


# --- start-up problems found at config time (issue 12) -----------------------


@pytest.mark.parametrize(
    "raw", ["example.org:8081", "example.org:443", "[::1]:80", "example.org, b.org:1"]
)
def test_redirect_hosts_with_a_port_say_ports_are_not_part_of_it(raw):
    err = config_error(production(REDIRECT_HOSTS=raw))
    assert str(err).startswith("REDIRECT_HOSTS:")
    assert "a port is not part of a host entry" in str(err)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("sqlite:///:memory:", "in-memory SQLite"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///file:ledger?mode=memory&uri=true", "in-memory SQLite"),
        ("sqlite:////no/such/folder/ledger.db", "the folder /no/such/folder does"),
        ("postgresql://forms:pw@[db/formpost", "names no valid host"),
        ("postgresql://forms:pw@db:port/formpost", "is not a valid URL"),
        ("postgresql://forms:pw@db host/formpost", "names no valid host"),
        ("mysql://forms:pw@db/formpost", "must start with sqlite"),
    ],
)
def test_unusable_database_urls_stop_start_up(raw, says):
    err = config_error(production(DATABASE_URL=raw))
    assert "DATABASE_URL" in str(err) and says in str(err)
    assert ":pw@" not in str(err)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sqlite:///{tmp}/ledger.db", "sqlite:///{tmp}/ledger.db"),
        (
            "postgresql://forms:p%40ss@db:5432/formpost",
            "postgresql+psycopg://forms:p%40ss@db:5432/formpost?connect_timeout=5",
        ),
        (
            "postgresql+psycopg://db/formpost?connect_timeout=20",
            "postgresql+psycopg://db/formpost?connect_timeout=20",
        ),
        (
            "postgresql:///formpost?host=/run/postgresql",
            "postgresql+psycopg:///formpost?connect_timeout=5&host=%2Frun%2Fpostgresql",
        ),
    ],
)
def test_usable_database_urls_get_a_connect_timeout(tmp_path, raw, expected):
    cfg = load_config(production(DATABASE_URL=raw.format(tmp=tmp_path)))
    assert cfg["DATABASE_URL"] == expected.format(tmp=tmp_path)


def test_a_ca_file_that_is_not_pem_stops_start_up(tmp_path, pki):
    bad = tmp_path / "ca.pem"
    bad.write_text(
        "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n"
    )
    err = config_error(production(SMTP_CA_FILE=str(bad)))
    assert str(err).startswith("SMTP_CA_FILE does not hold PEM CA certificates")
    assert load_config(production(SMTP_CA_FILE=pki.ca_file))["SMTP_CA_FILE"]


def test_setting_reads_the_environment_then_the_env_file(monkeypatch, tmp_path):
    env_file = tmp_path / "formpost.env"
    env_file.write_text("LOG_FORMAT=json\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("FORMPOST_ENV_FILE", str(env_file))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert config.setting("LOG_FORMAT") == "json"
    assert config.setting("LOG_LEVEL") == "WARNING"
    assert config.setting("NOT_SET_ANYWHERE") is None
    assert "LOG_FORMAT" not in os.environ  # read, not loaded


# --- spam defaults (SPAM_*) and rspamd ----------------------------------------


def test_spam_defaults_without_any_setting():
    spam = load_config({})["SPAM_DEFAULTS"]
    assert (spam.fail, spam.quarantine_at, spam.drop_at) == ("open", 5.0, 15.0)
    assert (spam.proof_of_work, spam.max_links, spam.repeat_window) == (
        "score",
        2,
        86400.0,
    )
    assert spam.blocked_words == spam.blocked_networks == ()
    cfg = load_config({})
    assert cfg["RSPAMD_URL"] is None and cfg["RSPAMD_TIMEOUT"] == 5.0


def test_spam_defaults_are_parsed():
    spam = load_config(
        {
            "SPAM_FAIL": "Closed",
            "SPAM_QUARANTINE_AT": "4",
            "SPAM_DROP_AT": "9.5",
            "SPAM_PROOF_OF_WORK": "required",
            "SPAM_MAX_LINKS": "0",
            "SPAM_BLOCKED_WORDS": " casino , buy now ,",
            "SPAM_BLOCKED_EMAIL_DOMAINS": "Spam.Example., bücher.example",
            "SPAM_BLOCKED_NETWORKS": "198.51.100.0/24, 2001:db8::/32, 203.0.113.7",
            "SPAM_REPEAT_WINDOW": "0",
            "SPAM_RSPAMD_QUARANTINE_AT": "4",
            "SPAM_RSPAMD_DROP_AT": "10",
        }
    )["SPAM_DEFAULTS"]
    assert spam.fail == "closed" and spam.proof_of_work == "required"
    assert (spam.quarantine_at, spam.drop_at, spam.max_links) == (4.0, 9.5, 0)
    assert spam.blocked_words == ("casino", "buy now")
    assert spam.blocked_email_domains == ("spam.example", "xn--bcher-kva.example")
    assert [str(n) for n in spam.blocked_networks] == [
        "198.51.100.0/24",
        "2001:db8::/32",
        "203.0.113.7/32",
    ]
    assert spam.repeat_window == 0.0
    assert (spam.rspamd_quarantine_at, spam.rspamd_drop_at) == (4.0, 10.0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SPAM_FAIL": "maybe"}, "SPAM_FAIL"),
        ({"SPAM_QUARANTINE_AT": "five"}, "SPAM_QUARANTINE_AT"),
        ({"SPAM_QUARANTINE_AT": "0"}, "SPAM_QUARANTINE_AT"),
        ({"SPAM_DROP_AT": "nan"}, "SPAM_DROP_AT"),
        ({"SPAM_DROP_AT": "4"}, "SPAM_DROP_AT"),  # under the default quarantine_at
        ({"SPAM_QUARANTINE_AT": "15"}, "SPAM_QUARANTINE_AT"),  # = drop_at
        ({"SPAM_PROOF_OF_WORK": "on"}, "SPAM_PROOF_OF_WORK"),
        ({"SPAM_MAX_LINKS": "-1"}, "SPAM_MAX_LINKS"),
        ({"SPAM_MAX_LINKS": "2.5"}, "SPAM_MAX_LINKS"),
        ({"SPAM_BLOCKED_WORDS": "x" * 101}, "SPAM_BLOCKED_WORDS"),
        ({"SPAM_BLOCKED_WORDS": "bad\x00word"}, "SPAM_BLOCKED_WORDS"),
        ({"SPAM_BLOCKED_EMAIL_DOMAINS": "@spam.example"}, "SPAM_BLOCKED_EMAIL_DOMAINS"),
        ({"SPAM_BLOCKED_EMAIL_DOMAINS": "localhost"}, "SPAM_BLOCKED_EMAIL_DOMAINS"),
        (
            {"SPAM_BLOCKED_EMAIL_DOMAINS": "https://spam.example"},
            "SPAM_BLOCKED_EMAIL_DOMAINS",
        ),
        ({"SPAM_BLOCKED_NETWORKS": "198.51.100.1/24"}, "SPAM_BLOCKED_NETWORKS"),
        ({"SPAM_BLOCKED_NETWORKS": "10.0.0.0/33"}, "SPAM_BLOCKED_NETWORKS"),
        ({"SPAM_BLOCKED_NETWORKS": "example.com"}, "SPAM_BLOCKED_NETWORKS"),
        ({"SPAM_REPEAT_WINDOW": "-1"}, "SPAM_REPEAT_WINDOW"),
        ({"SPAM_REPEAT_WINDOW": "999999999"}, "SPAM_REPEAT_WINDOW"),
        ({"SPAM_RSPAMD_DROP_AT": "5"}, "SPAM_RSPAMD_DROP_AT"),
        ({"SPAM_RSPAMD_QUARANTINE_AT": "x"}, "SPAM_RSPAMD_QUARANTINE_AT"),
        ({"RSPAMD_URL": "127.0.0.1:11333"}, "RSPAMD_URL"),
        ({"RSPAMD_URL": "ftp://127.0.0.1:11333"}, "RSPAMD_URL"),
        ({"RSPAMD_URL": "http://"}, "RSPAMD_URL"),
        ({"RSPAMD_URL": "http://127.0.0.1:99999"}, "RSPAMD_URL"),
        ({"RSPAMD_URL": "http://127.0.0.1:11333/?x=1"}, "RSPAMD_URL"),
        ({"RSPAMD_URL": "http://user:pw@127.0.0.1:11333"}, "RSPAMD_URL"),
        ({"RSPAMD_URL": "http://127.0.0.1:11333/#top"}, "RSPAMD_URL"),
        ({"RSPAMD_TIMEOUT": "0"}, "RSPAMD_TIMEOUT"),
        ({"RSPAMD_TIMEOUT": "-3"}, "RSPAMD_TIMEOUT"),
        ({"RSPAMD_TIMEOUT": "soon"}, "RSPAMD_TIMEOUT"),
    ],
)
def test_bad_spam_settings_stop_startup_naming_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load_config(env)


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("http://127.0.0.1:11333", "http://127.0.0.1:11333"),
        (" https://rspamd.internal:11333/ ", "https://rspamd.internal:11333"),
        ("http://[::1]:11333", "http://[::1]:11333"),
    ],
)
def test_rspamd_url_is_parsed(raw, url):
    assert (
        load_config({"RSPAMD_URL": raw, "RSPAMD_TIMEOUT": "1.5"})["RSPAMD_URL"] == url
    )
