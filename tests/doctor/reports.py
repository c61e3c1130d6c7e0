"""Helpers that read the doctor's report, and what a healthy setup reports."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from app.doctor import PASS, Check, Doctor, Report

TIMEOUT = 2.0  # per check; everything here answers on loopback in milliseconds
MAIL_DOMAIN = "formpost.test"  # the domain of relay.env()'s MAIL_FROM
DKIM_NAME = f"mail._domainkey.{MAIL_DOMAIN}"
WRONG_PASSWORD = "Tr0ub4dor&3-not-the-one"


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
