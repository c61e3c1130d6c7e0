"""Security headers on every response, and cookies that follow the scheme."""

from __future__ import annotations

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface


class _SchemeAwareSessionInterface(SecureCookieSessionInterface):
    """Mark the session cookie Secure whenever the request came over HTTPS.

    Behind a TLS-terminating proxy, ProxyFix makes request.is_secure true, so
    the flag follows the real scheme without a separate setting.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # Most posts (forms on other sites) carry no cookie: skip building
        # the signing serializer for them.
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def content_security_policy(frame_ancestors: list[str]) -> str:
    """Build the CSP: everything from our own origin, no inline script at all."""
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
        "form-action 'self'; base-uri 'none'; "
        f"frame-ancestors {ancestors}"
    )


def init_app(app: Flask) -> None:
    """Install the cookie policy and the header hook."""
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.session_interface = _SchemeAwareSessionInterface()
    csp = content_security_policy(app.config["FRAME_ANCESTORS"])
    frame_options = None if app.config["FRAME_ANCESTORS"] else "DENY"

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", csp)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault(
            "Referrer-Policy", "strict-origin-when-cross-origin"
        )
        if frame_options:
            response.headers.setdefault("X-Frame-Options", frame_options)
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response
