"""The DNS checks: SPF, DMARC, MX, the DKIM record, DNS unreachable."""

from __future__ import annotations

import time

from app.doctor import FAIL, PASS, SKIP, WARN, Report

from ..dns_server import (
    free_udp_port,
    loopback_resolver,
)
from .reports import (
    DKIM_NAME,
    DNS_PASS,
    MAIL_DOMAIN,
    assert_fix,
    check,
    run_doctor,
)


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
