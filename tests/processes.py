"""Shared by the tests that run Formpost's real processes (gunicorn, the worker).

Start and stop subprocesses in their own sessions, the environment they get,
gunicorn beside a delivery worker, its access log, polling, and the small
socket and HTML helpers those tests use to talk to the running server.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from app.clock import SystemClock
from app.ledger import Ledger, make_engine

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0
LISTENING_RE = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
# Access log lines as written with ACCESS_FORMAT: "<pid> METHOD /path status".
ACCESS_FORMAT = "%(p)s %(m)s %(U)s %(s)s"
ACCESS_RE = re.compile(r"^<(\d+)> (\S+) (\S+) (\d{3})$")
STRIPPED_PREFIXES = ("SMTP_", "MAIL_", "DATABASE_", "SECRET_KEY", "FORMPOST_")


@dataclass(frozen=True)
class Hit:
    """One line of gunicorn's access log."""

    pid: int
    method: str
    path: str
    status: int


def read_hits(access_path: Path) -> list[Hit]:
    """An access log written with ACCESS_FORMAT, parsed (none if not there yet)."""
    if not access_path.exists():
        return []
    hits = []
    for line in access_path.read_text(encoding="utf-8").splitlines():
        match = ACCESS_RE.match(line.strip())
        assert match, f"unexpected access log line: {line!r}"
        pid, method, path, status = match.groups()
        hits.append(Hit(int(pid), method, path, int(status)))
    return hits


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `check` until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def server_env(instance: Path) -> dict[str, str]:
    """The caller's environment minus every mail/secret setting, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    env.update(
        FORMPOST_ENV_FILE=os.devnull,
        INSTANCE_PATH=str(instance),
        # These tests post faster than a person and more than 5 times a minute.
        MIN_FILL_SECONDS="0",
        RATE_LIMIT="off",
        DEDUPE_WINDOW="0",  # and post the same text again and again
        SPAM_PROOF_OF_WORK="off",  # from no browser, so with no proof of work
        OUTBOX_POLL_INTERVAL="0.1",  # deliver promptly; the default is 1 s
        PYTHONUNBUFFERED="1",
    )
    return env


def start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `cmd` in the repository, in its own session, logging to a file."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to stop the process; SIGKILL its session if it lingers.

    SIGTERM stops gunicorn and its workers; nginx wants SIGQUIT (graceful).
    """
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the session we started, only
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def flask_cmd(*args: str) -> list[str]:
    """`flask --app wsgi ARGS...`, as run in production (worker, outbox ...)."""
    return [sys.executable, "-m", "flask", "--app", "wsgi", *args]


def gunicorn_cmd(access_path: Path, *options: str) -> list[str]:
    """`gunicorn wsgi:app` logging requests to `access_path` in ACCESS_FORMAT.

    Without --bind/--workers in `options` gunicorn.conf.py reads BIND and
    WEB_CONCURRENCY from the environment, as in a deployment.
    """
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "wsgi:app",
        *options,
        "--no-control-socket",  # no shared socket under $HOME between runs
        "--access-logfile",
        str(access_path),
        "--access-logformat",
        ACCESS_FORMAT,
        "--graceful-timeout",
        "5",
    ]


def wait_for_port(proc: subprocess.Popen, log_path: Path) -> int:
    """The port gunicorn bound (127.0.0.1:0 lets the kernel pick), from its log."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        match = LISTENING_RE.search(log_path.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(
        f"gunicorn did not start listening (exit {proc.poll()}):\n"
        + log_path.read_text(errors="replace")
    )


@dataclass
class Served:
    """gunicorn and the delivery worker beside it, with their log files."""

    proc: subprocess.Popen
    worker: subprocess.Popen
    port: int
    log_path: Path
    access_path: Path
    worker_log_path: Path


@contextmanager
def gunicorn_and_worker(
    env: dict[str, str], folder: Path, *options: str
) -> Iterator[Served]:
    """Start gunicorn (plus `options`) and a delivery worker at once.

    Their logs go to `folder` (gunicorn.log, gunicorn-access.log, worker.log).
    Yields once gunicorn listens; stops the worker, then gunicorn, afterwards.
    """
    log_path = folder / "gunicorn.log"
    access_path = folder / "gunicorn-access.log"
    worker_log_path = folder / "worker.log"
    proc = start(gunicorn_cmd(access_path, *options), env, log_path)
    worker = start(flask_cmd("worker"), env, worker_log_path)
    try:
        port = wait_for_port(proc, log_path)
        yield Served(proc, worker, port, log_path, access_path, worker_log_path)
    finally:
        stop(worker)
        stop(proc)


def hold_worker(port: int, settle: float) -> socket.socket:
    """Send half a request: the sync worker that accepts it now waits on it.

    (A gthread worker would go on accepting; tests that steer use sync.)

    `settle` is how long to give a worker to accept the connection.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    time.sleep(settle)
    return sock


def release(sock: socket.socket) -> None:
    """Finish the held request and read the answer: its worker is free again."""
    with sock:
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]


def ledger_rows(database_url: str) -> list:
    """Every stored submission, read straight from the ledger database."""
    engine = make_engine(database_url)
    try:
        return Ledger(engine, SystemClock()).rows(limit=1000)
    finally:
        engine.dispose()


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "input" and attributes.get("name"):
            self.values[attributes["name"]] = attributes.get("value") or ""


def form_inputs(page: str) -> dict[str, str]:
    """Map the page's <input name=...> to their values."""
    parser = _Inputs()
    parser.feed(page)
    return parser.values
