"""Formpost: a self-hosted form-to-email service."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import NoReturn

from flask import Flask

log = logging.getLogger("formpost")

# Exit statuses of a stopped start-up (sysexits.h). A bad setting (EX_CONFIG)
# stays bad however often the service is restarted: the systemd units name it
# in RestartPreventExitStatus=. A database that does not answer
# (EX_UNAVAILABLE) may come back, so that one is restarted.
EXIT_CONFIG = 78
EXIT_UNAVAILABLE = 69


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """Assemble the application: config, extensions, blueprints, error handlers.

    `test_config` replaces the process environment (and `.env`) as the source
    of settings, so tests never pick up a developer's real relay.
    """
    # Imported here, as in flaskr: config.py imports app.urls, so importing
    # `app` itself must not pull config in.
    from flask_wtf import CSRFProtect
    from werkzeug.middleware.proxy_fix import ProxyFix

    from config import ConfigError, development_secret, load_config

    from . import (
        api,
        cli,
        console,
        endpoint,
        handlers,
        health,
        hosted,
        i18n,
        logs,
        metrics,
        security,
    )
    from .clamd import ClamdSettings
    from .clock import SystemClock
    from .errors import StorageError
    from .formdefs import load_forms
    from .ledger import Ledger, default_url, make_engine, migrate
    from .ledger.owners import OwnerStore
    from .notifier import NotifySettings
    from .outbox import OutboxSettings
    from .owners import Owners
    from .services import EXTENSION, Services, make_transport

    try:
        settings = load_config(test_config)
        forms = load_forms(settings)
    except ConfigError as exc:
        if test_config is not None:
            raise
        _stop(
            "configuration",
            exc,
            "correct it in the environment or in .env",
            EXIT_CONFIG,
        )
    app = Flask(
        __name__,
        instance_path=settings["INSTANCE_PATH"],
        template_folder="../templates",
        static_folder="../static",
    )
    app.config.from_mapping(settings)
    try:
        if not app.config["SECRET_KEY"]:
            app.config["SECRET_KEY"] = development_secret(app.instance_path)
        if not app.config["DATABASE_URL"]:
            os.makedirs(app.instance_path, exist_ok=True)
            app.config["DATABASE_URL"] = default_url(app.instance_path)
    except OSError as exc:
        if test_config is not None:
            raise
        _stop(
            "instance",
            f"cannot write to the instance folder {app.instance_path}: "
            f"{exc.strerror or exc}",
            "set INSTANCE_PATH to a folder this user can write to",
            EXIT_CONFIG,
        )
    logs.init_app(app)
    i18n.init_app(app)
    security.init_app(app)

    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        # Trust exactly as many X-Forwarded-* entries as there are proxies we
        # run: anything further left was written by the client.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    # Before the CSRF check reads the body: the hosted form's files need room.
    app.before_request(hosted.allow_files)
    csrf = CSRFProtect(app)
    # Forms on other sites cannot carry our token; the Origin check and the
    # form's allow-lists protect that endpoint instead.
    csrf.exempt(endpoint.bp)
    try:
        engine = make_engine(app.config["DATABASE_URL"])
        migrate(engine)  # creates the schema on first start, upgrades in place
    except StorageError as exc:
        if test_config is not None:
            raise
        _stop(
            "database",
            _one_line(exc),
            "check DATABASE_URL and that the database is up",
            EXIT_UNAVAILABLE,
        )
    transport = make_transport(app.config, app.instance_path)
    clock = SystemClock()
    app.extensions[EXTENSION] = Services(
        ledger=Ledger(engine, clock),
        transport=transport,
        outbox=OutboxSettings.from_config(app.config),
        forms=forms,
        mail_from=app.config["MAIL_FROM"],
        recipients=app.config["MAIL_RECIPIENTS"],
        recipient_daily_quota=app.config["RECIPIENT_DAILY_QUOTA"],
        backlog_limit=app.config["BACKLOG_LIMIT"],
        dedupe_window=app.config["DEDUPE_WINDOW"],
        spam_defaults=app.config["SPAM_DEFAULTS"],
        owners=Owners(OwnerStore(engine, clock)),
        notify=NotifySettings.from_config(app.config),
        clamd=ClamdSettings.from_config(app.config),
    )

    app.register_blueprint(hosted.bp)
    app.register_blueprint(endpoint.bp)
    app.register_blueprint(health.bp)
    if app.config["ADMIN_ENABLED"]:
        console.init_app(app)
        # Tokens travel in a header no browser sends on its own: no CSRF.
        csrf.exempt(api.bp)
        api.init_app(app)
    handlers.init_app(app)
    metrics.init_app(app)
    cli.init_app(app)

    if app.config["DEVELOPMENT"]:
        log.warning(
            "No SMTP_HOST configured: development mode. Messages are written to %s, "
            "not sent. Set SMTP_HOST (see .env.example) to deliver real mail.",
            transport.describe(),
        )
    else:
        log.info("Delivering through %s", transport.describe())
    return app


def _stop(check: str, problem: object, fix: str, status: int) -> NoReturn:
    """Stop start-up with one line in the doctor's words instead of a traceback.

    The line goes to stderr once (a JSON object with LOG_FORMAT=json), and the
    process exits with `status`.
    """
    from config import setting

    fix = f"{fix} (see .env.example), then start again"
    if (setting("LOG_FORMAT") or "").strip().lower() == "json":
        from .logs import json_line

        line = json_line(
            "CRITICAL", "formpost", f"FAIL  {check}  {problem}", check=check, fix=fix
        )
    else:
        line = f"FAIL  {check}  {problem}\n      fix: {fix}"
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(status) from None


def _one_line(exc: Exception) -> str:
    """The database error without SQLAlchemy's class prefix and help link."""
    lines = [
        line.strip()
        for line in str(exc).splitlines()
        if not line.startswith("(Background on this error")
    ]
    return re.sub(r"\([\w.]+\) ", "", " ".join(line for line in lines if line))
