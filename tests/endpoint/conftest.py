"""Apps for www.example.com's forms, delivering to the test relay."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from ..relay import Relay
from .posting import SITE


@pytest.fixture
def build(make_app: Callable[..., Flask], relay: Relay) -> Callable[..., Flask]:
    """Build an app for www.example.com's forms, with settings overridden."""

    def factory(**overrides: str) -> Flask:
        env = {"ALLOWED_ORIGINS": SITE, "REDIRECT_HOSTS": "www.example.com"}
        env.update(overrides)
        return make_app(relay.env(**env))

    return factory


@pytest.fixture
def app(build: Callable[..., Flask]) -> Flask:
    return build()
