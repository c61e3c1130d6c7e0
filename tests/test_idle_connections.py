"""The image's web role stays answerable while 200 idle and slow connections wait.

No Docker engine runs here, so the test runs what the image runs: the
Dockerfile's CMD, read from the Dockerfile, from the repository (the image's
/app), with the image's settings (BIND, and the gunicorn.conf.py and nginx
config files it copies), as real processes on loopback. It then holds 200
connections that send nothing and 20 that trickle their headers, and asks
for /healthz, the form and a post of it, each within 2 s.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy

from .processes import (
    REPO,
    START_TIMEOUT,
    form_inputs,
    server_env,
    start,
    stop,
    wait_until,
)
from .relay import free_port

pytestmark = pytest.mark.slow

if not (os.path.exists("/usr/sbin/nginx") or shutil.which("nginx")):
    pytest.skip(
        "nginx is not installed: apt-get install nginx-light", allow_module_level=True
    )

IDLE = 200
SLOW = 20
ANSWER_WITHIN = 2.0


def image_cmd() -> list[str]:
    """The Dockerfile's CMD (exec form), as the image would run it."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = [line.strip()[4:] for line in text.splitlines() if line.startswith("CMD ")]
    return json.loads(cmd)


def image_env(tmp_path: Path, port: int) -> dict[str, str]:
    """The image's environment: its ENV lines, then the test's own paths."""
    env = server_env(tmp_path / "instance")
    text = (REPO / "Dockerfile").read_text()
    assert "BIND=0.0.0.0:8000" in text  # the image listens on all addresses
    env.update(
        BIND=f"127.0.0.1:{port}",  # loopback only, a free port
        FORMPOST_RUN_DIR=str(tmp_path / "run"),
        DATABASE_URL=f"sqlite:///{tmp_path}/ledger.db",
        # The image's `python`, `gunicorn` (and nginx in /usr/sbin) on PATH.
        PATH=os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", ""), "/usr/sbin"]
        ),
    )
    env.pop("WEB_CONCURRENCY", None)
    env.pop("WEB_THREADS", None)
    return env


def get(port: int, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN + 3)
    try:
        conn.request("GET", path, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.headers, reply.read()
    finally:
        conn.close()


@contextmanager
def running_image(tmp_path: Path, **settings: str) -> Iterator[int]:
    """Run the image's CMD with `settings`; yield its port once /healthz answers."""
    port = free_port()
    log = tmp_path / "web.log"
    proc = start(image_cmd(), {**image_env(tmp_path, port), **settings}, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("web did not start:\n" + log.read_text())
            time.sleep(0.1)
        yield port
    finally:
        stop(proc)
        assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.fixture
def image_web(tmp_path: Path) -> Iterator[int]:
    with running_image(tmp_path) as port:
        yield port


def stored(tmp_path: Path) -> list:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/ledger.db")
    try:
        with engine.connect() as conn:
            query = sqlalchemy.text("SELECT client_ip FROM submissions")
            return list(conn.execute(query))
    finally:
        engine.dispose()


class Crowd:
    """IDLE silent connections and SLOW ones trickling headers, all held open."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sockets: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def __enter__(self) -> Crowd:
        for _ in range(IDLE):
            self.sockets.append(socket.create_connection(("127.0.0.1", self.port)))
        for _ in range(SLOW):
            sock = socket.create_connection(("127.0.0.1", self.port))
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            self.slow.append(sock)
        self.sockets.extend(self.slow)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        # One header line a second each, for at most 30 s.
        for n in range(30):
            if self._stop.wait(1.0):
                return
            for sock in self.slow:
                try:
                    sock.sendall(f"X-Slow-{n}: x\r\n".encode())
                except OSError:
                    pass  # the server gave up on it: that is allowed

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()


def post(
    port: int,
    data: dict[str, str],
    cookie: str,
    base: str = "",
    forwarded_for: str = "203.0.113.9",
    headers: dict[str, str] | None = None,
) -> int:
    """Post the hosted form as a browser would; return the status."""
    base = base or f"http://127.0.0.1:{port}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN + 3)
    try:
        conn.request(
            "POST",
            "/",
            urlencode(data),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"session={cookie}",
                "Origin": base,
                "Referer": base + "/",
                # Not believed unless a proxy in front is counted.
                "X-Forwarded-For": forwarded_for,
                **(headers or {}),
            },
        )
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def timed(what: str, call, *args):
    """Call; fail unless it returned within ANSWER_WITHIN seconds."""
    started = time.monotonic()
    result = call(*args)
    took = time.monotonic() - started
    assert took < ANSWER_WITHIN, f"{what} took {took:.1f} s"
    return result


def test_the_image_answers_while_200_idle_and_20_slow_connections_wait(
    image_web: int, tmp_path: Path
) -> None:
    port = image_web
    with Crowd(port):
        # Long enough for gunicorn's threads to be stuck if they ever saw the
        # crowd: an idle connection holds one for 5 s, a slow one for good.
        time.sleep(1.0)
        for n in range(3):
            status, _, _ = timed("/healthz", get, port, "/healthz")
            assert status == 200
            status, headers, body = timed("GET /", get, port, "/")
            assert status == 200
            cookie = SimpleCookie(headers["Set-Cookie"])["session"].value
            data = filled(body, f"While the crowd waits {n}")
            assert timed("POST /", post, port, data, cookie) == 303
            time.sleep(1.0)
    # The image's own nginx is counted as a proxy (TRUSTED_PROXY_HOPS + 1): the
    # app sees the client's address, not the Unix socket's nothing, and not
    # what the client wrote.
    rows = stored(tmp_path)
    assert [row.client_ip for row in rows] == ["127.0.0.1"] * 3


def filled(body: bytes, subject: str) -> dict[str, str]:
    data = form_inputs(body.decode())
    data.update(
        recipient="demo",  # the development recipient: no relay here
        name="Ada",
        email="ada@example.com",
        subject=subject,
        message="Still answering.",
    )
    return data


def test_a_proxy_in_front_counts_as_the_operator_says(tmp_path: Path) -> None:
    """TRUSTED_PROXY_HOPS=1 means the operator's proxy; the image adds its own."""
    site = "https://forms.example.com"
    outer = {  # what a TLS proxy in front (the operator's one hop) sends
        "Host": "forms.example.com",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "forms.example.com",
    }
    with running_image(tmp_path, TRUSTED_PROXY_HOPS="1") as port:
        status, headers, body = get(port, "/", outer)
        assert status == 200
        assert headers["Strict-Transport-Security"]  # it knows it is https
        assert "Secure" in headers["Set-Cookie"]
        cookie = SimpleCookie(headers["Set-Cookie"])["session"].value
        data = filled(body, "Behind two proxies")
        assert post(port, data, cookie, site, "198.51.100.7", outer) == 303
    assert [row.client_ip for row in stored(tmp_path)] == ["198.51.100.7"]


def test_gunicorn_stopping_at_start_up_stops_the_image(tmp_path: Path) -> None:
    port = free_port()
    env = image_env(tmp_path, port)
    env.update(WEB_THREADS="eight")  # gunicorn.conf.py refuses it
    log = tmp_path / "web.log"
    proc = start(image_cmd(), env, log)
    try:
        code = proc.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        stop(proc)
        raise AssertionError("the web role outlived gunicorn") from exc
    assert code != 0
    assert "WEB_THREADS must be a whole number" in log.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_gunicorn_dying_later_stops_nginx_and_the_image(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "web.log"
    proc = start(image_cmd(), image_env(tmp_path, port), log)
    try:
        # nginx listens only once gunicorn does.
        wait_until(lambda: probe(port), START_TIMEOUT, "nginx to listen")
        (master,) = [pid for pid in children(proc.pid) if "wsgi:app" in cmdline(pid)]
        os.kill(master, signal.SIGKILL)
        code = proc.wait(START_TIMEOUT)
    finally:
        stop(proc)
    assert code != 0
    assert not probe(port)  # nginx is gone too: no 502s from a dead app


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def probe(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_the_documented_nginx_holds_slow_clients_like_the_images() -> None:
    """docs/deploy.md's nginx for bare gunicorn keeps the image's timeouts."""
    directives = (
        "client_header_timeout",
        "client_body_timeout",
        "keepalive_timeout",
        "reset_timedout_connection",
        "proxy_request_buffering",
    )

    def values(text: str) -> dict[str, str]:
        found = {}
        for line in text.splitlines():
            words = line.split("#")[0].strip().rstrip(";").split()
            if len(words) == 2 and words[0] in directives:
                found[words[0]] = words[1]
        return found

    image = values((REPO / "deploy" / "nginx" / "formpost.conf").read_text())
    docs = values((REPO / "docs" / "deploy.md").read_text())
    assert set(image) == set(directives)
    assert docs == image
