"""The database checks: reachable, schema version, backlog age."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from app.doctor import FAIL, PASS, SKIP, WARN
from app.ledger import SCHEMA_VERSION

from ..fakeclock import FakeClock
from ..helpers import post_form
from .reports import (
    assert_fix,
    check,
    run_doctor,
)


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
