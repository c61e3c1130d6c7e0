"""Liveness (/healthz), readiness (/readyz) and /metrics, for operators' tools."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from .errors import StorageError
from .services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Answer 200 while the process can serve requests."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Report the database, the backlog and the relay; 503 when not ready.

    Not ready: the database does not answer, or the relay has been failing
    for longer than READY_RELAY_FAILING_AFTER seconds.
    """
    ledger = services().ledger
    try:
        stats = ledger.stats()
    except StorageError as exc:
        current_app.logger.warning("readyz: database unreachable: %s", exc)
        body: dict[str, Any] = {
            "status": "unavailable",
            "database": "unreachable",
        }
        return jsonify(body), 503

    relay: dict[str, Any] = {"status": "unknown"}
    ready = True
    if stats.relay:
        failing_since = stats.relay["failing_since"]
        if failing_since is None:
            relay = {"status": "ok"}
        else:
            failing_for = max(0.0, ledger.clock.now() - failing_since)
            relay = {
                "status": "failing",
                "failing_for_seconds": round(failing_for),
                "last_error_kind": stats.relay["last_error_kind"],
                "last_error": stats.relay["last_error"],
            }
            if failing_for > current_app.config["READY_RELAY_FAILING_AFTER"]:
                ready = False
    body = {
        "status": "ok" if ready else "unavailable",
        "database": "ok",
        "backlog": stats.backlog,
        "oldest_pending_seconds": None
        if stats.oldest_pending_age is None
        else round(stats.oldest_pending_age),
        "failed": stats.counts["failed"],
        "relay": relay,
    }
    return jsonify(body), 200 if ready else 503


@bp.get("/metrics")
def scrape() -> Response:
    """Serve the metrics to a scraper that knows the token (404 while off)."""
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        abort(404)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return Response(
            "metrics need the bearer token\n",
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            mimetype="text/plain",
        )
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    body = generate_latest(registry) + _backlog_lines()
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _backlog_lines() -> bytes:
    """Backlog gauges, read from the ledger (true across all machines)."""
    stats = services().ledger.stats()
    oldest = stats.oldest_pending_age or 0.0
    lines = [
        "# HELP formpost_backlog Messages not yet delivered (pending or sending).",
        "# TYPE formpost_backlog gauge",
        f"formpost_backlog {stats.backlog}",
        "# HELP formpost_backlog_oldest_seconds Age of the oldest undelivered message.",
        "# TYPE formpost_backlog_oldest_seconds gauge",
        f"formpost_backlog_oldest_seconds {oldest:.3f}",
        "# HELP formpost_failed Messages in the failed state (dead letters).",
        "# TYPE formpost_failed gauge",
        f"formpost_failed {stats.counts['failed']}",
    ]
    return ("\n".join(lines) + "\n").encode()
