"""Where the browser goes next: `_next` against the allow-list, our thanks page."""

from __future__ import annotations

import re

import pytest

from .posting import (
    EVIL,
    FIELDS,
    HTML,
    PAGE,
    SITE,
    post,
    rows,
    thanks_url,
)

# -- redirects ----------------------------------------------------------------


OPEN_REDIRECTS = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "data:text/html,x",
    "https://www.example.com.evil.example/",
    "https://www.example.com@evil.example/",
    "https://evil.example/?www.example.com",
    "/ok\r\nLocation: https://evil.example",
    "https:evil.example",
    "http://www.example.com:80@evil.example/",
    "https:///evil.example",
    "/\t/evil.example",
    "ftp://www.example.com/",
    "thanks.html",
]


@pytest.mark.parametrize("value", OPEN_REDIRECTS)
def test_open_redirect_attempts_land_on_our_thanks_page(app, client, relay, value):
    response = post(client, {**FIELDS, "_next": value}, headers=HTML)
    assert response.status_code == 303
    assert response.location.startswith(thanks_url(app) + "?")
    assert "evil" not in response.location
    assert "\n" not in response.location and "\r" not in response.location
    assert len(rows(app)) == 1  # the post itself is fine


def test_fullwidth_look_alike_in_next_lands_on_our_thanks_page(app, client):
    value = "https://www.example.com\uff03@evil.example/"
    response = post(client, {**FIELDS, "_next": value}, headers=HTML)
    assert response.status_code == 303
    assert response.location.startswith(thanks_url(app) + "?")


@pytest.mark.parametrize(
    ("value", "location"),
    [
        ("/thanks.html", f"{SITE}/thanks.html"),
        ("/done?x=1&y=2", f"{SITE}/done?x=1&y=2"),
        (f"{SITE}/done?x=1", f"{SITE}/done?x=1"),
        ("HTTPS://WWW.EXAMPLE.COM/Done", f"{SITE}/Done"),
    ],
)
def test_allowed_redirects(client, value, location):
    response = post(client, {**FIELDS, "_next": value}, headers=HTML)
    assert response.status_code == 303
    assert response.location == location


def test_relative_redirect_uses_the_referer_origin(client):
    data = {**FIELDS, "_next": "/thanks.html"}
    response = post(client, data, headers={**HTML, "Origin": None, "Referer": PAGE})
    assert response.location == f"{SITE}/thanks.html"


def test_thanks_page_links_back_to_the_posting_site(app, client):
    response = post(client, FIELDS, headers=HTML)
    assert response.status_code == 303
    page = client.get(response.location)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    receipt = re.search(r"receipt=([A-Z0-9-]+)", response.location).group(1)
    assert f"<strong>{receipt}</strong>" in text
    assert f'href="{SITE}/"' in text


def test_thanks_page_ignores_a_forged_back_link(app, client):
    page = client.get(thanks_url(app) + f"?receipt=<b>&back={EVIL}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "evil.example" not in text and "<b>" not in text
