"""Fixtures of the doctor's tests: DKIM keys, a loopback DNS server, dated relays."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from dnslib import MX, NS, A

from ..dns_server import (
    LocalDNS,
    key_pair,
    start_dns,
    txt_record,
)
from ..relay import PKI, Relay
from .reports import DKIM_NAME, MAIL_DOMAIN

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
