"""Who wrote, and who sends: the visitor at the top of the text part, and
MAIL_FROM's display name arriving exactly as configured.

Messages are parsed back with the email package (default policy), as a
receiver would; the explicit examples go through the real relay.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.headerregistry import Address

import pytest
from flask import Flask
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.compose import Submission, compose
from app.message import header_text_problem
from config import ConfigError, load_config, parse_mail_from

from .helpers import deliver, post_form
from .relay import Received, Relay

SITE = "https://www.example.com"
DATE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def text_part(got: Received) -> str:
    return got.message.get_body(("plain",)).get_content()


def one_mail(app: Flask, relay: Relay) -> Received:
    assert deliver(app) == 1
    (got,) = relay.received
    return got


# -- the visitor, at the top of the text part -------------------------------------


@pytest.mark.parametrize(
    ("name", "address", "first_lines"),
    [
        (
            "Ada Lovelace",
            "ada@example.net",
            ["From: Ada Lovelace <ada@example.net>", ""],
        ),
        ("Zoë Ångström", "", ["From: Zoë Ångström", ""]),
        ("", "ada@example.net", ["From: ada@example.net", ""]),
        ("", "", []),
    ],
    ids=["name-and-address", "name-only", "address-only", "neither"],
)
def test_hosted_form_text_part_names_the_sender(
    app, client, relay, name, address, first_lines
):
    response = post_form(client, name=name, email=address, message="Hello.")
    assert response.status_code == 303
    text = text_part(one_mail(app, relay))
    assert text.splitlines() == [*first_lines, "Hello."]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"name": "Ada", "email": "ada@example.net", "message": "Hi"},
            "From: Ada <ada@example.net>\n\nname: Ada\nemail: ada@example.net\n"
            "message: Hi\n",
        ),
        (
            # Formspree's field: not shown as a field, so only the top says it.
            {"_replyto": "ada@example.net", "message": "Hi"},
            "From: ada@example.net\n\nmessage: Hi\n",
        ),
        ({"message": "Hi"}, "message: Hi\n"),
    ],
    ids=["name-and-email", "replyto-only", "anonymous"],
)
def test_cross_site_text_part_names_the_sender(make_app, relay, fields, expected):
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE))
    response = app.test_client().post(
        "/f/default", data=fields, headers={"Origin": SITE}
    )
    assert response.status_code == 303
    got = one_mail(app, relay)
    assert text_part(got) == expected
    html = got.message.get_body(("html",)).get_content()
    if expected.startswith("From: "):
        sender = expected.split("\n", 1)[0].removeprefix("From: ")
        assert f"From {sender.replace('<', '&lt;').replace('>', '&gt;')}" in html


# -- MAIL_FROM, as written -----------------------------------------------------------

EXAMPLES = [
    ("Formpost (development) <formpost@example.com>", "Formpost (development)"),
    ("Acme (Sales) <sales@example.com>", "Acme (Sales)"),
    ("Acme, Inc. <forms@example.com>", "Acme, Inc."),
    ('"Acme, Inc." <forms@example.com>', "Acme, Inc."),
    ('Say "hi" <forms@example.com>', 'Say "hi"'),
    ('"Back\\\\slash \\"quoted\\"" <forms@example.com>', 'Back\\slash "quoted"'),
    ("O'Brien & Söhne (Büro) <forms@example.com>", "O'Brien & Söhne (Büro)"),
    ('"Support <desk>" <forms@example.com>', "Support <desk>"),
    ("Formulário de contato — São Paulo <forms@example.com>", None),
    ("张伟的网站 (联系) <forms@example.com>", None),
    ("forms@example.com", ""),
]


@pytest.mark.parametrize(("raw", "expected"), EXAMPLES)
def test_mail_from_arrives_as_configured(make_app, relay, raw, expected):
    if expected is None:
        expected = raw.rsplit(" <", 1)[0]
    app = make_app(relay.env(MAIL_FROM=raw))
    assert post_form(app.test_client()).status_code == 303
    got = one_mail(app, relay)
    (sender,) = got.message["From"].addresses
    assert sender.display_name == expected
    assert sender.addr_spec == raw.rsplit("<", 1)[-1].rstrip(">")
    assert rfc2047_name(got.data) == expected


def test_development_sender_keeps_its_parentheses(tmp_path):
    cfg = load_config({"INSTANCE_PATH": str(tmp_path)})
    assert cfg["MAIL_FROM"] == Address(
        "Formpost (development)", addr_spec="formpost@example.com"
    )


@pytest.mark.parametrize(
    "raw",
    [
        "Forms\x00 <forms@example.com>",
        "Forms\x1b <forms@example.com>",
        "Forms\x85 <forms@example.com>",
        "Forms\u2028 <forms@example.com>",
        "=?utf-8?q?Forms?= <forms@example.com>",
        "A <a@example.com>, B <b@example.com>",
        "Stray > bracket <forms@example.com>",
        'One " quote <forms@example.com>',
        "Forms <forms@example.com> trailing",
        "Forms <forms example.com>",
        "Forms <forms@example.com, x@example.com>",
        "Forms <forms@example>",
        "Forms <>",
        "Forms",
    ],
)
def test_mail_from_refused(raw):
    with pytest.raises(ConfigError, match="MAIL_FROM"):
        parse_mail_from(raw)


def rfc2047_name(data: bytes) -> str:
    """The From display name decoded strictly by RFC 2047, as mail readers do.

    Python's address parser keeps the folding space between two encoded
    words of one long name (see tests/test_compose.py); readers drop it.
    """
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ")
    value = next(line[6:] for line in head.split("\r\n") if line.startswith("From: "))
    phrase = value.rsplit(" <", 1)[0] if "<" in value else ""
    if phrase.startswith('"'):
        inner = phrase[1:-1]
        out, escaped = [], False
        for ch in inner:
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return str(make_header(decode_header(phrase)))


def sent_from(mail_from: Address) -> tuple[bytes, Address]:
    """Compose a message from `mail_from`; return its bytes and parsed From."""
    envelope = compose(
        Submission(
            recipient=Address("", addr_spec="sales@example.com"),
            subject="Hi",
            message="Hello",
        ),
        mail_from=mail_from,
        message_id="<1@example.com>",
        date=DATE,
    )
    parsed = email.message_from_bytes(envelope.data, policy=email.policy.default)
    (sender,) = parsed["From"].addresses
    return envelope.data, sender


display_names = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=60,
).filter(lambda n: n == n.strip())


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300, deadline=None)
@given(name=display_names, quote=st.booleans())
def test_any_display_name_round_trips(name, quote):
    """Config parse -> compose -> parse the From back: the same name and address.

    Written in quotes, any name works; bare, any name without <, > or a lone
    double quote does. Control characters and encoded words are refused.
    """
    if not quote:
        assume(not any(c in name for c in "<>") and name.count('"') != 1)
        assume(not (name.startswith('"') and name.endswith('"')))
    raw = f"{quoted(name) if quote else name} <Forms@Example.COM>"
    if header_text_problem(name):
        with pytest.raises(ConfigError, match="MAIL_FROM"):
            parse_mail_from(raw)
        return
    configured = parse_mail_from(raw)
    assert configured.display_name == name
    assert configured.addr_spec == "Forms@example.com"
    data, sender = sent_from(configured)
    assert sender.addr_spec == "Forms@example.com"
    assert rfc2047_name(data) == name
    if name.isascii() or len(name.encode()) <= 45:
        # One encoded word at most: Python's own parser agrees too.
        assert sender.display_name == name


@pytest.fixture
def app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    return make_app(relay.env())
