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
import re
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
        _metrics["verdicts"] = Counter(
            "formpost_spam_verdicts",
            "Spam verdicts (accept, quarantine, drop) by form.",
            ["form", "verdict"],
        )
        _metrics["reasons"] = Counter(
            "formpost_spam_reasons",
            "Reasons behind spam verdicts, by layer and rule (reason code).",
            ["layer", "rule", "verdict"],
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


# Reason codes are fixed strings in the code; anything else (a future
# layer's typo) is counted as "other" so no label can grow without bound.
_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
VERDICT_NAMES = ("accept", "quarantine", "drop")


def verdict(form: str, name: str, reasons: list[tuple[str, str]]) -> None:
    """Count one verdict and each (layer, rule) behind it (no-op while off)."""
    counter = _metrics.get("verdicts")
    if counter is None:
        return
    name = name if name in VERDICT_NAMES else "other"
    counter.labels(form=form, verdict=name).inc()
    for layer, rule in reasons:
        _metrics["reasons"].labels(
            layer=layer if _CODE_RE.fullmatch(layer) else "other",
            rule=rule if _CODE_RE.fullmatch(rule) else "other",
            verdict=name,
        ).inc()


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
