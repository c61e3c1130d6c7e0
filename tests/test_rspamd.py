"""The rspamd layer against Debian's real rspamd (tests/rspamdkit.py)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask

from app.spam import SpamContext, decide
from app.spam.remote import post_json
from app.spam.rspamd import check, request_headers, scan
from app.spam.settings import SpamSettings

from . import rspamdkit
from .helpers import services_of
from .relay import free_port
from .rspamdkit import log_path, running_rspamd

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CLEAN = (
    "Hello,\n\nI ordered the blue teapot last week (order 4711) and it arrived "
    "with a chipped lid. Could you send a replacement lid, or should I return "
    "the whole teapot?\n\nThanks,\nAnna Berg\n"
)
SEO = (
    "Hi, I was looking at your website and noticed it is not on the first page "
    "of Google. We offer quality backlinks packages and guest posting on "
    "high DA sites. We can increase your website traffic in 30 days.\n\n"
    "Also: bitcoin investment with guaranteed daily profit, see "
    "http://profit.example.com/join\n"
)


@pytest.fixture(scope="module")
def rspamd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rspamd")


@pytest.fixture(scope="module")
def rspamd_url(rspamd_dir: Path) -> Iterator[str]:
    """One rspamd for the module (its first start compiles hyperscan)."""
    with running_rspamd(rspamd_dir) as url:
        yield url


def composed(body: str, reply_to: str = "anna@example.org") -> tuple[bytes, str]:
    """A message shaped like Formpost's: from the service, Reply-To the visitor."""
    message = EmailMessage()
    message["From"] = "Formpost <forms@shop.example>"
    message["To"] = "owner@shop.example"
    message["Reply-To"] = reply_to
    message["Subject"] = "Contact form: a question"
    message["Date"] = format_datetime(datetime(2026, 12, 2, 21, 0, tzinfo=UTC))
    message_id = make_msgid(idstring=uuid.uuid4().hex, domain="shop.example")
    message["Message-ID"] = message_id
    message.set_content(body)
    return message.as_bytes(), message_id.strip("<>")


def context(body: str, ip: str = "203.0.113.7", email: str = "anna@example.org"):
    data, _ = composed(body, email)
    return SpamContext(form_id="default", message_bytes=data, client_ip=ip, email=email)


def log_line(directory: Path, message_id: str) -> str:
    """rspamd's log line for the task with this Message-ID (waits briefly)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in log_path(directory).read_text(errors="replace").splitlines():
            if "rspamd_task_write_log" in line and f"id: <{message_id}>" in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no rspamd log line for {message_id}")


def test_a_clean_message_scores_low_and_adds_no_reason(rspamd_url: str) -> None:
    ctx = context(CLEAN)
    headers = request_headers(ctx, ["owner@shop.example"])
    reply = post_json(rspamd_url + "/checkv2", ctx.message_bytes, headers, 5)
    assert float(reply["score"]) < 1.0, reply
    assert scan(rspamd_url, ctx, SpamSettings(), rcpts=["owner@shop.example"]) == []


def test_session_checks_are_off_for_a_web_post(rspamd_url: str) -> None:
    """Without Formpost's Settings header the same clean post collects
    rspamd's no-HELO/no-rDNS and Reply-To penalties; with it, none of them."""
    ctx = context(CLEAN)
    headers = request_headers(ctx, ["owner@shop.example"])
    bare = {k: v for k, v in headers.items() if k != "Settings"}
    url = rspamd_url + "/checkv2"
    without = post_json(url, ctx.message_bytes, bare, 5)
    with_settings = post_json(url, ctx.message_bytes, headers, 5)
    session = {
        "HFILTER_HOSTNAME_UNKNOWN",
        "RDNS_NONE",
        "ONCE_RECEIVED",
        "SPOOF_REPLYTO",
    }
    assert session & set(without["symbols"])
    assert not session & set(with_settings["symbols"])
    assert float(with_settings["score"]) < float(without["score"])


@pytest.mark.parametrize(
    ("quarantine_at", "drop_at", "verdict"),
    [(6.0, 15.0, "drop"), (6.0, 30.0, "quarantine"), (20.0, 30.0, "accept")],
)
def test_gtube_follows_the_forms_thresholds(
    rspamd_url: str, quarantine_at: float, drop_at: float, verdict: str
) -> None:
    settings = SpamSettings(rspamd_quarantine_at=quarantine_at, rspamd_drop_at=drop_at)
    reasons = scan(rspamd_url, context(f"Hello\n{GTUBE}\n"), settings)
    assert decide(reasons, 5.0, 15.0).name == verdict
    if reasons:
        (reason,) = reasons
        assert reason.rule == "rspamd_score"
        assert reason.value == "score 15 (GTUBE)"
        assert (
            reason.threshold == f"quarantine at {quarantine_at:g}, drop at {drop_at:g}"
        )


def test_formpost_rules_catch_a_seo_and_crypto_pitch(rspamd_url: str) -> None:
    (reason,) = scan(rspamd_url, context(SEO), SpamSettings())
    assert reason.rule == "rspamd_score"
    assert reason.action == "quarantine"
    assert "FORMPOST_SEO_PITCH" in reason.value
    assert "FORMPOST_MONEY_OFFER" in reason.value
    # Only symbol names and the score: nothing of what the visitor wrote.
    assert "backlinks" not in reason.value


def test_client_ip_and_visitor_address_reach_rspamd(
    rspamd_url: str, rspamd_dir: Path
) -> None:
    data, message_id = composed(CLEAN, "visitor@example.net")
    ctx = SpamContext(
        form_id="default",
        message_bytes=data,
        client_ip="198.51.100.23",
        email="visitor@example.net",
    )
    assert scan(rspamd_url, ctx, SpamSettings(), rcpts=["owner@shop.example"]) == []
    line = log_line(rspamd_dir, message_id)
    assert "ip: 198.51.100.23," in line
    assert "from: <visitor@example.net>" in line
    assert "rcpts: <owner@shop.example>" in line


def test_an_address_with_a_line_break_is_not_sent_as_a_header() -> None:
    ctx = SpamContext(form_id="f", email="a@example.org\r\nX-Evil: 1", client_ip="::1")
    assert "From" not in request_headers(ctx)
    assert request_headers(ctx)["IP"] == "::1"


@pytest.mark.parametrize(
    ("fail", "action"), [("open", "score"), ("closed", "quarantine")]
)
def test_a_stopped_rspamd_follows_fail_open_or_closed(
    tmp_path: Path, fail: str, action: str
) -> None:
    settings = SpamSettings(fail=fail)
    ctx = context(f"{GTUBE}\n")
    with running_rspamd(tmp_path) as url:
        assert scan(url, ctx, settings)[0].action == "drop"
    (reason,) = scan(url, ctx, settings)
    assert reason.rule == "rspamd_unavailable"
    assert reason.value == "connection refused"
    assert reason.action == action
    assert reason.score == 0.0
    # Never dropped because rspamd was down.
    assert decide([reason], 5.0, 15.0).name == (
        "accept" if fail == "open" else "quarantine"
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_an_rspamd_that_never_answers_is_cut_off(silent_port: int) -> None:
    started = time.monotonic()
    (reason,) = scan(
        f"http://127.0.0.1:{silent_port}",
        context(CLEAN),
        SpamSettings(fail="closed"),
        timeout=0.5,
    )
    elapsed = time.monotonic() - started
    assert reason.rule == "rspamd_unavailable"
    assert reason.value == "no answer within 0.5 s"
    assert reason.action == "quarantine"
    assert 0.4 < elapsed < 2.0


def test_the_layer_sends_nothing_without_rspamd_url(app: Flask) -> None:
    app.config.pop("RSPAMD_URL", None)
    with app.app_context():
        assert check(context(f"{GTUBE}\n"), SpamSettings(), services_of(app)) == []


def test_the_layer_uses_rspamd_url_and_the_forms_recipient(
    app: Flask, rspamd_url: str, rspamd_dir: Path
) -> None:
    app.config["RSPAMD_URL"] = rspamd_url + "/"
    data, message_id = composed(f"{GTUBE}\n")
    ctx = SpamContext(form_id="default", message_bytes=data, client_ip="192.0.2.9")
    with app.app_context():
        services = services_of(app)
        (reason,) = check(ctx, SpamSettings(), services)
    assert reason.action == "drop"
    recipient = services.recipients[services.forms["default"].recipients[0]]
    line = log_line(rspamd_dir, message_id)
    assert f"rcpts: <{recipient.address.addr_spec}>" in line
    assert "ip: 192.0.2.9," in line


def test_refused_port_without_rspamd_at_all() -> None:
    (reason,) = scan(f"http://127.0.0.1:{free_port()}", context(CLEAN), SpamSettings())
    assert (reason.rule, reason.value, reason.action) == (
        "rspamd_unavailable",
        "connection refused",
        "score",
    )


@pytest.fixture
def scoreless_rspamd() -> Iterator[str]:
    """An HTTP server that answers /checkv2 with JSON but no score."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = b'{"error": "task processing error"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_reply_without_a_score_is_unavailable(scoreless_rspamd: str) -> None:
    (reason,) = scan(scoreless_rspamd, context(CLEAN), SpamSettings(fail="closed"))
    assert (reason.rule, reason.value, reason.action) == (
        "rspamd_unavailable",
        "reply without a score",
        "quarantine",
    )


def test_the_kit_skips_where_rspamd_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rspamdkit, "RSPAMD", tmp_path / "no-rspamd")
    with pytest.raises(pytest.skip.Exception, match="rspamd is not installed"):
        with running_rspamd(tmp_path):
            pass


@pytest.mark.parametrize(
    ("body", "symbol"),
    [
        ("We guarantee top page on Google in 30 days.", "FORMPOST_SEO_PITCH"),
        ("Get your site on the first page of Google with us.", "FORMPOST_SEO_PITCH"),
        ("Affordable backlink building for your shop.", "FORMPOST_SEO_PITCH"),
        ("We can boost your website traffic fast.", "FORMPOST_SEO_PITCH"),
        ("USDT trading with weekly returns of 20%.", "FORMPOST_MONEY_OFFER"),
        ("Instant loans, no credit check, approval today.", "FORMPOST_MONEY_OFFER"),
        ("Earn $500 per day from home.", "FORMPOST_MONEY_OFFER"),
        # What customers write must not trip them.
        ("Could I pay the loan-financed order in two parts?", None),
        ("I found you on the first page of the catalogue.", None),
        ("Your website traffic light widget is broken on mobile.", None),
        ("我想预订两张周六的票，谢谢！", None),
    ],
)
def test_formpost_rules_one_by_one(rspamd_url: str, body: str, symbol: str | None):
    ctx = context(body + "\n")
    headers = request_headers(ctx, ["owner@shop.example"])
    reply = post_json(rspamd_url + "/checkv2", ctx.message_bytes, headers, 5)
    ours = sorted(s for s in reply["symbols"] if s.startswith("FORMPOST_"))
    assert ours == ([symbol] if symbol else [])
    # One rule alone stays under the default quarantine threshold.
    assert float(reply["score"]) < SpamSettings().rspamd_quarantine_at
