"""Liveness (/healthz) and readiness (/readyz) for load balancers and operators."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from .ledger import Ledger, StorageError

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
    ledger: Ledger = current_app.extensions["formpost.ledger"]
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
