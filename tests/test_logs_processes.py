"""LOG_FORMAT=json from real processes: every line gunicorn's master and
workers write is one JSON object, and a request is logged once. Text stays as
it was: gunicorn's plain lines and its access line beside the app's.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
from pathlib import Path

import pytest

from .processes import flask_cmd, server_env, start, wait_for_port, wait_until

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def gunicorn(tmp_path: Path, **settings: str):
    env = server_env(tmp_path / "instance")
    env.update(BIND="127.0.0.1:0", WEB_CONCURRENCY="2", **settings)
    log_path = tmp_path / "gunicorn.log"
    # Exactly as deployed: no logging options on the command line.
    return start([str(BIN / "gunicorn"), "wsgi:app"], env, log_path), log_path


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def parsed(log_path: Path) -> list[dict]:
    """Every line of the output as JSON; fails on the first line that is not."""
    lines = log_path.read_text().splitlines()
    assert lines
    objects = []
    for line in lines:
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return objects


def test_json_every_line_from_start_to_shutdown_and_one_line_a_request(tmp_path):
    proc, log_path = gunicorn(tmp_path, LOG_FORMAT="json")
    try:
        port = wait_for_port(proc, log_path)
        assert get(port, "/healthz") == 200
        assert get(port, "/no-such-page") == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    assert status == 0

    lines = parsed(log_path)
    messages = [line["msg"] for line in lines]
    assert any(m.startswith("Starting gunicorn") for m in messages)
    assert any(m.startswith("Booting worker") for m in messages)
    assert "Handling signal: term" in messages
    assert any(m.startswith("Shutting down") for m in messages)
    for path, status in (("/healthz", 200), ("/no-such-page", 404)):
        (request,) = [line for line in lines if path in line["msg"]]
        assert (request["path"], request["status"]) == (path, status)
        assert request["logger"] == "formpost.request" and request["request_id"]
    assert {line["level"] for line in lines} <= {"info", "warning", "error"}


def test_json_a_stopped_start_up_is_json_too(tmp_path):
    proc, log_path = gunicorn(tmp_path, LOG_FORMAT="json", SMTP_PORT="abc")
    assert proc.wait(timeout=30) == 78

    lines = parsed(log_path)
    (fail,) = [line for line in lines if line["msg"].startswith("FAIL")]
    assert "SMTP_PORT must be a whole number" in fail["msg"]
    assert fail["level"] == "critical" and fail["check"] == "configuration"
    assert "correct it" in fail["fix"]


def test_text_keeps_gunicorn_lines_and_its_access_line(tmp_path):
    proc, log_path = gunicorn(tmp_path)
    try:
        port = wait_for_port(proc, log_path)
        assert get(port, "/healthz") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    text = log_path.read_text()
    assert "[INFO] Starting gunicorn" in text
    requests = [line for line in text.splitlines() if "/healthz" in line]
    # The app's line and gunicorn's combined access line.
    assert len(requests) == 2, requests
    assert any("[formpost.request] GET /healthz 200" in line for line in requests)
    assert any('"GET /healthz HTTP/1.1" 200' in line for line in requests)
    assert not any(line.startswith("{") for line in text.splitlines())


def test_json_every_line_of_the_delivery_worker(tmp_path):
    env = server_env(tmp_path / "instance")
    env.update(LOG_FORMAT="json")
    log_path = tmp_path / "worker.log"
    proc = start(flask_cmd("worker"), env, log_path)
    try:
        wait_until(
            lambda: "delivering through" in log_path.read_text(), 20, "the worker"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    assert status == 0
    messages = [line["msg"] for line in parsed(log_path)]
    assert any(m.endswith("stopped") for m in messages)
