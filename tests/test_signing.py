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


def _pkcs8(key, encryption=None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


def _unusable_keys() -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "truncated": b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "not base64": (
            b"-----BEGIN RSA PRIVATE KEY-----\nnot base64!\n"
            b"-----END RSA PRIVATE KEY-----\n"
        ),
        "ec": _pkcs8(ec.generate_private_key(ec.SECP256R1())),
        "ed25519": _pkcs8(ed25519.Ed25519PrivateKey.generate()),
        "encrypted": _pkcs8(
            rsa_key, serialization.BestAvailableEncryption(b"passphrase")
        ),
    }


UNUSABLE = _unusable_keys()
DKIM = {"DKIM_DOMAIN": "formpost.test", "DKIM_SELECTOR": "mail"}


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_a_key_that_cannot_sign_stops_start_up(tmp_path, kind):
    path = tmp_path / "dkim.pem"
    path.write_bytes(UNUSABLE[kind])
    settings = {**BASE, **DKIM, "DKIM_PRIVATE_KEY_FILE": str(path)}
    with pytest.raises(ConfigError, match="DKIM_PRIVATE_KEY_FILE: the DKIM key") as err:
        load_config(settings)
    assert "\n" not in str(err.value)  # one line, whatever dkimpy said


def test_pkcs1_and_pkcs8_keys_both_sign(tmp_path, keys):
    from cryptography.hazmat.primitives import serialization

    pkcs1 = keys[0]
    loaded = serialization.load_pem_private_key(pkcs1, password=None)
    for name, pem in (("pkcs1.pem", pkcs1), ("pkcs8.pem", _pkcs8(loaded))):
        path = tmp_path / name
        path.write_bytes(pem)
        cfg = load_config({**BASE, **DKIM, "DKIM_PRIVATE_KEY_FILE": str(path)})
        assert cfg["DKIM_PRIVATE_KEY"] == pem


def test_a_signing_failure_at_delivery_keeps_the_message_and_alerts(
    make_app, relay, key_file, database_url, caplog
):
    app = make_app(
        relay.env(DATABASE_URL=database_url, **DKIM, DKIM_PRIVATE_KEY_FILE=key_file)
    )
    services = app.extensions["formpost"]
    # The key passed the start-up check; what if signing fails later anyway
    # (a library upgrade, a key swapped in memory): the real signer, bad bytes.
    services.transport.signer.private_key = UNUSABLE["truncated"]
    assert post_form(app.test_client()).status_code == 303

    with caplog.at_level("INFO", logger="formpost"):
        assert deliver(app) == 1  # tried once, then waits for its retry

    (row,) = services.ledger.rows()
    assert (row.state, row.attempts) == ("pending", 1)
    assert "DKIM_PRIVATE_KEY_FILE" in row.last_reply
    assert relay.received == []
    assert not [r for r in caplog.records if r.exc_info]  # no traceback
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "cannot sign" in errors[0].getMessage()
    body = app.test_client().get("/readyz").get_json()
    assert body["relay"]["status"] == "failing"
    assert body["relay"]["last_error_kind"] == "configuration"
    assert "DKIM" in body["relay"]["last_error"]
    assert body["backlog"] == 1


def test_the_doctor_signs_with_the_key(make_app, relay, key_file):
    from app.doctor import Doctor

    app = make_app(relay.env(**DKIM, DKIM_PRIVATE_KEY_FILE=key_file))
    doctor = Doctor(app)
    doctor.check_dkim_key()
    assert doctor.report.checks == []  # part of "settings parse"

    app.config["DKIM_PRIVATE_KEY"] = UNUSABLE["ec"]
    doctor = Doctor(app)
    doctor.check_dkim_key()
    (check,) = doctor.report.checks
    assert (check.status, check.name) == ("fail", "dkim key")
    assert "cannot sign" in check.detail
