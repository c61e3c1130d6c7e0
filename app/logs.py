"""Logging: text or JSON lines, a request id on every line, one line per request.

Never logged: message bodies, field values, passwords, secret keys. Delivery
lines carry the receipt and Message-ID; request lines carry the request id,
and the receipt when a submission was stored.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request

# Safe to echo into logs and headers: what proxies put in X-Request-ID.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
# LogRecord attributes of our own that a line may carry.
FIELDS = (
    "request_id",
    "receipt",
    "verdict",
    "reasons",
    "message_id",
    "form",
    "method",
    "path",
    "status",
    "duration_ms",
    "attempt",
    "outcome",
    "delay_s",
    "worker",
)
# Already spelled out in the text of request lines.
_IN_TEXT_MESSAGE = {"method", "path", "status"}
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


class _RequestContext(logging.Filter):
    """Add the current request's id to every record made while serving it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None) and has_request_context():
            record.request_id = g.get("request_id")
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and our fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key in FIELDS and value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with our fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(name)s] %(message)s")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        message = record.getMessage()
        extra = [
            f"{key}={record.__dict__[key]}"
            for key in FIELDS
            if key not in _IN_TEXT_MESSAGE
            and record.__dict__.get(key) is not None
            and f"{key}=" not in message
        ]
        return f"{text} {' '.join(extra)}" if extra else text


class NotFormpost(logging.Filter):
    """Pass other loggers' records: Formpost's have a handler of their own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "formpost" and not record.name.startswith("formpost.")


def configure(level: str, fmt: str) -> None:
    """Send Formpost's loggers to stderr in the chosen format (idempotent).

    With JSON, every other logger's lines (libraries, Flask, Python warnings)
    are JSON too, unless someone else (gunicorn.conf.py, pytest) already
    handles the root logger.
    """
    logger = logging.getLogger("formpost")
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if getattr(h, "formpost", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.formpost = True  # type: ignore[attr-defined]
        handler.addFilter(_RequestContext())
        logger.addHandler(handler)
        # Our lines are complete here; the root logger (gunicorn's, pytest's)
        # still gets them for capture, but do not print them twice.
        logger.propagate = True
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    if not root.handlers:
        root.setLevel(logging.WARNING)
        if fmt == "json":
            others = logging.StreamHandler()
            others.addFilter(NotFormpost())
            others.setFormatter(JSONFormatter())
            root.addHandler(others)
            logging.captureWarnings(True)


def json_line(level: str, logger: str, message: str, **fields: object) -> str:
    """One JSON log line made without a logging set-up (start-up failures)."""
    record = logging.LogRecord(
        logger, logging.getLevelName(level), "", 0, "", None, None
    )
    record.msg = message
    line = json.loads(JSONFormatter().format(record))
    line.update(fields)
    return json.dumps(line, ensure_ascii=False)


def init_app(app: Flask) -> None:
    """Give each request an id and log one line per request."""
    configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    log = logging.getLogger("formpost.request")

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = (
            incoming if REQUEST_ID_RE.match(incoming) else secrets.token_hex(8)
        )
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        started = g.get("request_started")
        if (
            started is not None
            and log.isEnabledFor(logging.INFO)
            and request.endpoint != "static"
        ):
            log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "receipt": g.get("receipt"),
                    # The spam verdict and its reason codes, never content.
                    "verdict": g.get("verdict"),
                    "reasons": g.get("reasons"),
                    "form": (request.view_args or {}).get("form_id"),
                },
            )
        return response
