"""Shared by the tests that drive Debian's headless Chromium through Playwright.

Each browser test module calls require_chromium() at import time, so the whole
module is skipped, with the reason, where chromium is not installed. The
modules keep their own (thin) fixtures around launch_chromium(), serve_wsgi()
and artifacts_dir(), so every fixture's scope stays visible where it is used.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from werkzeug.serving import make_server

from .relay import Received

CHROMIUM = (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
) or shutil.which("chromium")
SKIP_REASON = "Debian chromium is not installed (/usr/bin/chromium or chromium on PATH)"

# The machine has no outside network: keep chromium from trying to reach it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 10_000
LAUNCH_TIMEOUT_MS = 30_000


def require_chromium() -> None:
    """Skip the calling test module, at import, where chromium is absent."""
    __tracebackhide__ = True  # report the skip at the module that called this
    if CHROMIUM is None:
        pytest.skip(SKIP_REASON, allow_module_level=True)


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Start playwright and a headless chromium; skip when either cannot start."""
    try:
        pw = sync_playwright().start()
    except PlaywrightError as exc:
        pytest.skip(f"playwright cannot start: {exc}")
    try:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
    except PlaywrightError as exc:
        pw.stop()
        pytest.skip(f"playwright cannot launch {CHROMIUM}: {exc}")
    try:
        yield browser
    finally:
        browser.close()
        pw.stop()


@contextmanager
def serve_wsgi(app) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port, in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def artifacts_dir() -> Path:
    """The folder screenshots go to: $ARTIFACTS_DIR, or test-artifacts/."""
    folder = Path(os.environ.get("ARTIFACTS_DIR") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def text_body(received: Received) -> str:
    """The text/plain part of a delivered message, with LF newlines."""
    part = received.message.get_body(preferencelist=("plain",))
    assert part is not None, "message has no text/plain part"
    return part.get_content().replace("\r\n", "\n")
