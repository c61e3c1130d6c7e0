"""The production entry point for real: gunicorn serving wsgi:app, two workers.

No SMTP_*/MAIL_* settings and no .env, so Formpost runs in development mode:
the web tier stores each submission in the ledger under INSTANCE_PATH, and a
delivery worker (`flask --app wsgi worker`, started beside gunicorn as in
production) writes it into the Maildir there. Requests go over real sockets
with urllib; nothing inside the app is touched.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.client import HTTPMessage
from http.cookiejar import CookieJar
from pathlib import Path
from typing import TypeVar
from urllib.error import HTTPError
from urllib.parse import urlencode, urlsplit

import pytest

from .processes import (
    REPO,
    START_TIMEOUT,
    Hit,
    flask_cmd,
    form_inputs,
    gunicorn_and_worker,
    hold_worker,
    read_hits,
    release,
    server_env,
    wait_until,
)

pytestmark = pytest.mark.slow

WORKERS = 2
T = TypeVar("T")


@dataclass
class Gunicorn:
    """A running gunicorn master, the delivery worker, their logs and folder."""

    proc: subprocess.Popen
    port: int
    instance: Path
    log_path: Path
    access_path: Path
    worker_log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def maildir_new(self) -> Path:
        return self.instance / "maildir" / "new"

    def log(self) -> str:
        """Everything gunicorn and the app wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def worker_log(self) -> str:
        """Everything the delivery worker wrote so far."""
        return self.worker_log_path.read_text(encoding="utf-8", errors="replace")

    def hits(self) -> list[Hit]:
        """The access log, parsed."""
        return read_hits(self.access_path)

    def logged(self, action: Callable[[], T]) -> tuple[T, Hit]:
        """Run one request and return its result and its access log entry.

        Only use with nothing else in flight: the next log line is its line.
        """
        before = len(self.hits())
        result = action()
        wait_until(lambda: len(self.hits()) > before, 5.0, "access log line")
        return result, self.hits()[before]


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    """Start gunicorn on a free loopback port plus one delivery worker.

    Both start at once on an empty instance folder, as a deployment would;
    the fixture returns when /healthz answers and the worker is polling.
    """
    instance = tmp_path / "instance"
    env = server_env(instance)
    # The kernel picks a free port; gunicorn_and_worker reads it from the log.
    # Sync workers: test_posts_across_both_workers steers posts by holding a
    # worker with half a request.
    options = ["--bind", "127.0.0.1:0", "--workers", str(WORKERS)]
    options += ["--worker-class", "sync", "--threads", "1"]
    with gunicorn_and_worker(env, tmp_path, *options) as served:
        server = Gunicorn(
            served.proc,
            served.port,
            instance,
            served.log_path,
            served.access_path,
            served.worker_log_path,
        )
        _wait_for_health(server)
        _wait_for_worker(served.worker, server)
        yield server


def _wait_for_health(server: Gunicorn) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            if Client(server.base).get("/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(
        f"/healthz did not answer within {START_TIMEOUT}s:\n" + server.log()
    )


def _wait_for_worker(worker: subprocess.Popen, server: Gunicorn) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and worker.poll() is None:
        if "delivering through Maildir" in server.worker_log():
            return
        time.sleep(0.05)
    raise AssertionError(
        f"the delivery worker did not start (exit {worker.poll()}):\n"
        + server.worker_log()
    )


@dataclass
class Reply:
    status: int
    headers: HTTPMessage
    body: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand redirects back to the caller instead of following them."""

    def redirect_request(self, *args, **kwargs):
        return None


class Client:
    """A cookie-keeping HTTP client that never follows redirects or proxies."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),  # loopback never goes via $http_proxy
            urllib.request.HTTPCookieProcessor(self.cookies),
            _NoRedirect(),
        )

    def request(self, path: str, data: dict[str, str] | None = None) -> Reply:
        body = urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body)
        try:
            with self.opener.open(req, timeout=10) as resp:
                return Reply(resp.status, resp.headers, resp.read().decode())
        except HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.headers, exc.read().decode())

    def get(self, path: str) -> Reply:
        return self.request(path)

    def post(self, path: str, data: dict[str, str]) -> Reply:
        return self.request(path, data)


def fill_form(client: Client, **fields: str) -> dict[str, str]:
    """GET the form like a browser; return a complete post with its CSRF token."""
    page = client.get("/")
    assert page.status == 200, page.body
    inputs = form_inputs(page.body)
    assert inputs.get("csrf_token"), "the form carries no CSRF token"
    data = {
        "csrf_token": inputs["csrf_token"],
        # Development mode has one recipient alias, sent as a hidden input.
        "recipient": inputs.get("recipient", "demo"),
        "name": "Ada Lovelace",
        "email": "ada@example.net",
        "subject": "Hello from gunicorn",
        "message": "A question about engines.\nSecond line: café.",
    }
    data.update(fields)
    return data


def maildir_messages(server: Gunicorn) -> list[EmailMessage]:
    new = server.maildir_new
    if not new.is_dir():
        return []
    return [
        message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for path in sorted(new.iterdir())
    ]


def assert_thanks_redirect(reply: Reply) -> None:
    assert reply.status == 303, reply.body
    assert urlsplit(reply.headers["Location"]).path == "/thanks"


def test_healthz_and_startup_log(gunicorn: Gunicorn) -> None:
    """/healthz answers JSON ok; the log says development mode and where mail goes."""
    reply = Client(gunicorn.base).get("/healthz")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "application/json"
    assert json.loads(reply.body) == {"status": "ok"}

    log = gunicorn.log()
    assert "development mode" in log.lower()
    assert f"Maildir {gunicorn.instance / 'maildir'}" in log
    # The generated development key stays in its file, never in the log.
    key = (gunicorn.instance / "dev-secret-key").read_text().strip()
    assert len(key) >= 32
    assert key not in log


def test_form_post_lands_in_maildir(gunicorn: Gunicorn) -> None:
    """GET the form, POST it with the session cookie: 303 and one Maildir message."""
    client = Client(gunicorn.base)
    page = client.get("/")
    assert page.status == 200
    assert "Development mode." in page.body
    assert "Maildir" in page.body
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert any(c.name == "session" for c in client.cookies), "no session cookie"

    subject = f"Hello from gunicorn {uuid.uuid4().hex[:8]}"
    data = fill_form(client, subject=subject)
    assert_thanks_redirect(client.post("/", data))

    thanks = client.get("/thanks")
    assert thanks.status == 200
    assert "Thank you" in thanks.body
    receipt = re.search(r'class="receipt">[^<]*<strong>([^<]+)</strong>', thanks.body)
    assert receipt, thanks.body

    wait_until(lambda: maildir_messages(gunicorn), 10.0, "a message in the Maildir")
    files = list(gunicorn.maildir_new.iterdir())
    assert len(files) == 1, files
    assert subject.encode() in files[0].read_bytes()
    (msg,) = maildir_messages(gunicorn)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].addr_spec == "demo@example.com"
    assert msg["Reply-To"].addresses[0].addr_spec == "ada@example.net"
    body = msg.get_body(preferencelist=("plain",)).get_content()
    assert "Second line: café." in body
    assert list((gunicorn.instance / "maildir" / "tmp").iterdir()) == []
    # The receipt the visitor was shown is the one the worker delivered.
    wait_until(
        lambda: f"delivered receipt={receipt.group(1)}" in gunicorn.worker_log(),
        5.0,
        "the worker to log the delivery",
    )


def test_invalid_posts_are_rejected(gunicorn: Gunicorn) -> None:
    """An empty subject and a post without CSRF token get 400; nothing is stored."""
    client = Client(gunicorn.base)
    reply = client.post("/", fill_form(client, subject="  "))
    assert reply.status == 400
    assert "Enter a subject." in reply.body
    assert "A question about engines." in reply.body  # the text is kept

    data = fill_form(client)
    del data["csrf_token"]
    reply = Client(gunicorn.base).post("/", data)
    assert reply.status == 400

    listing = subprocess.run(
        flask_cmd("outbox", "list"),
        cwd=REPO,
        env=server_env(gunicorn.instance),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "no submissions" in listing.stdout, listing.stdout + listing.stderr
    assert maildir_messages(gunicorn) == []


def test_posts_across_both_workers(gunicorn: Gunicorn) -> None:
    """Tokens minted by one worker validate in the other: the dev key is shared."""
    wait_until(
        lambda: gunicorn.log().count("development mode") >= WORKERS,
        START_TIMEOUT,
        "both workers to load the app",
    )
    crossings = 0
    posts: list[Hit] = []

    # Force one crossing: keep a worker busy while the form is fetched, then
    # keep the other busy while it is posted.
    client = Client(gunicorn.base)
    first = hold_worker(gunicorn.port, settle=0.3)
    data, get_hit = gunicorn.logged(lambda: fill_form(client, subject="crossing"))
    second = hold_worker(gunicorn.port, settle=0.3)
    gunicorn.logged(lambda: release(first))
    reply, post_hit = gunicorn.logged(lambda: client.post("/", data))
    gunicorn.logged(lambda: release(second))
    assert_thanks_redirect(reply)
    posts.append(post_hit)
    crossings += get_hit.pid != post_hit.pid

    # And several ordinary visitors, each with its own session.
    for n in range(6):
        client = Client(gunicorn.base)
        data, get_hit = gunicorn.logged(
            lambda c=client, n=n: fill_form(c, subject=f"n{n}")
        )
        reply, post_hit = gunicorn.logged(lambda c=client, d=data: c.post("/", d))
        assert_thanks_redirect(reply)
        posts.append(post_hit)
        crossings += get_hit.pid != post_hit.pid

    assert all(hit.method == "POST" and hit.status == 303 for hit in posts), posts
    served_by = {hit.pid for hit in gunicorn.hits()}
    assert len(served_by) == WORKERS, gunicorn.hits()
    assert crossings >= 1, gunicorn.hits()
    wait_until(lambda: len(maildir_messages(gunicorn)) == 7, 10.0, "7 messages")
    subjects = sorted(str(m["Subject"]) for m in maildir_messages(gunicorn))
    assert subjects == sorted(["crossing"] + [f"n{n}" for n in range(6)])
