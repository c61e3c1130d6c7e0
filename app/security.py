"""Security headers on every response, and cookies that follow the scheme."""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response, request
from flask.sessions import (
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionMixin,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


# Set while a session is saved: does it belong to a logged-in owner?
_OWNER_SESSION: ContextVar[bool] = ContextVar("owner_session", default=False)


class _SchemeAwareSessionInterface(SecureCookieSessionInterface):
    """Mark the session cookie Secure whenever the request came over HTTPS.

    Behind a TLS-terminating proxy, ProxyFix makes request.is_secure true, so
    the flag follows the real scheme without a separate setting. A session
    that carries a logged-in owner (Flask-Login's `_user_id`) is
    SameSite=Strict: no link from another site can act on the console.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)

    def get_cookie_samesite(self, app: Flask) -> str | None:
        if _OWNER_SESSION.get():
            return "Strict"
        return super().get_cookie_samesite(app)

    def save_session(
        self, app: Flask, session: SessionMixin, response: Response
    ) -> None:
        token = _OWNER_SESSION.set("_user_id" in session)
        try:
            super().save_session(app, session, response)
        finally:
            _OWNER_SESSION.reset(token)

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # Most posts (forms on other sites) carry no cookie: skip building
        # the signing serializer for them.
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def content_security_policy(frame_ancestors: list[str]) -> str:
    """Build the CSP: everything from our own origin, no inline script at all.

    `connect-src 'self'` lets the proof-of-work widget fetch its challenge;
    its Web Worker is a script from 'self' (worker-src falls back to
    script-src).
    """
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; "
        f"frame-ancestors {ancestors}"
    )


class _SecurityHeaders:
    """Add the security headers to every response, at the WSGI layer.

    Same effect as an after_request hook that calls setdefault, at a tenth of
    the cost: this runs on every request, and Werkzeug's header objects
    check and copy each value. A response that sets one of these headers
    itself keeps its own. Installed inside ProxyFix, so `wsgi.url_scheme` is
    the visitor's scheme when deciding on HSTS.
    """

    def __init__(
        self, wsgi_app: WSGIApplication, headers: list[tuple[str, str]]
    ) -> None:
        self.wsgi_app = wsgi_app
        self.headers = headers

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        headers = self.headers
        if environ.get("wsgi.url_scheme") == "https":
            headers = [*headers, ("Strict-Transport-Security", "max-age=31536000")]

        def add_headers(
            status: str, response_headers: list[tuple[str, str]], *args: Any
        ) -> Any:
            present = {name.lower() for name, _ in response_headers}
            response_headers.extend(
                (name, value) for name, value in headers if name.lower() not in present
            )
            return start_response(status, response_headers, *args)

        return self.wsgi_app(environ, add_headers)


def init_app(app: Flask) -> None:
    """Install the cookie policy and the security headers.

    Call before wrapping app.wsgi_app in ProxyFix.
    """
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.session_interface = _SchemeAwareSessionInterface()
    headers = [
        (
            "Content-Security-Policy",
            content_security_policy(app.config["FRAME_ANCESTORS"]),
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ]
    if not app.config["FRAME_ANCESTORS"]:
        headers.append(("X-Frame-Options", "DENY"))
    app.wsgi_app = _SecurityHeaders(app.wsgi_app, headers)  # type: ignore[method-assign]
