"""Back and send again, in a real browser: one message, the same receipt.

Headless chromium fills the hosted form, sends it, goes Back (the page is
requested again and carries a new one-use form token) and sends again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page, Request, expect

from .chromium import TIMEOUT_MS, require_chromium, serve_wsgi
from .helpers import deliver, ledger_of
from .relay import Relay

require_chromium()
pytestmark = pytest.mark.browser

RECEIPT = re.compile(r"[A-Z0-9]{4}-[A-Z0-9]{4}")
MESSAGE = "Do you ship to Iceland?\nThanks, Zoë"


@pytest.fixture
def live_app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    return make_app(relay.env(DEDUPE_WINDOW="600"))


@pytest.fixture
def page(browser: Browser, live_app: Flask) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


class Posts:
    """The form tokens of the hosted form's POSTs, as the browser sent them."""

    def __init__(self, page: Page) -> None:
        self.tokens: list[str] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if request.method == "POST":
            self.tokens.append(parse_qs(request.post_data or "")["form_token"][0])


def fill_if_empty(page: Page, message: str) -> None:
    """Type the message, unless the browser kept what was typed (Back)."""
    if page.get_by_label("Subject").input_value() != "Shipping":
        page.get_by_label("Your email").fill("zoe@example.net")
        page.get_by_label("Subject").fill("Shipping")
    if page.get_by_label("Message").input_value() != message:
        page.get_by_label("Message").fill(message)


def send(page: Page, base: str) -> str:
    page.get_by_role("button", name="Send message").click()
    page.wait_for_url(base + "/thanks")
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you")
    return RECEIPT.search(page.locator(".receipt").inner_text()).group(0)


def test_back_and_send_again_is_one_message_with_one_receipt(
    page: Page, live_app: Flask, relay: Relay
) -> None:
    with serve_wsgi(live_app) as base:
        posts = Posts(page)
        page.goto(base + "/")
        page.get_by_label("Recipient").select_option("support")
        fill_if_empty(page, MESSAGE)
        first = send(page, base)
        page.go_back()
        page.wait_for_url(base + "/")
        fill_if_empty(page, MESSAGE)
        again = send(page, base)
    assert again == first
    # A new page, a new form token: the content made it the same post.
    assert len(posts.tokens) == 2 and posts.tokens[0] != posts.tokens[1]
    assert [r.receipt for r in ledger_of(live_app).rows()] == [first]
    assert deliver(live_app) == 1
    assert len(relay.received) == 1


def test_back_and_send_something_else_is_a_second_message(
    page: Page, live_app: Flask, relay: Relay
) -> None:
    with serve_wsgi(live_app) as base:
        page.goto(base + "/")
        fill_if_empty(page, MESSAGE)
        first = send(page, base)
        page.go_back()
        page.wait_for_url(base + "/")
        fill_if_empty(page, MESSAGE + "\nP.S. Two parcels.")
        second = send(page, base)
    assert second != first
    assert len(ledger_of(live_app).rows()) == 2
    assert deliver(live_app) == 2
    assert len(relay.received) == 2
