"""Prometheus metrics at /metrics, off unless METRICS_TOKEN is set.

Counters live in prometheus-client's multiprocess files (PROMETHEUS_MULTIPROC_DIR,
by default `<instance>/metrics`), so every gunicorn worker and every delivery
worker on the machine adds to the same totals. The backlog is read from the
ledger at scrape time, so it is right across machines too. The endpoint wants
`Authorization: Bearer <METRICS_TOKEN>`; health.py serves it. This module
imports nothing of ours: the request path and the workers count through it.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

_metrics: dict[str, Any] = {}


def init_app(app: Flask) -> None:
    """Set up the counters (once per process), when enabled."""
    if not app.config["METRICS_TOKEN"]:
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = os.path.join(app.instance_path, "metrics")
        # prometheus-client reads this when first imported, just below.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    if not _metrics:
        from prometheus_client import Counter, Histogram

        _metrics["submissions"] = Counter(
            "formpost_submissions",
            "Submissions accepted or rejected, by form and reason.",
            ["form", "outcome", "reason"],
        )
        _metrics["deliveries"] = Counter(
            "formpost_deliveries",
            "Delivery attempts by outcome (sent, retry, failed, expired).",
            ["outcome"],
        )
        _metrics["notifications"] = Counter(
            "formpost_notifications",
            "Deliveries beyond the email (webhook, apprise, autoresponse) by "
            "outcome (sent, pending, failed, disabled).",
            ["channel", "outcome"],
        )
        _metrics["latency"] = Histogram(
            "formpost_delivery_latency_seconds",
            "Time from submission to the relay's acceptance.",
            buckets=(1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 432000),
        )


def submission(form: str, outcome: str, reason: str = "") -> None:
    """Count one submission (a no-op while metrics are off)."""
    counter = _metrics.get("submissions")
    if counter is not None:
        counter.labels(form=form, outcome=outcome, reason=reason).inc()


def delivery(outcome: str, latency: float | None = None) -> None:
    """Count one delivery attempt; for a sent message, observe its latency."""
    counter = _metrics.get("deliveries")
    if counter is not None:
        counter.labels(outcome=outcome).inc()
        if latency is not None:
            _metrics["latency"].observe(max(0.0, latency))


def notification(channel: str, outcome: str) -> None:
    """Count one attempt on a channel beyond the email."""
    counter = _metrics.get("notifications")
    if counter is not None:
        counter.labels(channel=channel, outcome=outcome).inc()
