"""Shared fixtures: the app built through the real factory, and a real relay."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, BrowserContext

from app import create_app
from app.ledger import Ledger, make_engine, migrate
from app.services import EXTENSION

from .chromium import TIMEOUT_MS, launch_chromium
from .fakeclock import FakeClock
from .helpers import PG_URL, postgres_or_skip
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

    def factory(
        mode: str = "starttls",
        auth: bool = True,
        trusted: bool = True,
        port: int | None = None,
        data_size_limit: int | None = None,
    ) -> Relay:
        relay = Relay(
            pki,
            mode=mode,
            auth=auth,
            trusted=trusted,
            port=port,
            data_size_limit=data_size_limit,
        ).start()
        started.append(relay)
        return relay

    yield factory
    for relay in started:
        relay.stop()


@pytest.fixture
def relay(make_relay: Callable[..., Relay]) -> Relay:
    """The usual production shape: STARTTLS on a submission port, with AUTH."""
    return make_relay()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty ledger database: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    postgres_or_skip()
    import psycopg

    schema = f"formpost_test_{uuid.uuid4().hex[:12]}"
    plain = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()


@pytest.fixture
def ledger(database_url: str, clock: FakeClock) -> Iterator[Ledger]:
    """A ledger on a fresh database (SQLite and PostgreSQL) and the fake clock."""
    engine = make_engine(database_url)
    migrate(engine)
    yield Ledger(engine, clock)
    engine.dispose()


@pytest.fixture
def make_app(tmp_path) -> Iterator[Callable[..., Flask]]:
    """Build apps through create_app() with an instance folder per test.

    Their database connections are closed when the test ends: a suite that
    left each app's pool open would run PostgreSQL out of connections.
    """
    built: list[Flask] = []

    def factory(env: dict[str, str] | None = None) -> Flask:
        settings = {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "RATE_LIMIT": "off",
            "MIN_FILL_SECONDS": "0",
            "DEDUPE_WINDOW": "0",
            # Tests posting without the widget are not about proof of work;
            # those that are turn it on (tests/test_altcha*.py).
            "SPAM_PROOF_OF_WORK": "off",
        }
        settings.update(env or {})
        app = create_app(settings)
        app.config["TESTING"] = True
        built.append(app)
        return app

    yield factory
    for app in built:
        app.extensions[EXTENSION].ledger.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    """An app that delivers to the test relay."""
    return make_app(relay.env())


@pytest.fixture
def app_on_db(make_app: Callable[..., Flask], relay: Relay, database_url: str) -> Flask:
    """An app delivering to the test relay, on SQLite and on PostgreSQL."""
    return make_app(relay.env(DATABASE_URL=database_url))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium per browser test module; skip when it cannot start."""
    with launch_chromium() as launched:
        yield launched


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Open browser contexts with short timeouts; close them after the test."""
    contexts: list[BrowserContext] = []

    def factory(**options) -> BrowserContext:
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield factory
    for context in contexts:
        context.close()
