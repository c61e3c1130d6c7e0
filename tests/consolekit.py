"""What the console's tests share: an owner, logging in, reading a page's words."""

from __future__ import annotations

import re
from html import unescape

from flask import Flask
from flask.testing import FlaskClient

from .helpers import CSRF_RE, fast_hashing, services_of

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery"


def with_owner(app: Flask) -> Flask:
    """Give the app its owner (argon2id at its cheapest, for speed)."""
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    return app


def log_in(client: FlaskClient) -> None:
    """Log the owner in through the real form, CSRF token and all."""
    page = client.get("/admin/login").get_data(as_text=True)
    data = {"csrf_token": CSRF_RE.search(page).group(1), "email": EMAIL}
    data["password"] = PASSWORD
    assert client.post("/admin/login", data=data).status_code == 302


def token(client: FlaskClient, path: str = "/admin/dashboard") -> str:
    """The CSRF token a console page carries."""
    return CSRF_RE.search(client.get(path).get_data(as_text=True)).group(1)


def text_of(html: str) -> str:
    """The page's words, tags dropped and spaces collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()
