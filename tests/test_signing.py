"""DKIM signatures made over the exact bytes the relay receives, and verified."""

from __future__ import annotations

from collections.abc import Iterator

import dkim
import pytest

from config import ConfigError, load_config

from .dns_server import LocalDNS, key_pair, start_dns, txt_record
from .helpers import deliver, post_form


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, str]:
    """A fresh 2048-bit RSA key: (private PEM, the DNS record's p= value)."""
    return key_pair()


@pytest.fixture
def key_file(tmp_path, keys) -> str:
    path = tmp_path / "dkim.pem"
    path.write_bytes(keys[0])
    return str(path)


@pytest.fixture
def dkim_dns(keys) -> Iterator[LocalDNS]:
    """A DNS server on loopback publishing mail._domainkey.formpost.test."""
    record = txt_record(f"v=DKIM1; k=rsa; p={keys[1]}")
    server = start_dns({("mail._domainkey.formpost.test", "TXT"): [record]})
    yield server
    server.stop()


def test_delivered_message_carries_a_valid_signature(
    make_app, relay, key_file, dkim_dns
):
    env = relay.env(
        DKIM_DOMAIN="formpost.test",
        DKIM_SELECTOR="mail",
        DKIM_PRIVATE_KEY_FILE=key_file,
    )
    app = make_app(env)
    assert post_form(app.test_client(), subject="Signed 你好").status_code == 303
    deliver(app)
    (got,) = relay.received
    assert got.data.startswith(b"DKIM-Signature: ")
    # Verified as a receiver would: the key is fetched over DNS.
    assert dkim.verify(got.data, dnsfunc=dkim_dns.dkim_dnsfunc())
    header = got.message["DKIM-Signature"]
    assert "d=formpost.test" in header and "s=mail" in header
    assert "c=relaxed/simple" in header
    # The stored message is unchanged; the signature is made at send time.
    (row,) = app.extensions["formpost"].ledger.rows()
    assert row.state == "sent"


def test_a_changed_body_fails_verification(make_app, relay, key_file, dkim_dns):
    env = relay.env(
        DKIM_DOMAIN="formpost.test",
        DKIM_SELECTOR="mail",
        DKIM_PRIVATE_KEY_FILE=key_file,
    )
    app = make_app(env)
    post_form(app.test_client(), message="Pay 10 EUR")
    deliver(app)
    data = relay.received[0].data
    dnsfunc = dkim_dns.dkim_dnsfunc()
    assert dkim.verify(data, dnsfunc=dnsfunc)
    tampered = data.replace(b"Pay 10 EUR", b"Pay 99 EUR")
    assert tampered != data
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)


def test_without_dkim_settings_nothing_is_signed(make_app, relay):
    app = make_app(relay.env())
    post_form(app.test_client())
    deliver(app)
    assert b"DKIM-Signature" not in relay.received[0].data


BASE = {
    "SMTP_HOST": "127.0.0.1",
    "SECRET_KEY": "0123456789abcdef0123",
    "MAIL_FROM": "Forms <forms@formpost.test>",
    "MAIL_RECIPIENTS": "sales@example.com",
}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"DKIM_DOMAIN": "formpost.test"}, "needs all of"),
        ({"DKIM_DOMAIN": "other.example", "DKIM_SELECTOR": "mail"}, "needs all of"),
        ({"DKIM_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----"}, "in a file"),
        ({"DKIM_PRIVATE_KEY_FILE": "/nonexistent/key.pem"}, "DKIM_PRIVATE_KEY_FILE"),
    ],
)
def test_incomplete_or_unsafe_dkim_settings_stop_start_up(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config({**BASE, **settings})


def test_misaligned_domain_and_bad_key_are_refused(tmp_path, key_file):
    dkim_settings = {"DKIM_SELECTOR": "mail", "DKIM_PRIVATE_KEY_FILE": key_file}
    with pytest.raises(ConfigError, match="align"):
        load_config({**BASE, **dkim_settings, "DKIM_DOMAIN": "other.example"})
    not_a_key = tmp_path / "key.txt"
    not_a_key.write_text("hello")
    bad = {**dkim_settings, "DKIM_PRIVATE_KEY_FILE": str(not_a_key)}
    with pytest.raises(ConfigError, match="PEM"):
        load_config({**BASE, **bad, "DKIM_DOMAIN": "formpost.test"})
    # A parent domain of MAIL_FROM's aligns (relaxed DMARC alignment).
    sub = {**BASE, "MAIL_FROM": "forms@mail.formpost.test"}
    cfg = load_config({**sub, **dkim_settings, "DKIM_DOMAIN": "formpost.test"})
    assert cfg["DKIM_DOMAIN"] == "formpost.test"
