"""`flask --app wsgi doctor`: every check seen passing and failing, for real.

The relays are aiosmtpd on loopback (tests/relay.py) in each misconfiguration;
DNS is a dnslib server on a loopback UDP port answering from a small zone, and
the doctor's resolver asks nothing else. No traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import gc
import re
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from dnslib import MX, NS, A
from flask import Flask

from app.doctor import FAIL, PASS, SKIP, WARN, Check, Doctor, Report, provider_hint
from app.ledger import SCHEMA_VERSION

from .dns_server import (
    LocalDNS,
    free_udp_port,
    key_pair,
    loopback_resolver,
    start_dns,
    txt_record,
)
from .fakeclock import FakeClock
from .helpers import deliver, post_form
from .processes import REPO, flask_cmd, server_env, start, stop, wait_until
from .relay import PASSWORD, PKI, Relay, free_port

TIMEOUT = 2.0  # per check; everything here answers on loopback in milliseconds
MAIL_DOMAIN = "formpost.test"  # the domain of relay.env()'s MAIL_FROM
DKIM_NAME = f"mail._domainkey.{MAIL_DOMAIN}"
WRONG_PASSWORD = "Tr0ub4dor&3-not-the-one"


# -- DKIM keys ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, str]:
    """The key Formpost signs with."""
    return key_pair()


@pytest.fixture(scope="module")
def other_key() -> tuple[bytes, str]:
    """A key nobody configured: published by mistake."""
    return key_pair()


@pytest.fixture
def dkim_env(tmp_path, dkim_key) -> dict[str, str]:
    """DKIM settings for create_app(), the private key in a file."""
    path = tmp_path / "dkim.pem"
    path.write_bytes(dkim_key[0])
    return {
        "DKIM_DOMAIN": MAIL_DOMAIN,
        "DKIM_SELECTOR": "mail",
        "DKIM_PRIVATE_KEY_FILE": str(path),
    }


# -- a DNS server on loopback ------------------------------------------------


@pytest.fixture
def make_dns(dkim_key) -> Iterator[Callable[..., LocalDNS]]:
    """Start DNS servers publishing what a test asks for; stopped afterwards.

    By default everything a correct set-up has: the root's NS (the doctor's
    "is there DNS at all" probe), SPF and DMARC for formpost.test, MX for the
    recipients' domains and the DKIM key Formpost signs with. `dkim` is the
    p= value to publish (None: no DKIM record); `servfail` names whose
    queries fail; `null_mx` domains that publish "MX 0 ." (RFC 7505).
    """
    started: list[LocalDNS] = []

    def factory(
        *,
        root: bool = True,
        spf: bool = True,
        dmarc: bool = True,
        mx: bool = True,
        dkim: str | None = dkim_key[1],
        servfail: tuple[str, ...] = (),
        null_mx: tuple[str, ...] = (),
    ) -> LocalDNS:
        records: dict[tuple[str, str], list] = {
            # Present whatever the options: the doctor must pick the right one.
            (MAIL_DOMAIN, "TXT"): [txt_record("google-site-verification=abc123")],
            (MAIL_DOMAIN, "A"): [A("192.0.2.10")],
            ("example.com", "A"): [A("192.0.2.20")],
        }
        if root:
            records[("", "NS")] = [NS("a.root-servers.net."), NS("b.root-servers.net.")]
        if spf:
            records[(MAIL_DOMAIN, "TXT")].append(
                txt_record("v=spf1 ip4:192.0.2.10 -all")
            )
        if dmarc:
            records[(f"_dmarc.{MAIL_DOMAIN}", "TXT")] = [
                txt_record(f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{MAIL_DOMAIN}")
            ]
        if mx:
            records[("example.com", "MX")] = [MX("mx1.example.com.", 10)]
            records[("example.org", "MX")] = [
                MX("mx2.example.org.", 20),
                MX("mx1.example.org.", 10),
            ]
        for domain in null_mx:
            records[(domain, "MX")] = [MX(".", 0)]
        if dkim is not None:
            records[(DKIM_NAME, "TXT")] = [txt_record(f"v=DKIM1; k=rsa; p={dkim}")]
        local = start_dns(records, servfail)
        started.append(local)
        return local

    yield factory
    for local in started:
        local.stop()


@pytest.fixture
def local_dns(make_dns) -> LocalDNS:
    """DNS with every record of a correct set-up."""
    return make_dns()


# -- relays with a chosen certificate lifetime -------------------------------


@dataclass
class DatedPKI(PKI):
    """The trusted test CA, issuing the relay a certificate with set dates."""

    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    def server_context(self, trusted: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(
            "127.0.0.1",
            "localhost",
            not_before=self.not_before,
            not_after=self.not_after,
        ).configure_cert(ctx)
        return ctx


@pytest.fixture
def dated_relay(pki: PKI) -> Iterator[Callable[..., Relay]]:
    """Start relays whose (trusted) certificate is valid between two dates."""
    started: list[Relay] = []

    def factory(mode: str, not_after: dt.datetime, not_before=None) -> Relay:
        dated = DatedPKI(
            ca=pki.ca,
            ca_file=pki.ca_file,
            untrusted_ca=pki.untrusted_ca,
            not_before=not_before,
            not_after=not_after,
        )
        relay = Relay(dated, mode=mode).start()
        started.append(relay)
        return relay

    yield factory
    for relay in started:
        relay.stop()


# -- helpers -----------------------------------------------------------------


def run_doctor(app: Flask, resolver, timeout: float = TIMEOUT) -> Report:
    """Run every check in-process, asking only the given (loopback) resolver."""
    return Doctor(app, timeout=timeout, resolver=resolver).run()


def summary(report: Report) -> list[tuple[str, str]]:
    """(name, status) of each check, in the order reported."""
    return [(c.name, c.status) for c in report.checks]


def check(report: Report, name: str) -> Check:
    """The one check called `name`."""
    (found,) = [c for c in report.checks if c.name == name]
    return found


def assert_fix(found: Check, *words: str) -> None:
    """The check says what to change: a fix naming each of `words`."""
    assert found.fix, f"{found.name}: {found.status} without a fix"
    for word in words:
        assert word in found.fix, f"{word!r} not in the fix {found.fix!r}"


def assert_secret_kept(report: Report, *secrets: str) -> None:
    for c in report.checks:
        for secret in secrets:
            assert secret not in c.detail and secret not in c.fix, c


@contextmanager
def no_socket_left_open() -> Iterator[None]:
    """Fail if a socket opened in the block is dropped without being closed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not [leak for leak in leaks if "socket" in leak], leaks


LOCAL_CHECKS = [("configuration", PASS), ("database", PASS), ("schema", PASS)]
DNS_PASS = [
    ("spf", PASS),
    ("dmarc", PASS),
    ("mx example.com", PASS),
    ("mx example.org", PASS),
]


def relay_checks(mode: str) -> list[tuple[str, str]]:
    """What a relay that is configured right reports, in order."""
    tls = [("certificate", PASS)] if mode != "none" else []
    return [
        ("connect", PASS),
        ("tls mode", PASS),
        *tls,
        ("features", PASS),
        ("auth", PASS),
        ("mail from", PASS),
        ("rcpt sales", PASS),
        ("rcpt support", PASS),
    ]


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


@pytest.fixture
def db_app(make_app, database_url) -> Iterator[Flask]:
    """A development-mode app on SQLite and on PostgreSQL; its pool closed after."""
    app = make_app({"DATABASE_URL": database_url})
    yield app
    app.extensions["formpost"].ledger.engine.dispose()


def test_database_unreachable(make_app, tmp_path, local_dns):
    path = tmp_path / "ledger.db"
    app = make_app({"DATABASE_URL": f"sqlite:///{path}"})
    assert check(run_doctor(app, local_dns.resolver()), "database").status == PASS
    for leftover in tmp_path.glob("ledger.db*"):
        leftover.unlink()
    path.mkdir()  # a directory where the database file was
    app.extensions["formpost"].ledger.engine.dispose()

    report = run_doctor(app, local_dns.resolver())

    database = check(report, "database")
    assert database.status == FAIL
    assert database.detail.startswith("not reachable: ")
    assert_fix(database, "DATABASE_URL")
    names = [c.name for c in report.checks]
    assert "schema" not in names and "backlog" not in names
    # The other checks still run.
    assert check(report, "relay").status == SKIP
    assert check(report, "mx example.com").status == PASS


@pytest.mark.parametrize(
    ("statement", "version"),
    [("DELETE FROM formpost_schema", 0), ("UPDATE formpost_schema SET version = 1", 1)],
    ids=["no-version", "version-1"],
)
def test_schema_older_than_the_code(db_app, local_dns, statement, version):
    app = db_app
    engine = app.extensions["formpost"].ledger.engine
    with engine.begin() as conn:
        conn.exec_driver_sql(statement)

    report = run_doctor(app, local_dns.resolver())

    schema = check(report, "schema")
    assert schema.status == FAIL
    assert schema.detail == f"version {version}, this Formpost expects {SCHEMA_VERSION}"
    assert_fix(schema, "worker")
    assert check(report, "database").status == PASS


def test_schema_newer_than_the_code(make_app, tmp_path, local_dns):
    app = make_app({"DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db"})
    engine = app.extensions["formpost"].ledger.engine
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE formpost_schema SET version = {SCHEMA_VERSION + 1}"
        )

    schema = check(run_doctor(app, local_dns.resolver()), "schema")
    assert schema.status == FAIL
    assert_fix(schema, "upgrade Formpost")


def test_old_backlog_warns(db_app, local_dns):
    app = db_app
    clock = FakeClock()
    app.extensions["formpost"].ledger.clock = clock
    assert post_form(app.test_client(), recipient="demo").status_code == 303

    clock.advance(3599)
    backlog = check(run_doctor(app, local_dns.resolver()), "backlog")
    assert (backlog.status, backlog.detail) == (PASS, "1 undelivered, oldest 3599 s")

    clock.advance(2)
    report = run_doctor(app, local_dns.resolver())
    backlog = check(report, "backlog")
    assert backlog.status == WARN
    assert backlog.detail == "1 undelivered, oldest 3601 s"
    assert_fix(backlog, "worker", "outbox list")
    assert not report.failed  # a warning, not a failure


# -- DNS -----------------------------------------------------------------------


def dns_checks(report: Report) -> list[tuple[str, str]]:
    names = ("spf", "dmarc", "mx ", "dkim", "dns")
    return [(c.name, c.status) for c in report.checks if c.name.startswith(names)]


def test_dns_records_missing(relay, make_app, make_dns, dkim_env):
    server = make_dns(spf=False, dmarc=False, mx=False, dkim=None)
    app = make_app(relay.env(**dkim_env))
    report = run_doctor(app, server.resolver())

    assert dns_checks(report) == [
        ("spf", WARN),
        ("dmarc", WARN),
        ("mx example.com", FAIL),
        ("mx example.org", FAIL),
        ("dkim", FAIL),
    ]
    spf = check(report, "spf")
    assert spf.detail == "formpost.test has no SPF record"
    assert_fix(spf, "formpost.test", "v=spf1")
    assert_fix(check(report, "dmarc"), "v=DMARC1", "dmarc@formpost.test")
    mx = check(report, "mx example.org")
    assert "example.org has no MX record" in mx.detail
    assert_fix(mx, "MAIL_RECIPIENTS")
    dkim = check(report, "dkim")
    assert dkim.detail == f"no key published at {DKIM_NAME}"
    assert_fix(dkim, DKIM_NAME, "v=DKIM1")


def test_dkim_record_with_another_key(relay, make_app, make_dns, dkim_env, other_key):
    server = make_dns(dkim=other_key[1])
    app = make_app(relay.env(**dkim_env))
    report = run_doctor(app, server.resolver())

    dkim = check(report, "dkim")
    assert dkim.status == FAIL
    assert "different key than DKIM_PRIVATE_KEY_FILE" in dkim.detail
    assert_fix(dkim, "public half")
    assert dns_checks(report)[:-1] == DNS_PASS


def test_dkim_not_configured_is_not_checked(relay, make_app, make_dns):
    server = make_dns(dkim=None)
    app = make_app(relay.env())
    report = run_doctor(app, server.resolver())

    assert dns_checks(report) == DNS_PASS
    assert not report.failed


def test_no_dns_reachable_skips(relay, make_app, dkim_env):
    app = make_app(relay.env(**dkim_env))
    resolver = loopback_resolver(free_udp_port())  # nothing answers there
    started = time.monotonic()
    report = run_doctor(app, resolver, timeout=1.0)

    assert time.monotonic() - started < 10
    assert dns_checks(report) == [("dns", SKIP)]
    assert "no DNS" in check(report, "dns").detail
    assert check(report, "auth").status == PASS  # the relay checks did run
    assert not report.failed


def test_resolver_without_the_root_skips(relay, make_app, make_dns):
    # A stub on a closed network: it answers, but knows nothing of the root.
    server = make_dns(root=False)
    app = make_app(relay.env())
    report = run_doctor(app, server.resolver())

    assert dns_checks(report) == [("dns", SKIP)]
    assert "root name servers" in check(report, "dns").detail


def test_a_failing_dns_query_is_reported_not_raised(relay, make_app, make_dns):
    server = make_dns(servfail=(MAIL_DOMAIN,))  # e.g. a lame delegation
    app = make_app(relay.env())
    report = run_doctor(app, server.resolver())

    spf = check(report, "spf")
    assert spf.status in (WARN, FAIL)
    assert spf.fix
    # The checks after it still ran.
    assert check(report, "mx example.com").status == PASS


def test_null_mx_fails(relay, make_app, make_dns):
    server = make_dns(null_mx=("example.org",))
    app = make_app(relay.env())
    report = run_doctor(app, server.resolver())

    assert check(report, "mx example.com").status == PASS
    assert check(report, "mx example.org").status == FAIL


# -- --send-test ---------------------------------------------------------------


@contextmanager
def delivering(app: Flask) -> Iterator[None]:
    """A delivery worker for the app's queue, in a thread, for the block."""
    done = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        while not done.is_set():
            try:
                deliver(app)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                return
            done.wait(0.05)

    thread = threading.Thread(target=loop, name="test-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=15)
    assert not errors, errors


def test_send_test_with_a_worker(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    with delivering(app):
        doctor.send_test("sales", wait=10)

    (sent,) = doctor.report.checks
    assert (sent.name, sent.status) == ("send test", PASS)
    (row,) = app.extensions["formpost"].ledger.rows()
    assert (row.form_id, row.recipient_alias, row.state) == ("doctor", "sales", "sent")
    assert sent.detail.startswith(f"receipt {row.receipt}: 250")
    (got,) = relay.received
    assert got.rcpt_tos == ["sales@example.com"]
    assert got.message["Subject"] == "Formpost test message"
    assert got.mail_from == "forms@formpost.test"


def test_send_test_without_a_worker(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    started = time.monotonic()
    doctor.send_test("support", wait=1)

    assert time.monotonic() - started >= 1
    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert re.fullmatch(r"receipt \S+ still pending after 1 s", sent.detail)
    assert_fix(sent, "worker")
    assert relay.received == []
    (row,) = app.extensions["formpost"].ledger.rows()
    assert row.state == "pending"  # queued: a worker started later sends it


def test_send_test_refused_by_the_relay(relay, make_app, local_dns):
    relay.refuse_recipient("sales@example.com", "550 5.1.1 no such user")
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    with delivering(app):
        doctor.send_test("sales", wait=10)

    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert "550" in sent.detail and "no such user" in sent.detail
    assert sent.fix  # says what to do
    assert relay.received == []


def test_send_test_to_an_unknown_alias(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    doctor.send_test("nobody", wait=1)

    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert "'nobody'" in sent.detail
    assert_fix(sent, "sales", "support")
    assert app.extensions["formpost"].ledger.rows() == []  # nothing queued


def test_send_test_with_no_wait(relay, make_app, local_dns):
    app = make_app(relay.env())
    doctor = Doctor(app, timeout=TIMEOUT, resolver=local_dns.resolver())
    doctor.send_test("sales", wait=0)

    (sent,) = doctor.report.checks
    assert sent.status == FAIL
    assert "still pending" in sent.detail
    assert_fix(sent, "worker")


# -- the command ---------------------------------------------------------------

LINE_RE = re.compile(r"^(PASS|WARN|FAIL|SKIP)  (.{14}) (.*)$")
FIX_RE = re.compile(r"^ {6} {14} fix: \S")
SUMMARY_RE = re.compile(r"^(\d+) failed, (\d+) checks$")


@dataclass
class Output:
    code: int
    stdout: str
    stderr: str
    checks: list[tuple[str, str, str]]  # (mark, name, detail)
    fixes: dict[str, str]  # check name -> its fix line


def parse(proc: subprocess.CompletedProcess) -> Output:
    """Split the doctor's report into check lines and fix lines, strictly."""
    checks: list[tuple[str, str, str]] = []
    fixes: dict[str, str] = {}
    lines = proc.stdout.splitlines()
    assert lines[-2:-1] == [""], proc.stdout
    match = SUMMARY_RE.match(lines[-1])
    assert match, proc.stdout
    for line in lines[:-2]:
        if found := LINE_RE.match(line):
            mark, name, detail = found.groups()
            checks.append((mark, name.rstrip(), detail))
        else:
            assert FIX_RE.match(line), f"unexpected line {line!r}"
            assert checks and checks[-1][0] in ("WARN", "FAIL"), line
            fixes[checks[-1][1]] = line.split("fix: ", 1)[1]
    failed, total = map(int, match.groups())
    assert total == len(checks)
    assert failed == sum(mark == "FAIL" for mark, _, _ in checks)
    # Every failure carries its fix on the line below it.
    for mark, name, _ in checks:
        if mark == "FAIL":
            assert name in fixes, f"FAIL {name} without a fix line"
    return Output(proc.returncode, proc.stdout, proc.stderr, checks, fixes)


def run_command(
    env: dict[str, str], local_dns: LocalDNS, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        flask_cmd(
            "doctor", "--dns-server", f"127.0.0.1:{local_dns.port}", "--timeout", "3"
        )
        + list(args),
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def command_env(tmp_path) -> Callable[..., dict[str, str]]:
    """The subprocess environment: no inherited mail settings, a tmp ledger."""

    def factory(relay: Relay, **overrides: str) -> dict[str, str]:
        env = server_env(tmp_path / "instance")
        env.update(relay.env(DATABASE_URL=f"sqlite:///{tmp_path}/cli.db", **overrides))
        return env

    return factory


@pytest.mark.slow
def test_command_exits_0_when_nothing_fails(relay, make_dns, command_env, dkim_env):
    server = make_dns(dmarc=False)  # a warning does not fail the run
    proc = run_command(command_env(relay, **dkim_env), server)

    out = parse(proc)
    assert out.code == 0, proc.stdout + proc.stderr
    assert [mark for mark, _, _ in out.checks].count("WARN") == 1
    assert ("WARN", "dmarc") in [(mark, name) for mark, name, _ in out.checks]
    assert "v=DMARC1" in out.fixes["dmarc"]
    assert {name for mark, name, _ in out.checks if mark == "PASS"} >= {
        "configuration",
        "auth",
        "rcpt sales",
        "dkim",
    }
    assert out.stdout.endswith("\n0 failed, 17 checks\n")
    assert PASSWORD not in proc.stdout + proc.stderr
    assert relay.received == []


@pytest.mark.slow
def test_command_exits_1_on_a_failure(relay, local_dns, command_env):
    proc = run_command(command_env(relay, SMTP_PASSWORD=WRONG_PASSWORD), local_dns)

    out = parse(proc)
    assert out.code == 1, proc.stdout + proc.stderr
    assert [(m, n) for m, n, _ in out.checks if m == "FAIL"] == [("FAIL", "auth")]
    (detail,) = [d for m, n, d in out.checks if n == "auth"]
    assert detail.startswith("refused: 535")
    assert "SMTP_PASSWORD" in out.fixes["auth"]
    assert "1 failed" in out.stdout
    for secret in (WRONG_PASSWORD, PASSWORD):
        assert secret not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_command_with_a_bad_setting(relay, local_dns, command_env):
    proc = run_command(command_env(relay, SMTP_PORT="abc"), local_dns)

    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "SMTP_PORT must be a whole number, got 'abc'" in output
    assert "PASS" not in proc.stdout


@pytest.mark.slow
def test_command_reports_a_bad_setting_as_a_check(relay, local_dns, command_env):
    proc = run_command(command_env(relay, SMTP_PORT="abc"), local_dns)

    output = proc.stdout + proc.stderr
    assert proc.returncode == 78  # EX_CONFIG
    assert "Traceback" not in output
    assert re.search(r"^FAIL  configuration .*SMTP_PORT", output, re.MULTILINE)
    assert "fix:" in output


@pytest.mark.slow
def test_command_send_test_through_the_real_worker(
    relay, local_dns, command_env, tmp_path
):
    env = command_env(relay)
    worker_log = tmp_path / "worker.log"
    worker = start(flask_cmd("worker"), env, worker_log)
    try:
        # Let the worker create the database first: two processes starting
        # at once on a new SQLite file can fail "database is locked".
        wait_until(
            lambda: "delivering through" in worker_log.read_text(errors="replace"),
            20,
            "the worker to start",
        )
        proc = run_command(env, local_dns, "--send-test", "sales", "--wait", "30")
    finally:
        stop(worker)

    out = parse(proc)
    logs = proc.stdout + proc.stderr + worker_log.read_text(errors="replace")
    assert out.code == 0, logs
    mark, name, detail = out.checks[-1]
    assert (mark, name) == ("PASS", "send test"), logs
    assert re.match(r"receipt \S+: 250", detail)
    # Sent means the relay answered 250 to DATA: the message is there.
    (got,) = relay.received
    assert got.message["Subject"] == "Formpost test message"
    assert got.rcpt_tos == ["sales@example.com"]
