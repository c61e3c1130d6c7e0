"""Real nginx (TLS) in front of real gunicorn, as in a deployment.

nginx terminates TLS with a trustme certificate for 127.0.0.1, limits bodies
to 64k and appends X-Forwarded-* headers; gunicorn runs wsgi:app with
TRUSTED_PROXY_HOPS=1 beside a delivery worker. Every file nginx needs (pid,
logs, temp folders) lives in tmp_path, so no root paths are touched. Requests
go over HTTPS with http.client, trusting only the test CA.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
import trustme

from .processes import (
    START_TIMEOUT,
    form_inputs,
    gunicorn_and_worker,
    ledger_rows,
    server_env,
    start,
    stop,
    wait_until,
)
from .relay import free_port

pytestmark = pytest.mark.slow

NGINX = (
    "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
) or shutil.which("nginx")
if NGINX is None:
    pytest.skip(
        "nginx is not installed (/usr/sbin/nginx or nginx on PATH): "
        "apt-get install nginx-light",
        allow_module_level=True,
    )

SITE = "https://www.example.com"
JSON_HEADERS = {
    "Origin": SITE,
    "Accept": "application/json",
    "Content-Type": "application/json",
}

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {tmp}/error.log info;

events {{
    worker_connections 64;
}}

http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name 127.0.0.1;
        ssl_certificate {tmp}/server.pem;
        ssl_certificate_key {tmp}/server.key;
        client_max_body_size 64k;

        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_connect_timeout 5s;
            proxy_send_timeout 15s;
            proxy_read_timeout 15s;
        }}
    }}
}}
"""


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Stack:
    """nginx on `port` (HTTPS) in front of gunicorn, and how to reach both."""

    port: int
    context: ssl.SSLContext
    database_url: str
    tmp: Path
    upstream_access_log: Path

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request over a fresh TLS connection to nginx; redirects not followed."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context, timeout=15
        )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def post_json(self, fields: dict[str, str], **headers: str) -> Reply:
        body = json.dumps(fields).encode()
        return self.request("POST", "/f/default", body, {**JSON_HEADERS, **headers})

    def rows(self) -> list:
        """Every stored submission, read straight from the ledger database."""
        return ledger_rows(self.database_url)

    def upstream_posts(self) -> list[str]:
        """The POST lines of gunicorn's access log: what got past nginx."""
        path = self.upstream_access_log
        if not path.exists():
            return []
        return [ln for ln in path.read_text().splitlines() if " POST " in ln]

    def nginx_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def fields(n: int = 1) -> dict[str, str]:
    return {
        "name": "Ada Lovelace",
        "email": "ada@example.net",
        "message": f"Message number {n} through nginx.",
    }


def _start_nginx(tmp: Path, upstream: int, context: ssl.SSLContext):
    """Start nginx on a free port (retrying if another process takes it)."""
    # As root the workers would drop to "nobody", who cannot enter tmp_path.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    for _attempt in range(3):
        port = free_port()
        (tmp / "error.log").write_text("")
        conf = tmp / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(tmp=tmp, port=port, upstream=upstream, user=user)
        )
        args = ["-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
        check = subprocess.run(
            [NGINX, "-t", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
        proc = start([NGINX, *args], dict(os.environ), tmp / "nginx.out")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            probe = http.client.HTTPSConnection(
                "127.0.0.1", port, context=context, timeout=2
            )
            try:
                probe.connect()
                return proc, port
            except OSError:
                time.sleep(0.05)
            finally:
                probe.close()
        stop(proc, signal.SIGQUIT)  # graceful
        if "Address already in use" not in (tmp / "error.log").read_text():
            break
    raise AssertionError(
        "nginx did not start:\n" + (tmp / "error.log").read_text(errors="replace")
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """gunicorn (+ delivery worker) behind nginx with TLS; all stopped afterwards."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    for n, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(tmp_path / "server.pem"), append=n > 0)
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    context = ssl.create_default_context()
    ca.configure_trust(context)

    database_url = f"sqlite:///{tmp_path}/ledger.db"
    env = server_env(tmp_path / "instance")
    env.update(
        BIND="127.0.0.1:0",  # read the port gunicorn got from its log
        WEB_CONCURRENCY="2",
        DATABASE_URL=database_url,
        TRUSTED_PROXY_HOPS="1",
        ALLOWED_ORIGINS=SITE,
        RATE_LIMIT="3/minute",
        MIN_FILL_SECONDS="0",
    )
    with gunicorn_and_worker(env, tmp_path) as upstream:
        nginx, port = _start_nginx(tmp_path, upstream.port, context)
        try:
            server = Stack(port, context, database_url, tmp_path, upstream.access_path)
            wait_until(
                lambda: _healthy(server), START_TIMEOUT, "/healthz through nginx"
            )
            yield server
        finally:
            stop(nginx, signal.SIGQUIT)  # graceful


def _healthy(server: Stack) -> bool:
    try:
        return server.request("GET", "/healthz").status == 200
    except OSError:
        return False


def test_forged_forwarded_for_changes_neither_ip_nor_rate_limit(stack: Stack) -> None:
    """X-Forwarded-For from the client is not believed: nginx's peer is the IP.

    Each post forges another address; the ledger stores 127.0.0.1 for all,
    and the 3/minute limit counts them together, so the 4th is refused.
    """
    replies = [
        stack.post_json(fields(n), **{"X-Forwarded-For": f"6.6.6.{n}"})
        for n in range(1, 5)
    ]
    statuses = [r.status for r in replies]
    assert statuses == [200, 200, 200, 429], [r.body for r in replies]
    assert all(r.json()["ok"] for r in replies[:3])
    refused = replies[3]
    assert refused.json()["ok"] is False
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The refusal came from Formpost (not nginx), which saw all four posts.
    wait_until(lambda: len(stack.upstream_posts()) >= 4, 5.0, "4 access log lines")
    assert [ln.split()[-1] for ln in stack.upstream_posts()] == [
        "200",
        "200",
        "200",
        "429",
    ]

    rows = stack.rows()
    assert sorted(r.receipt for r in rows) == sorted(
        r.json()["id"] for r in replies[:3]
    )
    assert [r.client_ip for r in rows] == ["127.0.0.1"] * 3
    # And the delivery worker beside gunicorn delivers them (Maildir, dev mode).
    new = stack.tmp / "instance" / "maildir" / "new"
    wait_until(
        lambda: new.is_dir() and len(list(new.iterdir())) == 3, 10.0, "3 messages"
    )


def test_scheme_is_https_behind_tls(stack: Stack) -> None:
    """The thank-you redirect is https://, cookies are Secure, HSTS is sent."""
    page = stack.request("GET", "/")
    assert page.status == 200
    assert (page.headers["Strict-Transport-Security"] or "").startswith("max-age=")
    cookies = page.headers.get_all("Set-Cookie") or []
    session = [c for c in cookies if c.startswith("session=")]
    assert session, cookies
    jar = SimpleCookie(session[0])
    assert jar["session"]["secure"] is True, session[0]
    assert jar["session"]["httponly"] is True, session[0]
    assert jar["session"]["samesite"] == "Lax", session[0]

    body = urlencode(fields()).encode()
    reply = stack.request(
        "POST",
        "/f/default",
        body,
        {
            "Origin": SITE,
            "Referer": SITE + "/contact.html",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "text/html",
        },
    )
    assert reply.status == 303, reply.body
    location = reply.headers["Location"]
    assert location.startswith("https://"), location
    assert urlsplit(location).path == "/f/default/thanks"
    assert (reply.headers["Strict-Transport-Security"] or "").startswith("max-age=")
    (row,) = stack.rows()
    assert f"receipt={row.receipt}" in location


def test_redirect_keeps_the_public_port(stack: Stack) -> None:
    """The thank-you redirect names nginx's own host:port, not port 443."""
    reply = stack.request(
        "POST",
        "/f/default",
        urlencode(fields()).encode(),
        {"Origin": SITE, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 303, reply.body
    assert urlsplit(reply.headers["Location"]).netloc == f"127.0.0.1:{stack.port}"


def test_hosted_form_posts_through_the_proxy(stack: Stack) -> None:
    """The hosted form, posted with the browser's Referer, is accepted (303)."""
    page = stack.request("GET", "/")
    assert page.status == 200
    cookie = SimpleCookie(page.headers["Set-Cookie"])["session"].value
    data = form_inputs(page.body.decode())
    data.update(fields(), subject="Through nginx")
    reply = stack.request(
        "POST",
        "/",
        urlencode(data).encode(),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"session={cookie}",
            "Origin": stack.base,
            "Referer": stack.base + "/",
        },
    )
    assert reply.status == 303, reply.body.decode()[:2000]
    assert urljoin(stack.base + "/", reply.headers["Location"]) == (
        stack.base + "/thanks"
    )
    assert len(stack.rows()) == 1


def test_oversize_body_is_refused_by_nginx(stack: Stack) -> None:
    """100 KiB gets 413 from nginx itself: gunicorn never sees it, nothing stored."""
    big = {**fields(), "message": "x" * (100 * 1024)}
    reply = stack.post_json(big)
    assert reply.status == 413
    assert reply.headers["Server"].startswith("nginx")
    assert stack.upstream_posts() == []
    assert stack.rows() == []
    assert "client intended to send too large body" in stack.nginx_log()

    # Control: a normal post on the same path is accepted and stored.
    ok = stack.post_json(fields())
    assert ok.status == 200, ok.body
    wait_until(stack.upstream_posts, 5.0, "the access log line")
    assert len(stack.upstream_posts()) == 1
    assert [r.receipt for r in stack.rows()] == [ok.json()["id"]]
