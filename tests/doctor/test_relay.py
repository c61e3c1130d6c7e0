"""The relay checks: connect, TLS mode, certificate, features, AUTH, envelope."""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
from collections.abc import Iterator

import pytest

from app.doctor import FAIL, PASS, SKIP, WARN, provider_hint
from app.ledger import SCHEMA_VERSION

from ..relay import PASSWORD, free_port
from .reports import (
    DKIM_NAME,
    DNS_PASS,
    LOCAL_CHECKS,
    WRONG_PASSWORD,
    assert_fix,
    assert_secret_kept,
    check,
    no_socket_left_open,
    relay_checks,
    run_doctor,
    summary,
)

# -- everything right --------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls", "none"])
def test_everything_right_passes_and_sends_nothing(
    make_relay, make_app, local_dns, dkim_env, mode
):
    relay = make_relay(mode=mode)
    app = make_app(relay.env(**dkim_env))
    # An implicit-TLS port says nothing until the handshake: the probe waits
    # out its timeout, so keep it short there.
    with no_socket_left_open():
        report = run_doctor(app, local_dns.resolver(), timeout=1.0)

    assert summary(report) == [
        *LOCAL_CHECKS,
        ("backlog", PASS),
        *relay_checks(mode),
        *DNS_PASS,
        ("dkim", PASS),
    ]
    assert not report.failed
    assert check(report, "database").detail == "reachable (sqlite)"
    assert check(report, "schema").detail == f"current (version {SCHEMA_VERSION})"
    assert check(report, "backlog").detail == "0 undelivered"
    assert check(report, "tls mode").detail == f"{mode} matches what the port speaks"
    if mode != "none":
        assert re.fullmatch(
            r"verified, expires in \d+ days", check(report, "certificate").detail
        )
    assert "AUTH" in check(report, "features").detail
    assert check(report, "auth").detail == "logged in as formpost"
    assert check(report, "mail from").detail == "<forms@formpost.test> accepted"
    assert check(report, "rcpt support").detail == "<help@example.org> accepted"
    assert check(report, "spf").detail == "formpost.test: v=spf1 ip4:192.0.2.10 -all"
    assert "v=DMARC1; p=quarantine" in check(report, "dmarc").detail
    assert check(report, "mx example.org").detail == "mx1.example.org, mx2.example.org"
    assert check(report, "dkim").detail == f"{DKIM_NAME} matches DKIM_PRIVATE_KEY_FILE"
    assert_secret_kept(report, PASSWORD)
    # The relay was asked (EHLO seen) but got no DATA: RSET, then QUIT.
    assert relay.connections >= 1
    assert relay.received == []


def test_development_mode_skips_the_relay(make_app, local_dns):
    app = make_app({})  # no SMTP_HOST: mail goes to a local Maildir
    report = run_doctor(app, local_dns.resolver())

    relay = check(report, "relay")
    assert relay.status == SKIP
    assert "development" in relay.detail
    assert_fix(relay, "SMTP_HOST")
    names = [c.name for c in report.checks]
    assert "connect" not in names and "auth" not in names
    assert not report.failed
    # DNS is still checked, for the development defaults.
    assert check(report, "mx example.com").status == PASS
    assert check(report, "spf").status == WARN  # nothing published for example.com


# -- TLS ----------------------------------------------------------------------


def test_tls_setting_against_a_starttls_port(relay, make_app, local_dns):
    app = make_app(relay.env(SMTP_SECURITY="tls"))
    report = run_doctor(app, local_dns.resolver())

    assert summary(report) == [
        *LOCAL_CHECKS,
        ("backlog", PASS),
        ("connect", PASS),
        ("tls mode", FAIL),
        *DNS_PASS,
    ]
    mode = check(report, "tls mode")
    assert "greets in plain text" in mode.detail and "220" in mode.detail
    assert_fix(mode, "SMTP_SECURITY=starttls")
    assert "auth" not in [c.name for c in report.checks]


def test_starttls_setting_against_an_implicit_tls_port(make_relay, make_app, local_dns):
    relay = make_relay(mode="tls")
    app = make_app(relay.env(SMTP_SECURITY="starttls"))
    report = run_doctor(app, local_dns.resolver(), timeout=1.0)

    mode = check(report, "tls mode")
    assert mode.status == FAIL
    assert "SMTP_SECURITY=starttls" in mode.detail
    assert "expects a TLS handshake" in mode.detail
    assert_fix(mode, "SMTP_SECURITY=tls")
    assert [c.name for c in report.checks if c.status == FAIL] == ["tls mode"]


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_untrusted_certificate(make_relay, make_app, local_dns, mode):
    relay = make_relay(mode=mode, trusted=False)
    app = make_app(relay.env())
    report = run_doctor(app, local_dns.resolver(), timeout=1.0)

    cert = check(report, "certificate")
    assert cert.status == FAIL
    assert cert.detail.startswith("not trusted: ")
    assert "certificate" in cert.detail or "issuer" in cert.detail
    assert_fix(cert, "SMTP_CA_FILE")
    names = [c.name for c in report.checks]
    assert "auth" not in names, "the password must not follow an untrusted handshake"
    assert relay.received == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_expired_certificate(dated_relay, make_app, local_dns, mode):
    now = dt.datetime.now(dt.UTC)
    relay = dated_relay(
        mode,
        not_before=now - dt.timedelta(days=90),
        not_after=now - dt.timedelta(days=1),
    )
    app = make_app(relay.env())
    report = run_doctor(app, local_dns.resolver(), timeout=1.0)

    cert = check(report, "certificate")
    assert cert.status == FAIL
    assert "expired" in cert.detail
    assert_fix(cert, "expired", "SMTP_CA_FILE")
    assert "auth" not in [c.name for c in report.checks]


@pytest.mark.parametrize(
    ("days", "status"), [(5, WARN), (13, WARN), (15, PASS)], ids=["5d", "13d", "15d"]
)
def test_certificate_expiring_soon_warns(
    dated_relay, make_app, local_dns, days, status
):
    not_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=days, hours=1)
    relay = dated_relay("starttls", not_after=not_after)
    app = make_app(relay.env())
    report = run_doctor(app, local_dns.resolver())

    cert = check(report, "certificate")
    assert cert.status == status
    assert f"expires in {days} days" in cert.detail
    if status == WARN:
        assert cert.detail.startswith("valid, but")
        assert_fix(cert, "operator")
    # Still usable: the session went on to log in and check the envelope.
    assert check(report, "auth").status == PASS
    assert check(report, "rcpt support").status == PASS
    assert not report.failed


def test_relay_without_starttls(make_relay, make_app, local_dns):
    relay = make_relay(mode="none")
    app = make_app(relay.env(SMTP_SECURITY="starttls"))
    report = run_doctor(app, local_dns.resolver())

    assert summary(report) == [
        *LOCAL_CHECKS,
        ("backlog", PASS),
        ("connect", PASS),
        ("tls mode", PASS),
        ("starttls", FAIL),
        *DNS_PASS,
    ]
    starttls = check(report, "starttls")
    assert "does not offer STARTTLS" in starttls.detail
    assert_fix(starttls, "SMTP_SECURITY=tls")
    names = [c.name for c in report.checks]
    assert "auth" not in names and "features" not in names  # no password in clear


def test_relay_without_starttls_is_hung_up_on(make_relay, make_app, local_dns):
    relay = make_relay(mode="none")
    app = make_app(relay.env(SMTP_SECURITY="starttls"))
    with no_socket_left_open():
        report = run_doctor(app, local_dns.resolver())
    assert check(report, "starttls").status == FAIL


@pytest.fixture
def hang_up_port() -> Iterator[int]:
    """A loopback port that accepts each connection and closes it at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, name="hang-up", daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(timeout=5)
    listener.close()


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_relay_that_hangs_up_at_once(
    relay, make_app, local_dns, hang_up_port, security
):
    app = make_app(relay.env(SMTP_PORT=str(hang_up_port), SMTP_SECURITY=security))
    report = run_doctor(app, local_dns.resolver(), timeout=1.0)

    assert check(report, "connect").status == PASS
    failures = [c for c in report.checks if c.status == FAIL]
    assert failures
    for found in failures:
        assert "TLS handshake" not in found.detail, found
        assert_fix(found)
    assert ("tls mode", PASS) not in summary(report)


# -- AUTH ---------------------------------------------------------------------


def test_wrong_password(relay, make_app, local_dns):
    app = make_app(relay.env(SMTP_PASSWORD=WRONG_PASSWORD))
    report = run_doctor(app, local_dns.resolver())

    auth = check(report, "auth")
    assert auth.status == FAIL
    assert auth.detail.startswith("refused: 535 ")
    assert_fix(auth, "SMTP_USERNAME", "SMTP_PASSWORD")
    assert_secret_kept(report, WRONG_PASSWORD, PASSWORD)
    names = [c.name for c in report.checks]
    assert "mail from" not in names  # stops at the failed login
    assert [c.name for c in report.checks if c.status == FAIL] == ["auth"]


def test_no_auth_offered_where_a_username_is_set(relay, make_app, local_dns):
    # SMTP_SECURITY=none on a STARTTLS port: the relay offers AUTH only after
    # STARTTLS, so the plain session sees none.
    app = make_app(relay.env(SMTP_SECURITY="none"))
    report = run_doctor(app, local_dns.resolver())

    features = check(report, "features")
    assert features.status == FAIL
    assert features.detail.startswith("no AUTH")
    assert_fix(features, "SMTP_USERNAME")
    assert check(report, "auth").status == FAIL
    assert_secret_kept(report, PASSWORD)


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("smtp.gmail.com", ["app password", "2-Step Verification"]),
        ("SMTP.Gmail.COM", ["app password"]),
        ("smtp-relay.google.com", ["app password"]),
        ("smtp.126.com", ["授权码", "not the login password"]),
        ("smtp.163.com", ["授权码"]),
        ("smtp.qq.com", ["授权码"]),
        ("smtp.exmail.qq.com", ["授权码"]),
        ("smtp.yeah.net", ["授权码"]),
        ("smtp.office365.com", ["SMTP AUTH"]),
        ("smtp-mail.outlook.com", ["SMTP AUTH"]),
        ("email-smtp.eu-west-1.amazonaws.com", ["SES", "not IAM access keys"]),
        ("mail.example.net", ["SMTP_USERNAME", "SMTP_PASSWORD_FILE"]),
    ],
)
def test_provider_hint(host, words):
    hint = provider_hint(host)
    for word in words:
        assert word in hint


def test_provider_hints_differ():
    hosts = [
        "smtp.gmail.com",
        "smtp.126.com",
        "smtp.office365.com",
        "email-smtp.us-east-1.amazonaws.com",
        "mail.example.net",
    ]
    assert len({provider_hint(h) for h in hosts}) == len(hosts)


# -- the envelope -------------------------------------------------------------


def test_refused_recipient(relay, make_app, local_dns):
    relay.refuse_recipient(
        "help@example.org", "550 5.1.1 <help@example.org>: Recipient address rejected"
    )
    app = make_app(relay.env())
    report = run_doctor(app, local_dns.resolver())

    assert check(report, "mail from").status == PASS
    assert check(report, "rcpt sales").status == PASS
    support = check(report, "rcpt support")
    assert support.status == FAIL
    assert support.detail.startswith("<help@example.org> refused: 550 5.1.1")
    assert_fix(support, "MAIL_RECIPIENTS")
    assert [c.name for c in report.checks if c.status == FAIL] == ["rcpt support"]
    assert relay.received == []  # RSET before DATA: nothing was sent


def test_refused_mail_from(relay, make_app, local_dns):
    relay.reply_next("MAIL", "553 5.7.1 not yours")
    app = make_app(relay.env())
    report = run_doctor(app, local_dns.resolver())

    mail_from = check(report, "mail from")
    assert mail_from.status == FAIL
    assert mail_from.detail == "<forms@formpost.test> refused: 553 5.7.1 not yours"
    assert_fix(mail_from, "MAIL_FROM")
    names = [c.name for c in report.checks]
    assert "rcpt sales" not in names and "rcpt support" not in names
    assert relay.received == []


# -- reaching the relay -------------------------------------------------------


def test_nothing_listening(relay, make_app, local_dns):
    port = free_port()
    app = make_app(relay.env(SMTP_PORT=str(port)))
    report = run_doctor(app, local_dns.resolver())

    connect = check(report, "connect")
    assert connect.status == FAIL
    assert connect.detail.startswith(f"127.0.0.1:{port}: ")
    assert "refused" in connect.detail.lower()
    assert_fix(connect, "SMTP_HOST", "SMTP_PORT")
    assert "tls mode" not in [c.name for c in report.checks]
    # The rest of the report is still there.
    assert check(report, "spf").status == PASS


def test_port_25_hint(relay, make_app, local_dns):
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", 25)) == 0:
            pytest.skip("something listens on 127.0.0.1:25 here")
    app = make_app(relay.env(SMTP_PORT="25"))
    report = run_doctor(app, local_dns.resolver())

    connect = check(report, "connect")
    assert connect.status == FAIL
    assert_fix(connect, "port 25", "SMTP_PORT=465", "SMTP_SECURITY=tls", "587")


# -- the database --------------------------------------------------------------
