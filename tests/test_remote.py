"""One POST to a verifier: the failures that become `*_unavailable` reasons."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from app.spam.remote import MAX_REPLY, Unavailable, post_json

from .relay import free_port


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """Serve one connection with a hand-written answer; yield a URL maker."""
    servers: list[tuple[socket.socket, threading.Thread]] = []

    def start(answer: Callable[[socket.socket], None]) -> str:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                try:
                    answer(conn)
                    # Read whatever else the client sent before closing, so
                    # the close is a clean end and not a reset.
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(5)
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass  # the client gave up, as it should

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.getsockname()[1]}/verify"

    yield start
    for server, thread in servers:
        thread.join(timeout=5)
        server.close()


def ok_json(conn: socket.socket) -> None:
    body = b'{"success": true}'
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n"
    conn.sendall(head.encode() + body)


def test_a_json_object_comes_back(raw_server) -> None:
    assert post_json(raw_server(ok_json), b"x=1", {}, 1.0) == {"success": True}


def trickle(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{")
    for _ in range(50):
        time.sleep(0.1)
        conn.sendall(b" ")


def too_large(conn: socket.socket) -> None:
    size = MAX_REPLY + 10
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
    conn.sendall(b"[" + b" " * (size - 1))


def json_list(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")


def not_http(conn: socket.socket) -> None:
    conn.sendall(b"SPAMD/1.1 0 EX_OK\r\n\r\n")


def cut_off(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (trickle, "reply too slow"),
        (too_large, "reply too large"),
        (json_list, "reply is not a JSON object"),
        (not_http, "bad HTTP reply"),
        (cut_off, "reply cut off"),
    ],
)
def test_bad_answers_are_unavailable(raw_server, answer, what: str) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        post_json(raw_server(answer), b"x=1", {}, 0.3)
    assert str(caught.value) == what
    # Each read waits at most the timeout, the whole answer twice that.
    assert time.monotonic() - started < 1.5


def test_nothing_listening_is_connection_refused() -> None:
    with pytest.raises(Unavailable, match="^connection refused$"):
        post_json(f"http://127.0.0.1:{free_port()}/", b"", {}, 1.0)
