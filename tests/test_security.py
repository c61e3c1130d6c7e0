"""Security headers, cookies and the reverse-proxy boundary."""

from __future__ import annotations

import re

import pytest

from .helpers import post_form


@pytest.mark.parametrize(
    "path", ["/", "/thanks", "/healthz", "/nope", "/static/style.css"]
)
def test_every_response_carries_security_headers(client, path):
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_error_pages_carry_headers_too(make_app, relay):
    client = make_app(relay.env(MAX_CONTENT_LENGTH="2048")).test_client()
    response = post_form(client, message="x" * 4096)
    assert response.status_code == 413
    assert "Content-Security-Policy" in response.headers


def test_named_frame_ancestors_allow_embedding(make_app, relay):
    env = relay.env(FRAME_ANCESTORS="https://www.example.com,https://example.com")
    response = make_app(env).test_client().get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors https://www.example.com https://example.com" in csp
    assert "X-Frame-Options" not in response.headers


def test_pages_have_no_inline_script_or_style(client):
    page = client.get("/").get_data(as_text=True)
    # Only the proof-of-work widget, from static/, with nothing inline.
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)
    assert scripts == [""]
    assert re.findall(r"<script([^>]*)>", page) == [
        ' src="/static/formpost-altcha.js" defer'
    ]
    assert "style=" not in page and "<style" not in page


def test_session_cookie_is_httponly_and_lax(client):
    cookie = client.get("/").headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http in development must keep working


def test_cookie_is_secure_behind_a_tls_proxy(make_app, relay):
    client = make_app(relay.env(TRUSTED_PROXY_HOPS="1")).test_client()
    response = client.get("/", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["Set-Cookie"]
    assert "max-age" in response.headers["Strict-Transport-Security"]


def test_forwarded_proto_is_ignored_without_trusted_hops(client):
    response = client.get("/", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in response.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in response.headers


def test_client_ip_is_the_one_the_proxy_appended(make_app, relay):
    app = make_app(relay.env(TRUSTED_PROXY_HOPS="1"))

    @app.get("/_ip")
    def _ip():
        from flask import request

        return request.remote_addr or ""

    forged = "6.6.6.6, 203.0.113.9"  # the client wrote 6.6.6.6; nginx appended .9
    response = app.test_client().get("/_ip", headers={"X-Forwarded-For": forged})
    assert response.get_data(as_text=True) == "203.0.113.9"
