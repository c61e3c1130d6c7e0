"""The owner's console (/admin): off until an owner exists, log-in, sessions."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import pytest

from .helpers import (
    CSRF_RE,
    fast_hashing,
    ledger_of,
    post_form,
    services_of,
    use_fake_clock,
)

EMAIL = "owner@example.com"
PASSWORD = "correct horse battery"


@pytest.fixture
def console(make_app, relay):
    """An app with one owner."""
    app = make_app(relay.env())
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    return app


def _token(client, path="/admin/login") -> str:
    return CSRF_RE.search(client.get(path).get_data(as_text=True)).group(1)


def log_in(client, email=EMAIL, password=PASSWORD, query=""):
    data = {"csrf_token": _token(client), "email": email, "password": password}
    return client.post(f"/admin/login{query}", data=data)


def _cookie(response, name="session") -> SimpleCookie:
    for header in response.headers.getlist("Set-Cookie"):
        jar = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar
    raise AssertionError(f"no {name} cookie set")


@pytest.mark.parametrize("path", ["/admin/", "/admin/login"])
def test_the_console_is_off_until_an_owner_exists(make_app, relay, path):
    app = make_app(relay.env())
    assert app.test_client().get(path).status_code == 404


@pytest.mark.parametrize("path", ["/admin/", "/admin/login"])
def test_admin_enabled_false_removes_the_console(make_app, relay, path):
    app = make_app(relay.env(ADMIN_ENABLED="false"))
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    assert app.test_client().get(path).status_code == 404


def test_the_inbox_needs_a_log_in(console):
    response = console.test_client().get("/admin/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/login?next=%2Fadmin%2F"


def test_log_in_opens_the_inbox_with_a_strict_session_cookie(console):
    client = console.test_client()
    response = log_in(client, query="?next=/admin/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    cookie = _cookie(response)["session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert not cookie["secure"]  # plain http here; see the https test
    page = client.get("/admin/")
    assert page.status_code == 200
    assert EMAIL in page.get_data(as_text=True)


def test_over_https_the_session_cookie_is_secure(console):
    client = console.test_client()
    base = "https://forms.example.com"
    page = client.get("/admin/login", base_url=base).get_data(as_text=True)
    data = {"csrf_token": CSRF_RE.search(page).group(1), "email": EMAIL}
    data["password"] = PASSWORD
    response = client.post(
        "/admin/login",
        data=data,
        base_url=base,
        headers={"Referer": f"{base}/admin/login"},
    )
    assert response.status_code == 302
    assert _cookie(response)["session"]["secure"] is True


def test_the_hosted_form_keeps_a_lax_cookie(console, relay):
    client = console.test_client()
    response = post_form(client)
    assert response.status_code == 303
    assert _cookie(response)["session"]["samesite"] == "Lax"


@pytest.mark.parametrize(
    ("email", "password"),
    [(EMAIL, "wrong password here"), ("nobody@example.com", PASSWORD)],
)
def test_a_wrong_email_or_password_gets_one_generic_answer(console, email, password):
    client = console.test_client()
    response = log_in(client, email, password)
    page = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "Wrong email or password." in page
    assert f'value="{email}"' in page  # what was typed stays
    assert password not in page
    assert client.get("/admin/").status_code == 302  # still logged out


def test_a_log_in_without_the_csrf_token_is_refused(console):
    client = console.test_client()
    client.get("/admin/login")
    response = client.post("/admin/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/admin",
        "//evil.example/admin",
        "/\\evil.example",
        "/admin\\@evil.example",
        "javascript:alert(1)",
        "/f/default",
    ],
)
def test_after_log_in_only_console_pages_are_followed(console, target):
    response = log_in(console.test_client(), query=f"?next={target}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


def test_log_out_is_a_post_behind_csrf(console):
    client = console.test_client()
    log_in(client)
    assert client.get("/admin/logout").status_code == 405
    assert client.post("/admin/logout").status_code == 400  # no token
    assert client.get("/admin/").status_code == 200
    token = _token(client, "/admin/")
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_an_idle_session_ends(console):
    clock = use_fake_clock(console)
    client = console.test_client()
    log_in(client)
    clock.advance(12 * 3600 - 60)
    assert client.get("/admin/").status_code == 200  # activity resets the clock
    clock.advance(12 * 3600 - 60)
    assert client.get("/admin/").status_code == 200
    clock.advance(12 * 3600 + 1)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "without use" in page
    assert client.get("/admin/").status_code == 302


def test_the_idle_timeout_is_a_setting(make_app, relay):
    app = make_app(relay.env(ADMIN_IDLE_TIMEOUT="600"))
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    clock = use_fake_clock(app)
    client = app.test_client()
    log_in(client)
    clock.advance(601)
    assert client.get("/admin/").status_code == 302


def test_a_new_password_signs_the_session_out(console):
    client = console.test_client()
    log_in(client)
    assert client.get("/admin/").status_code == 200
    services_of(console).owners.set_password(EMAIL, "another long password")
    assert client.get("/admin/").status_code == 302


def test_removing_the_owner_signs_the_session_out(make_app, relay):
    app = make_app(relay.env())
    fast_hashing(app)
    owners = services_of(app).owners
    owners.add(EMAIL, PASSWORD)
    owners.add("second@example.com", PASSWORD)
    client = app.test_client()
    log_in(client)
    owners.remove(EMAIL)
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize("path", ["/admin/login", "/admin/"])
def test_console_pages_are_never_stored(console, path):
    client = console.test_client()
    log_in(client)
    response = client.get(path, follow_redirects=True)
    assert response.headers["Cache-Control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_inbox_lists_submissions_escaped(console, relay):
    post_form(console.test_client(), subject="<script>alert(1)</script>")
    client = console.test_client()
    log_in(client)
    page = client.get("/admin/").get_data(as_text=True)
    (row,) = ledger_of(console).rows()
    assert row.receipt in page
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", page)


# -- log-in throttling, counted in the ledger ----------------------------------


def _attempt(client, email, password, address):
    data = {"csrf_token": _token(client), "email": email, "password": password}
    return client.post("/admin/login", data=data, headers={"X-Forwarded-For": address})


@pytest.fixture
def behind_proxy(make_app, relay, database_url):
    """Two apps (two workers) on one database, behind one trusted proxy."""
    env = relay.env(TRUSTED_PROXY_HOPS="1", DATABASE_URL=database_url)
    apps = [make_app(env), make_app(env)]
    for app in apps:
        fast_hashing(app)
    services_of(apps[0]).owners.add(EMAIL, PASSWORD)
    return apps


def test_ten_wrong_passwords_for_one_account_throttle_it_everywhere(behind_proxy):
    first, second = (app.test_client() for app in behind_proxy)
    for n in range(10):
        client = first if n % 2 else second  # both workers count together
        response = _attempt(client, EMAIL, f"wrong password {n}", f"192.0.2.{n}")
        assert response.status_code == 401
    # The right password, from yet another address: still refused for now.
    refused = _attempt(first, EMAIL, PASSWORD, "198.51.100.7")
    assert refused.status_code == 429
    assert "Too many log-in attempts" in refused.get_data(as_text=True)
    assert 1 <= int(refused.headers["Retry-After"]) <= 90
    assert first.get("/admin/").status_code == 302
    # Another account from a fresh address is not affected.
    other = _attempt(second, "someone@example.com", "x" * 12, "198.51.100.8")
    assert other.status_code == 401


def test_one_address_trying_many_accounts_is_throttled(behind_proxy):
    client = behind_proxy[0].test_client()
    for n in range(20):
        response = _attempt(client, f"guess{n}@example.com", "x" * 12, "203.0.113.5")
        assert response.status_code == 401
    assert _attempt(client, EMAIL, PASSWORD, "203.0.113.5").status_code == 429
    # The owner, from their own address, still gets in.
    assert _attempt(client, EMAIL, PASSWORD, "198.51.100.9").status_code == 302


def test_a_token_comes_back_with_time(make_app, relay):
    app = make_app(relay.env(TRUSTED_PROXY_HOPS="1"))
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    clock = use_fake_clock(app)
    client = app.test_client()
    for n in range(10):
        _attempt(client, EMAIL, f"wrong password {n}", f"192.0.2.{n}")
    assert _attempt(client, EMAIL, PASSWORD, "192.0.2.99").status_code == 429
    clock.advance(91)  # 900 s / 10 attempts: one token back
    assert _attempt(client, EMAIL, PASSWORD, "192.0.2.99").status_code == 302


def test_an_unknown_email_is_throttled_like_a_known_one(make_app, relay):
    """The answer must not tell which emails have accounts."""
    app = make_app(relay.env(TRUSTED_PROXY_HOPS="1"))
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    client = app.test_client()
    answers = {}
    for email in (EMAIL, "nobody@example.com"):
        statuses = [
            _attempt(client, email, f"wrong password {n}", f"192.0.2.{n}").status_code
            for n in range(11)
        ]
        answers[email] = statuses
    assert answers[EMAIL] == answers["nobody@example.com"] == [401] * 10 + [429]
