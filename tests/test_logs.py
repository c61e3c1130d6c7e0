"""Log lines: one per request and per delivery attempt, with ids, without secrets."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.logs import JSONFormatter, TextFormatter, _RequestContext

from .helpers import deliver, post_form
from .relay import PASSWORD

ROOT = Path(__file__).resolve().parent.parent
SECRET_BODY = "my secret message body 4711"


@pytest.fixture
def json_lines():
    """Capture the formpost loggers' lines as Formpost formats them in JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(_RequestContext())
    logger = logging.getLogger("formpost")
    logger.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)


def test_a_request_line_and_a_delivery_line_carry_the_ids(make_app, relay, json_lines):
    app = make_app(relay.env(LOG_FORMAT="json", SECRET_KEY="s3cret-key-for-logs-0001"))
    client = app.test_client()
    response = post_form(client, message=SECRET_BODY, subject="Logged subject")
    request_id = response.headers["X-Request-ID"]
    deliver(app)
    lines = json_lines()
    (post_line,) = [x for x in lines if x.get("method") == "POST"]
    (row,) = app.extensions["formpost"].ledger.rows()
    assert post_line["request_id"] == request_id
    assert post_line["status"] == 303 and post_line["path"] == "/"
    assert post_line["receipt"] == row.receipt
    assert post_line["duration_ms"] >= 0
    (sent,) = [x for x in lines if x.get("outcome") == "sent"]
    assert sent["receipt"] == row.receipt
    assert sent["message_id"] == row.message_id
    assert sent["attempt"] == 1
    text = "\n".join(json.dumps(x) for x in lines)
    for secret in (SECRET_BODY, PASSWORD, "s3cret-key-for-logs-0001"):
        assert secret not in text


def test_a_proxy_request_id_is_kept_and_a_bad_one_replaced(make_app, relay):
    client = make_app(relay.env()).test_client()
    kept = client.get("/healthz", headers={"X-Request-ID": "req-0123456789abcdef"})
    assert kept.headers["X-Request-ID"] == "req-0123456789abcdef"
    for forged in ("<script>alert(1)</script>", "short", "a" * 65, "id with spaces"):
        bad = client.get("/healthz", headers={"X-Request-ID": forged})
        assert bad.headers["X-Request-ID"] != forged
        assert len(bad.headers["X-Request-ID"]) == 16


def test_retries_log_the_delay_and_the_error_kind(make_app, relay, json_lines):
    app = make_app(relay.env(LOG_FORMAT="json"))
    relay.reply_next("RCPT", "451 4.3.0 try later")
    post_form(app.test_client())
    deliver(app)
    (retry,) = [x for x in json_lines() if x.get("outcome") == "retry"]
    assert retry["delay_s"] > 0 and retry["level"] == "info"
    assert "451" in retry["msg"]


def test_text_format_appends_the_fields():
    record = logging.LogRecord("formpost.x", logging.INFO, "", 0, "hello", None, None)
    record.receipt = "ABCD-EFGH"
    line = TextFormatter().format(record)
    assert line.endswith("hello receipt=ABCD-EFGH")


@pytest.mark.slow
def test_the_worker_process_writes_json_lines(make_relay, tmp_path):
    relay = make_relay()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "MAIL_"))}
    env.update(relay.env())
    env.update(
        FORMPOST_ENV_FILE=os.devnull,
        INSTANCE_PATH=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path}/ledger.db",
        LOG_FORMAT="json",
        OUTBOX_POLL_INTERVAL="0.1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "worker"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("delivering through" in x["msg"] for x in lines)
    assert any(x["msg"].endswith("stopped") for x in lines)
    assert PASSWORD not in err


def _gunicorn_settings() -> dict:
    namespace: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_gunicorn_logs_json_when_log_format_says_so(monkeypatch, tmp_path, where):
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    if where == "environment":
        monkeypatch.setenv("LOG_FORMAT", "JSON")
    else:
        env_file = tmp_path / "formpost.env"
        env_file.write_text("LOG_FORMAT=json\n")
        monkeypatch.setenv("FORMPOST_ENV_FILE", str(env_file))
    settings = _gunicorn_settings()
    assert settings["accesslog"] is None  # the app's line is the request's one
    config = settings["logconfig_dict"]
    assert config["loggers"]["gunicorn.error"]["handlers"] == ["json"]
    assert config["formatters"]["json"]["()"] == "app.logs.JSONFormatter"
    assert "LOG_FORMAT" not in os.environ or where == "environment"


@pytest.mark.parametrize("value", [None, "text"])
def test_gunicorn_keeps_its_own_lines_with_text(monkeypatch, value):
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    if value:
        monkeypatch.setenv("LOG_FORMAT", value)
    settings = _gunicorn_settings()
    assert settings["accesslog"] == "-"
    assert "logconfig_dict" not in settings
