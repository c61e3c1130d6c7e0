"""formdefs: named forms from TOML, validated at start-up, and their subjects."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app import create_app
from app.formdefs import FormDef, load_forms, parse_forms
from app.spam.settings import SpamSettings
from config import ConfigError, parse_recipients

ALIASES = ("sales", "support")
DEFAULT_RATE = ((5, 60),)
SOURCE = "forms.toml"


def parse(tables: dict[str, Any]) -> dict[str, FormDef]:
    return parse_forms({"forms": tables}, ALIASES, DEFAULT_RATE, SOURCE)


def one(**table: Any) -> dict[str, Any]:
    """A [forms.contact] table: valid apart from what the caller sets."""
    return {"contact": {"recipients": ["support"], **table}}


def config(forms_file: str | None = None) -> dict[str, Any]:
    return {
        "MAIL_RECIPIENTS": parse_recipients(
            "sales=sales@example.com,support=help@example.org"
        ),
        "ALLOWED_ORIGINS": ["https://www.example.com"],
        "REDIRECT_HOSTS": ["www.example.com"],
        "RATE_LIMIT": DEFAULT_RATE,
        "FORMS_FILE": forms_file,
    }


# -- every error names the file, the form and the key -------------------------


@pytest.mark.parametrize(
    ("tables", "form", "words"),
    [
        pytest.param(one(colour="red"), "contact", ["colour", "known"], id="unknown"),
        pytest.param({"Contact": {}}, "Contact", ["id"], id="id-upper"),
        pytest.param({"has space": {}}, "has space", ["id"], id="id-space"),
        pytest.param({"-x": {}}, "-x", ["id"], id="id-dash"),
        pytest.param({"x" * 65: {}}, "x" * 65, ["id"], id="id-long"),
        pytest.param({"": {}}, "", ["id"], id="id-empty"),
        pytest.param(
            {"default": {"recipients": ["sales"]}},
            "default",
            ["default"],
            id="id-default",
        ),
        pytest.param({"contact": 3}, "contact", ["table"], id="not-a-table"),
        pytest.param({"contact": {}}, "contact", ["recipients"], id="no-recipients"),
        pytest.param(one(recipients=[]), "contact", ["recipients"], id="empty-list"),
        pytest.param(
            one(recipients=["nobody"]),
            "contact",
            ["recipients", "'nobody'", "MAIL_RECIPIENTS"],
            id="unknown-alias",
        ),
        pytest.param(
            one(recipients=["SALES"]), "contact", ["recipients"], id="alias-case"
        ),
        pytest.param(
            one(recipients=["help@example.org"]),
            "contact",
            ["recipients"],
            id="address-not-alias",
        ),
        pytest.param(
            one(recipients="support"), "contact", ["recipients", "list"], id="rcpt-str"
        ),
        pytest.param(
            one(recipients=[1]), "contact", ["recipients", "list"], id="rcpt-int"
        ),
        pytest.param(
            one(allowed_origins="https://www.example.com"),
            "contact",
            ["allowed_origins", "list"],
            id="origins-str",
        ),
        pytest.param(
            one(allowed_origins=["ftp://www.example.com"]),
            "contact",
            ["allowed_origins", "ftp://www.example.com"],
            id="origin-scheme",
        ),
        pytest.param(
            one(allowed_origins=["https://www.example.com/contact"]),
            "contact",
            ["allowed_origins"],
            id="origin-path",
        ),
        pytest.param(
            one(allowed_origins=["*"]), "contact", ["allowed_origins"], id="origin-*"
        ),
        pytest.param(
            one(allowed_origins=["null"]),
            "contact",
            ["allowed_origins"],
            id="origin-null",
        ),
        pytest.param(
            one(allowed_origins=["https://www.example.com:99999"]),
            "contact",
            ["allowed_origins"],
            id="origin-port",
        ),
        pytest.param(
            one(redirect_hosts="www.example.com"),
            "contact",
            ["redirect_hosts", "list"],
            id="hosts-str",
        ),
        pytest.param(
            one(redirect_hosts=["not a host"]),
            "contact",
            ["redirect_hosts"],
            id="host-bad",
        ),
        pytest.param(
            one(redirect_hosts=["https://www.example.com"]),
            "contact",
            ["redirect_hosts"],
            id="host-url",
        ),
        pytest.param(
            one(rate_limit="5/fortnight"), "contact", ["rate_limit"], id="rate-unit"
        ),
        pytest.param(
            one(rate_limit="0/minute"), "contact", ["rate_limit"], id="rate-zero"
        ),
        pytest.param(one(rate_limit="lots"), "contact", ["rate_limit"], id="rate-word"),
        pytest.param(one(rate_limit=5), "contact", ["rate_limit"], id="rate-int"),
        pytest.param(
            one(rate_limit=["5/minute"]), "contact", ["rate_limit"], id="rate-list"
        ),
        pytest.param(one(subject=""), "contact", ["subject"], id="subject-empty"),
        pytest.param(one(subject="   "), "contact", ["subject"], id="subject-blank"),
        pytest.param(one(subject=5), "contact", ["subject"], id="subject-int"),
        pytest.param(one(subject="a\nb"), "contact", ["subject"], id="subject-lf"),
        pytest.param(one(subject="a\rb"), "contact", ["subject"], id="subject-cr"),
        pytest.param(one(subject="s" * 151), "contact", ["subject"], id="subject-long"),
        pytest.param(one(honeypot=""), "contact", ["honeypot"], id="honeypot-empty"),
        pytest.param(one(honeypot="a\nb"), "contact", ["honeypot"], id="honeypot-lf"),
        pytest.param(one(honeypot=1), "contact", ["honeypot"], id="honeypot-int"),
        pytest.param(
            one(required="email"), "contact", ["required", "list"], id="required-str"
        ),
        pytest.param(
            one(required=[["email"]]),
            "contact",
            ["required", "list"],
            id="required-nested",
        ),
    ],
)
def test_errors_name_the_form_and_the_key(tables, form, words):
    with pytest.raises(ConfigError) as info:
        parse(tables)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: form {form!r}")
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "subject", ["a\x7fb", "a\u2028b", "a\x85b", "=?utf-8?q?a=0D=0AX:_y?= {subject}"]
)
def test_subjects_that_compose_would_refuse_are_start_up_errors(subject):
    with pytest.raises(ConfigError, match=r"form 'contact'.*subject"):
        parse(one(subject=subject))


@pytest.mark.parametrize("name", ["phone\n", "a\x00b", "", "n" * 101])
def test_required_field_names_are_checked(name):
    with pytest.raises(ConfigError, match=r"form 'contact'.*required"):
        parse(one(required=["email", name]))


@pytest.mark.parametrize(
    ("tables", "key"),
    [
        pytest.param({"contact\n": {"recipients": ["support"]}}, "id", id="id"),
        pytest.param(one(honeypot="fax\n"), "honeypot", id="honeypot"),
    ],
)
def test_a_trailing_newline_is_refused(tables, key):
    with pytest.raises(ConfigError, match=key):
        parse(tables)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"form": {}}, ["unknown top-level key", "'form'"]),
        ({"forms": {}, "version": 2}, ["unknown top-level key", "'version'"]),
        ({"forms": 3}, ["'forms' must be a table"]),
        ({"forms": ["contact"]}, ["'forms' must be a table"]),
    ],
)
def test_file_shape_errors_name_the_file(data, words):
    with pytest.raises(ConfigError) as info:
        parse_forms(data, ALIASES, DEFAULT_RATE, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: ")
    for word in words:
        assert word in message


def test_no_forms_is_fine():
    assert parse_forms({}, ALIASES, DEFAULT_RATE, SOURCE) == {}
    assert parse_forms({"forms": {}}, ALIASES, DEFAULT_RATE, SOURCE) == {}


# -- a valid file -------------------------------------------------------------


VALID = """
[forms.support]
recipients = ["support", "sales"]
allowed_origins = ["https://Help.Example.net:443/", "http://localhost:8000"]
redirect_hosts = ["Help.Example.net", "bücher.example"]
subject = "  [Website] {subject}  "
honeypot = "fax_number"
rate_limit = "5/minute; 50/day"
required = ["email", "message"]

[forms.newsletter]
recipients = ["sales"]

[forms.quiet_1]
recipients = ["sales"]
rate_limit = "off"
"""


def test_a_valid_file_round_trips(tmp_path):
    path = tmp_path / "forms.toml"
    path.write_text(VALID, encoding="utf-8")
    forms = load_forms(config(str(path)))
    assert list(forms) == ["default", "support", "newsletter", "quiet_1"]
    assert forms["support"] == FormDef(
        id="support",
        recipients=("support", "sales"),
        allowed_origins=frozenset(
            {"https://help.example.net", "http://localhost:8000"}
        ),
        redirect_hosts=frozenset({"help.example.net", "xn--bcher-kva.example"}),
        subject="[Website] {subject}",
        honeypot="fax_number",
        rate_limit=((5, 60), (50, 86400)),
        required=("email", "message"),
    )
    # Unset keys take the defaults; the rate limit is the environment's.
    assert forms["newsletter"] == FormDef(
        id="newsletter", recipients=("sales",), rate_limit=DEFAULT_RATE
    )
    assert forms["quiet_1"].rate_limit == ()


def test_the_default_form_comes_from_the_environment():
    forms = load_forms(config())
    assert forms == {
        "default": FormDef(
            id="default",
            recipients=("sales", "support"),
            allowed_origins=frozenset({"https://www.example.com"}),
            redirect_hosts=frozenset({"www.example.com"}),
            rate_limit=DEFAULT_RATE,
        )
    }


def test_an_unreadable_file_names_forms_file(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"^FORMS_FILE .*missing\.toml"):
        load_forms(config(str(missing)))


def test_a_file_that_is_not_toml_names_forms_file(tmp_path):
    path = tmp_path / "forms.toml"
    path.write_text("[forms.support\nrecipients = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^FORMS_FILE "):
        load_forms(config(str(path)))


def test_errors_in_the_file_name_its_path(tmp_path):
    path = tmp_path / "forms.toml"
    path.write_text('[forms.support]\nrecipients = ["nobody"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_forms(config(str(path)))
    assert str(info.value).startswith(f"{path}: form 'support': recipients")


def test_a_bad_forms_file_stops_start_up(tmp_path):
    path = tmp_path / "forms.toml"
    path.write_text('[forms.support]\nrecipients = ["nobody"]\n', encoding="utf-8")
    settings = {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "MAIL_RECIPIENTS": "sales=sales@example.com",
        "FORMS_FILE": str(path),
    }
    with pytest.raises(ConfigError, match=re.escape("form 'support': recipients")):
        create_app(settings)


# -- make_subject -------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "visitor", "expected"),
    [
        ("{subject}", "Engines", "Engines"),
        ("{subject}", "", "New submission (contact)"),
        ("[Website] {subject}", "Engines", "[Website] Engines"),
        ("[Website] {subject}", "", "[Website] New submission (contact)"),
        ("{subject} (via the site)", "Engines", "Engines (via the site)"),
        ("{subject} / {subject}", "A", "A / A"),
        ("[Website]", "Engines", "[Website] Engines"),
        ("[Website]", "", "[Website] New submission (contact)"),
        # Not str.format: other braces stay, and the visitor's text is inert.
        ("{name}: {subject}", "Engines", "{name}: Engines"),
        (
            "[Website] {subject}",
            "{subject} {0} {x.__class__}",
            "[Website] {subject} {0} {x.__class__}",
        ),
    ],
)
def test_make_subject(template, visitor, expected):
    form = FormDef(id="contact", recipients=("sales",), subject=template)
    assert form.make_subject(visitor) == expected


# -- [forms.<id>.spam] ----------------------------------------------------------


def test_spam_table_overrides_the_defaults_key_by_key(tmp_path):
    secret = tmp_path / "turnstile.secret"
    secret.write_text("0x4AAA-secret\n", encoding="utf-8")
    defaults = SpamSettings(max_links=4, blocked_words=("casino",), fail="closed")
    forms = parse_forms(
        {
            "forms": {
                "contact": {
                    "recipients": ["sales"],
                    "spam": {
                        "fail": "open",
                        "quarantine_at": 4,
                        "drop_at": 12.5,
                        "proof_of_work": "off",
                        "max_links": 0,
                        "blocked_patterns": [r"\bseo\s+services?\b"],
                        "blocked_email_domains": ["Spam.Example"],
                        "blocked_networks": ["198.51.100.0/24"],
                        "repeat_window": 3600,
                        "rspamd_quarantine_at": 7,
                        "rspamd_drop_at": 20,
                        "captcha": {
                            "provider": "recaptcha",
                            "secret_file": str(secret),
                            "site_key": "6Lc-site",
                            "min_score": 0.7,
                            "timeout": 2,
                            "verify_url": "http://127.0.0.1:9/verify",
                        },
                    },
                },
                "plain": {"recipients": ["sales"]},
            }
        },
        ALIASES,
        DEFAULT_RATE,
        SOURCE,
        defaults,
    )
    spam = forms["contact"].spam
    assert spam.fail == "open" and spam.proof_of_work == "off"
    assert (spam.quarantine_at, spam.drop_at, spam.max_links) == (4.0, 12.5, 0)
    assert spam.blocked_words == ("casino",)  # not in the table: the default
    assert spam.blocked_patterns[0].search("Cheap SEO  Services here")
    assert spam.blocked_email_domains == ("spam.example",)
    assert [str(n) for n in spam.blocked_networks] == ["198.51.100.0/24"]
    assert (spam.repeat_window, spam.rspamd_quarantine_at) == (3600.0, 7.0)
    captcha = spam.captcha
    assert captcha is not None
    assert (captcha.provider, captcha.secret, captcha.site_key) == (
        "recaptcha",
        "0x4AAA-secret",
        "6Lc-site",
    )
    assert (captcha.min_score, captcha.timeout) == (0.7, 2.0)
    assert "0x4AAA-secret" not in repr(spam)
    assert forms["plain"].spam == defaults


def test_the_default_form_takes_the_environments_spam_settings():
    spam = SpamSettings(max_links=7)
    forms = load_forms({**config(), "SPAM_DEFAULTS": spam})
    assert forms["default"].spam == spam


def spam(**table: Any) -> dict[str, Any]:
    return one(spam=table)


@pytest.mark.parametrize(
    ("tables", "words"),
    [
        pytest.param(one(spam="strict"), ["spam: must be a table"], id="not-table"),
        pytest.param(spam(drop=3), ["unknown key(s) ['drop']"], id="unknown"),
        pytest.param(spam(fail="half"), ["fail must be one of"], id="fail"),
        pytest.param(spam(fail=True), ["fail must be one of"], id="fail-bool"),
        pytest.param(spam(quarantine_at="5"), ["quarantine_at"], id="q-str"),
        pytest.param(spam(quarantine_at=0), ["quarantine_at"], id="q-zero"),
        pytest.param(spam(drop_at=float("inf")), ["drop_at"], id="drop-inf"),
        pytest.param(spam(drop_at=True), ["drop_at"], id="drop-bool"),
        pytest.param(spam(quarantine_at=8, drop_at=8), ["must be above"], id="order"),
        pytest.param(
            spam(rspamd_quarantine_at=9, rspamd_drop_at=3),
            ["rspamd_drop_at"],
            id="rspamd-order",
        ),
        pytest.param(spam(proof_of_work="on"), ["proof_of_work"], id="pow"),
        pytest.param(spam(max_links=-1), ["max_links"], id="links-neg"),
        pytest.param(spam(max_links=2.0), ["max_links"], id="links-float"),
        pytest.param(spam(max_links=True), ["max_links"], id="links-bool"),
        pytest.param(spam(blocked_words="casino"), ["blocked_words"], id="words"),
        pytest.param(spam(blocked_words=[""]), ["blocked_words"], id="word-empty"),
        pytest.param(
            spam(blocked_patterns=["(unclosed"]),
            ["blocked_patterns", "'(unclosed'", "not a regular expression"],
            id="regex",
        ),
        pytest.param(spam(blocked_patterns=[""]), ["blocked_patterns"], id="re-empty"),
        pytest.param(
            spam(blocked_email_domains=["user@spam.example"]),
            ["blocked_email_domains"],
            id="domain-at",
        ),
        pytest.param(
            spam(blocked_networks=["10.0.0.1/8"]),
            ["blocked_networks", "host bits"],
            id="network-host-bits",
        ),
        pytest.param(
            spam(blocked_networks=["not-an-ip"]), ["blocked_networks"], id="network"
        ),
        pytest.param(spam(repeat_window=-5), ["repeat_window"], id="repeat"),
        pytest.param(spam(captcha="turnstile"), ["captcha: must be a table"], id="c"),
        pytest.param(
            spam(captcha={"provider": "recaptcha"}),
            ["captcha", "secret"],
            id="captcha-no-secret",
        ),
        pytest.param(
            spam(captcha={"provider": "friendly", "secret": "x"}),
            ["captcha", "provider must be one of"],
            id="captcha-provider",
        ),
        pytest.param(
            spam(captcha={"provider": "hcaptcha", "secret": "x", "sitekey": "y"}),
            ["captcha", "unknown key(s) ['sitekey']"],
            id="captcha-key",
        ),
        pytest.param(
            spam(captcha={"provider": "hcaptcha", "secret": "a b"}),
            ["captcha", "secret"],
            id="captcha-secret-blank",
        ),
        pytest.param(
            spam(captcha={"provider": "hcaptcha", "secret": "x", "secret_file": "y"}),
            ["captcha", "not both"],
            id="captcha-both",
        ),
        pytest.param(
            spam(captcha={"provider": "hcaptcha", "secret_file": "/nonexistent/s"}),
            ["captcha", "cannot be read"],
            id="captcha-file",
        ),
        pytest.param(
            spam(captcha={"provider": "recaptcha", "secret": "x", "min_score": 2}),
            ["captcha", "min_score"],
            id="captcha-score",
        ),
        pytest.param(
            spam(captcha={"provider": "recaptcha", "secret": "x", "timeout": 0}),
            ["captcha", "timeout"],
            id="captcha-timeout",
        ),
        pytest.param(
            spam(captcha={"provider": "turnstile", "secret": "x", "verify_url": "x"}),
            ["captcha", "verify_url"],
            id="captcha-url",
        ),
    ],
)
def test_bad_spam_settings_name_the_form_and_key(tables, words):
    with pytest.raises(ConfigError) as info:
        parse(tables)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: form 'contact': spam")
    for word in words:
        assert word in message


# -- notifications: notify, webhooks, autoresponse ------------------------------

HOOK = "https://crm.example/hooks/forms"
SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="  # 32 bytes
TG = "tgram://123456789:ABCdefSecretToken/987654321"


def notified(**table: Any) -> dict[str, Any]:
    return one(**table)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        pytest.param(dict(notify="email"), ["notify", "list"], id="notify-str"),
        pytest.param(dict(notify=[f"webhook:{HOOK}"]), ["email"], id="no-email"),
        pytest.param(dict(notify=["email", "sms:123"]), ["notify[1]"], id="kind"),
        pytest.param(
            dict(notify=["email", "webhook:ftp://x.example/"]),
            ["notify[1]", "http"],
            id="webhook-scheme",
        ),
        pytest.param(
            dict(notify=["email", "webhook:https://u:p@x.example/"]),
            ["notify[1]", "password"],
            id="webhook-userinfo",
        ),
        pytest.param(
            dict(notify=["email", f"webhook:{HOOK}"]),
            ["webhooks", "secret"],
            id="webhook-no-secret",
        ),
        pytest.param(
            dict(
                notify=["email", f"webhook:{HOOK}"],
                webhooks={HOOK: {"secret": "hunter2"}},
            ),
            ["webhooks", "whsec_"],
            id="webhook-bad-secret",
        ),
        pytest.param(
            dict(
                notify=["email", f"webhook:{HOOK}"],
                webhooks={HOOK: {"secret": SECRET, "secret_file": "/x"}},
            ),
            ["webhooks", "one of them"],
            id="webhook-both-secrets",
        ),
        pytest.param(
            dict(webhooks={HOOK: {"secret": SECRET}}),
            ["webhooks", "not listed"],
            id="webhook-unused-secret",
        ),
        pytest.param(
            dict(notify=["email", "apprise:nosuch://x"]),
            ["notify[1]", "Apprise"],
            id="apprise-unknown",
        ),
        pytest.param(
            dict(notify=["email", f"apprise:{TG}", f"apprise:{TG}"]),
            ["twice"],
            id="apprise-twice",
        ),
        pytest.param(
            dict(notify=["email", "apprise_file:/nonexistent/urls"]),
            ["notify[1]", "cannot be read"],
            id="apprise-file-missing",
        ),
        pytest.param(
            dict(notify_full_message="yes"), ["notify_full_message"], id="full"
        ),
        pytest.param(dict(autoresponse="hi"), ["autoresponse"], id="auto-str"),
        pytest.param(
            dict(autoresponse={"subject": "Thanks"}), ["autoresponse"], id="auto-body"
        ),
        pytest.param(
            dict(autoresponse={"subject": "a\nb", "body": "x"}),
            ["autoresponse", "subject"],
            id="auto-subject-lf",
        ),
        pytest.param(
            dict(autoresponse={"subject": "Thanks", "body": "x", "cc": "a@b.c"}),
            ["autoresponse"],
            id="auto-extra",
        ),
    ],
)
def test_notify_errors_name_the_form_and_the_key(table, words):
    with pytest.raises(ConfigError) as info:
        parse(notified(**table))
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: form 'contact'")
    for word in words:
        assert word in message
    assert "SecretToken" not in message and "QUJD" not in message


def test_notify_defaults_to_email_alone():
    notify = parse(one())["contact"].notify
    assert notify.webhooks == () and notify.apprise == ()
    assert notify.autoresponse is None and not notify.full_message


def test_every_channel_parses(tmp_path):
    secret_file = tmp_path / "crm-secret"
    secret_file.write_text(SECRET + "\n")
    urls = tmp_path / "chat-urls"
    urls.write_text(f"# the team's chat\n{TG}\n")
    form = parse(
        notified(
            notify=["email", f"webhook:{HOOK}", f"apprise_file:{urls}"],
            webhooks={HOOK: {"secret_file": str(secret_file)}},
            notify_full_message=True,
            autoresponse={"subject": "Thanks", "body": "We answer soon."},
        )
    )["contact"]
    assert form.notify.webhooks[0].url == HOOK
    assert form.notify.webhooks[0].secret == SECRET
    assert form.notify.apprise == (TG,)
    assert form.notify.full_message
    assert form.notify.autoresponse.subject == "Thanks"
    assert "SecretToken" not in repr(form) and SECRET not in repr(form)


def test_the_default_form_may_set_notifications_only(tmp_path):
    path = tmp_path / "forms.toml"
    path.write_text(
        '[forms.default]\nnotify = ["email"]\n'
        '[forms.default.autoresponse]\nsubject = "Thanks"\nbody = "Soon."\n'
    )
    forms = load_forms(config(str(path)))
    default = forms["default"]
    assert default.notify.autoresponse.body == "Soon."
    assert default.allowed_origins == frozenset({"https://www.example.com"})
    with pytest.raises(ConfigError, match="may only"):
        parse({"default": {"subject": "x"}})
