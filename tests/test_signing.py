"""DKIM signatures made over the exact bytes the relay receives, and verified."""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from config import ConfigError, load_config

from .conftest import deliver, post_form


@pytest.fixture(scope="module")
def key_pair() -> tuple[bytes, bytes]:
    """A fresh 2048-bit RSA key: (private PEM, the DNS record's p= value)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public)


@pytest.fixture
def key_file(tmp_path, key_pair) -> str:
    path = tmp_path / "dkim.pem"
    path.write_bytes(key_pair[0])
    return str(path)


def dns_for(key_pair):
    """Answer the TXT query for mail._domainkey.formpost.test, and nothing else."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        if name.rstrip(b".") == b"mail._domainkey.formpost.test":
            return b"v=DKIM1; k=rsa; p=" + key_pair[1]
        return None

    return dnsfunc


def test_delivered_message_carries_a_valid_signature(
    make_app, relay, key_file, key_pair
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
    assert dkim.verify(got.data, dnsfunc=dns_for(key_pair))
    header = got.message["DKIM-Signature"]
    assert "d=formpost.test" in header and "s=mail" in header
    assert "c=relaxed/simple" in header
    # The stored message is unchanged; the signature is made at send time.
    (row,) = app.extensions["formpost.ledger"].rows()
    assert row.state == "sent"


def test_a_changed_body_fails_verification(make_app, relay, key_file, key_pair):
    env = relay.env(
        DKIM_DOMAIN="formpost.test",
        DKIM_SELECTOR="mail",
        DKIM_PRIVATE_KEY_FILE=key_file,
    )
    app = make_app(env)
    post_form(app.test_client(), message="Pay 10 EUR")
    deliver(app)
    data = relay.received[0].data
    assert dkim.verify(data, dnsfunc=dns_for(key_pair))
    tampered = data.replace(b"Pay 10 EUR", b"Pay 99 EUR")
    assert tampered != data
    assert not dkim.verify(tampered, dnsfunc=dns_for(key_pair))


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
