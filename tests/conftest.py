"""Shared fixtures: the app built through the real factory, and a real relay."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app

from .relay import PKI, Relay


@pytest.fixture(autouse=True)
def _no_real_mail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip SMTP_*/MAIL_* from the environment so no test can reach a real relay.

    Subprocesses (gunicorn) inherit this environment, and FORMPOST_ENV_FILE
    points at nothing so a developer's .env is never read either.
    """
    for name in list(os.environ):
        if name.startswith(("SMTP_", "MAIL_", "DATABASE_", "SECRET_KEY")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FORMPOST_ENV_FILE", os.devnull)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A private CA (trusted through SMTP_CA_FILE) and an untrusted one."""
    return PKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def make_relay(pki: PKI) -> Iterator[Callable[..., Relay]]:
    """Start relays in any mode; all are stopped at the end of the test."""
    started: list[Relay] = []

    def factory(mode: str = "starttls", auth: bool = True, trusted: bool = True):
        relay = Relay(pki, mode=mode, auth=auth, trusted=trusted).start()
        started.append(relay)
        return relay

    yield factory
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(make_relay: Callable[..., Relay]) -> Relay:
    """The usual production shape: STARTTLS on a submission port, with AUTH."""
    return make_relay()


@pytest.fixture
def make_app(tmp_path) -> Callable[..., Flask]:
    """Build apps through create_app() with an instance folder per test."""

    def factory(env: dict[str, str] | None = None) -> Flask:
        settings = {"INSTANCE_PATH": str(tmp_path / "instance")}
        settings.update(env or {})
        app = create_app(settings)
        app.config["TESTING"] = True
        return app

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    """An app that delivers to the test relay."""
    return make_app(relay.env())


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/") -> str:
    """GET the form like a browser and return the CSRF token it carries."""
    page = client.get(path).get_data(as_text=True)
    match = CSRF_RE.search(page)
    if match is None:
        raise AssertionError("form has no CSRF token")
    return match.group(1)


def post_form(client: FlaskClient, token: str | None = None, **fields: str):
    """POST the hosted form with a valid token unless one is given."""
    data = {
        "recipient": "sales",
        "name": "Ada Lovelace",
        "email": "ada@example.net",
        "subject": "Hello",
        "message": "A question about engines.",
    }
    data.update(fields)
    data["csrf_token"] = token if token is not None else csrf_token(client)
    return client.post("/", data=data)
