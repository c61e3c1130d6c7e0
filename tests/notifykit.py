"""A real HTTP receiver on loopback for webhooks and Apprise's json://.

It verifies Standard Webhooks signatures with the library itself, and can
be told to fail (500), answer 410, or stall until released.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"formpost-test-secret-32-bytes!!!").decode()


@dataclass
class Call:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed payload if the signature holds, else None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 answering as told: ok, fail, gone, stall."""

    def __init__(self, secret: str = SECRET, tls: ssl.SSLContext | None = None) -> None:
        self.secret = secret
        self.calls: list[Call] = []
        self.script: list[str] = []  # answers for the next requests
        self.release = threading.Event()
        self.stalled = threading.Event()  # set when a request is stalling
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verified = Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    verified = None
                with receiver.lock:
                    receiver.calls.append(Call(self.path, headers, body, verified))
                    answer = receiver.script.pop(0) if receiver.script else "ok"
                if answer == "drip":
                    # A status line, then a header a byte at a time, for ever.
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    self.wfile.flush()
                    while not receiver.release.wait(0.1):
                        try:
                            self.wfile.write(b"a")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                if answer == "stall":
                    receiver.stalled.set()
                    receiver.release.wait(30)
                    return
                status = {"ok": 200, "fail": 500, "gone": 410}[answer]
                payload = b"gone for good" if status == 410 else b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/hook"

    def answer(self, *answers: str) -> None:
        with self.lock:
            self.script.extend(answers)

    def received(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def forms_toml(
    webhook: str | None = None,
    apprise: str | None = None,
    autoresponse: bool = True,
    full: bool = False,
    form: str = "contact",
    secret: str = SECRET,
) -> str:
    """A FORMS_FILE with one form and the channels asked for."""
    notify = ['"email"']
    if webhook:
        notify.append(f'"webhook:{webhook}"')
    if apprise:
        notify.append(f'"apprise:{apprise}"')
    lines = [
        f"[forms.{form}]",
        'recipients = ["sales"]',
        'allowed_origins = ["https://www.example.com"]',
        f"notify = [{', '.join(notify)}]",
        f"notify_full_message = {'true' if full else 'false'}",
    ]
    if webhook:
        lines += [f'[forms.{form}.webhooks."{webhook}"]', f'secret = "{secret}"']
    if autoresponse:
        lines += [
            f"[forms.{form}.autoresponse]",
            'subject = "We got your message"',
            'body = "Thank you. We answer within two working days."',
        ]
    return "\n".join(lines) + "\n"
