"""The SMTP sender against a real aiosmtpd relay in every security mode."""

from __future__ import annotations

import smtplib
import socket
from email.headerregistry import Address

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.errors import ConfigurationError, PermanentError, TransientError
from app.message import PLAIN_ADDRESS, Envelope
from app.smtp import SMTPSettings, SMTPTransport
from app.transport import send_one

from .relay import PASSWORD, USERNAME, free_port


def settings_for(relay, **overrides) -> SMTPSettings:
    values = {
        "host": "127.0.0.1",
        "port": relay.port,
        "security": relay.mode,
        "username": USERNAME if relay.auth else None,
        "password": PASSWORD if relay.auth else None,
        "timeout": 5.0,
        "ca_file": relay.pki.ca_file,
    }
    values.update(overrides)
    return SMTPSettings(**values)


def sample(recipients=("sales@example.com",)) -> Envelope:
    data = (
        b"From: forms@formpost.test\r\nTo: sales@example.com\r\n"
        b"Subject: test\r\nMessage-ID: <1@formpost.test>\r\n\r\nbody\r\n"
    )
    return Envelope("forms@formpost.test", tuple(recipients), data, "<1@formpost.test>")


@pytest.mark.parametrize(
    ("mode", "auth", "tls_expected"),
    [
        ("starttls", True, True),
        ("tls", True, True),
        ("none", False, False),
        ("none", True, False),  # AUTH in clear text is allowed to loopback only
    ],
)
def test_each_security_mode_delivers(make_relay, mode, auth, tls_expected):
    relay = make_relay(mode=mode, auth=auth)
    result = send_one(SMTPTransport(settings_for(relay)), sample())
    assert result.refused == {}
    (got,) = relay.received
    assert got.tls is tls_expected
    assert got.login == (USERNAME if auth else None)
    assert got.mail_from == "forms@formpost.test"
    assert got.rcpt_tos == ["sales@example.com"]
    assert got.message["Message-ID"] == "<1@formpost.test>"


def test_wrong_password_is_a_configuration_error(make_relay):
    relay = make_relay()
    transport = SMTPTransport(settings_for(relay, password="wrong"))
    with pytest.raises(ConfigurationError, match="535"):
        send_one(transport, sample())
    assert relay.received == []


def test_untrusted_certificate_is_refused_before_auth(make_relay):
    relay = make_relay(trusted=False)
    with pytest.raises(ConfigurationError, match="certificate"):
        send_one(SMTPTransport(settings_for(relay)), sample())
    assert relay.received == []


def test_untrusted_certificate_on_implicit_tls(make_relay):
    relay = make_relay(mode="tls", trusted=False)
    with pytest.raises(ConfigurationError, match="certificate"):
        send_one(SMTPTransport(settings_for(relay)), sample())


def test_system_trust_store_does_not_trust_a_private_ca(make_relay):
    """Without SMTP_CA_FILE only the system CAs count: verification stays on."""
    relay = make_relay()
    with pytest.raises(ConfigurationError, match="certificate"):
        send_one(SMTPTransport(settings_for(relay, ca_file=None)), sample())


def test_missing_starttls_is_a_configuration_error(make_relay):
    relay = make_relay(mode="none")
    transport = SMTPTransport(settings_for(relay, security="starttls"))
    with pytest.raises(ConfigurationError, match="STARTTLS"):
        send_one(transport, sample())
    assert relay.received == []


def test_implicit_tls_against_plain_port_names_the_setting(make_relay):
    relay = make_relay(mode="none", auth=False)
    transport = SMTPTransport(settings_for(relay, security="tls"))
    with pytest.raises(ConfigurationError, match="SMTP_SECURITY"):
        send_one(transport, sample())


def test_credentials_never_sent_in_clear_to_a_non_loopback_name(make_relay):
    """A host name that is not literally loopback gets no password in clear text.

    The machine's own host name resolves to 127.0.0.1 on these machines, so a
    real relay answers there, yet the name itself proves nothing about where
    the bytes go: the sender must refuse before AUTH.
    """
    name = socket.gethostname()
    try:
        if socket.gethostbyname(name) != "127.0.0.1":
            pytest.skip(f"host name {name!r} does not resolve to 127.0.0.1 here")
    except OSError:
        pytest.skip(f"host name {name!r} does not resolve here")
    relay = make_relay(mode="none", auth=True)
    with pytest.raises(ConfigurationError, match="unencrypted"):
        send_one(SMTPTransport(settings_for(relay, host=name)), sample())
    assert relay.received == []


@pytest.mark.parametrize(
    ("stage", "reply", "error"),
    [
        ("RCPT", "451 4.3.0 Try again later", TransientError),
        ("RCPT", "550 5.1.1 No such user", PermanentError),
        ("RCPT", "552 5.5.3 Too many recipients", TransientError),
        ("DATA", "451 4.3.0 Local error", TransientError),
        ("DATA", "554 5.7.1 Rejected as spam", PermanentError),
        ("MAIL", "451 4.3.0 Greylisted", TransientError),
        ("MAIL", "553 5.7.1 Sender not owned by user", ConfigurationError),
    ],
)
def test_relay_replies_are_classified(relay, stage, reply, error):
    relay.reply_next(stage, reply)
    with pytest.raises(error) as caught:
        send_one(SMTPTransport(settings_for(relay)), sample())
    assert type(caught.value) is error
    assert caught.value.code == int(reply[:3])
    assert reply[4:] in caught.value.reply
    assert relay.received == []


def test_partly_refused_recipients_are_reported(relay):
    relay.refuse_recipient("gone@example.com", "550 5.1.1 No such user")
    result = send_one(
        SMTPTransport(settings_for(relay)),
        sample(recipients=("sales@example.com", "gone@example.com")),
    )
    assert result.refused == {"gone@example.com": (550, "5.1.1 No such user")}
    (got,) = relay.received
    assert got.rcpt_tos == ["sales@example.com"]


@settings(max_examples=500, deadline=None)
@given(st.from_regex(PLAIN_ADDRESS, fullmatch=True))
@example("forms@formpost.test")
@example("first.last+tag@sub.example.co.uk")
@example("o'brien@example.com")
@example("x{y}|z~@a-b.example")
def test_plain_addresses_are_quoted_as_smtplib_would(address):
    # Sent without email.utils.parseaddr: the command must not change.
    assert smtplib.quoteaddr(address) == f"<{address}>"


@pytest.mark.parametrize(
    ("address", "plain"),
    [
        ("forms@formpost.test", True),
        ('"two words"@example.com', False),
        ("Forms <forms@formpost.test>", False),
        ("a..b@example.com", False),
        (".a@example.com", False),
        ("forms@[127.0.0.1]", False),
        ("f\u00f6rms@example.com", False),
        ("forms@example.com ", False),
    ],
)
def test_only_plain_addresses_skip_smtplib_parsing(relay, address, plain):
    assert bool(PLAIN_ADDRESS.fullmatch(address)) is plain
    envelope = sample(recipients=(address,))
    envelope = Envelope(address, envelope.recipients, envelope.data, "<1@x.test>")
    if address.isascii():
        send_one(SMTPTransport(settings_for(relay)), envelope)
        (got,) = relay.received
        # What arrives is what smtplib itself would have said.
        said = smtplib.quoteaddr(address)[1:-1]
        assert (got.mail_from, got.rcpt_tos) == (said, [said])


def test_relay_down_is_transient():
    settings = SMTPSettings(host="127.0.0.1", port=free_port(), security="starttls")
    with pytest.raises(TransientError, match="network error"):
        send_one(SMTPTransport(settings), sample())


def test_session_sends_several_messages_on_one_connection(relay):
    session = SMTPTransport(settings_for(relay)).open()
    try:
        session.send(sample())
        assert session.alive()
        session.send(sample())
    finally:
        session.close()
    assert len(relay.received) == 2


def test_settings_repr_hides_the_password():
    settings = SMTPSettings(host="h", port=1, username="u", password="hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in SMTPTransport(settings).describe()


def test_from_config_reads_parsed_settings():
    cfg = {
        "SMTP_HOST": "relay.example.com",
        "SMTP_PORT": 465,
        "SMTP_SECURITY": "tls",
        "SMTP_USERNAME": "u",
        "SMTP_PASSWORD": "p",
        "SMTP_TIMEOUT": 12.5,
        "SMTP_CA_FILE": None,
        "MAIL_FROM": Address(addr_spec="a@example.com"),
    }
    s = SMTPSettings.from_config(cfg)
    assert (s.host, s.port, s.security, s.timeout) == (
        "relay.example.com",
        465,
        "tls",
        12.5,
    )
