"""Who may post: the Origin check, and CORS for allowed origins only."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from .posting import (
    EVIL,
    FIELDS,
    HTML,
    JSON,
    PAGE,
    SITE,
    assert_json_accepted,
    assert_json_error,
    assert_nothing_stored_or_sent,
    delivered,
    post,
)

# -- origin checks ------------------------------------------------------------


ALLOWED_SOURCES = [
    pytest.param({"Origin": SITE}, id="origin"),
    pytest.param({"Origin": SITE, "Referer": PAGE}, id="origin-and-referer"),
    pytest.param({"Origin": None, "Referer": PAGE}, id="referer-only"),
]
REFUSED_SOURCES = [
    pytest.param({"Origin": EVIL}, id="other-origin"),
    pytest.param({"Origin": None, "Referer": f"{EVIL}/page"}, id="referer-other"),
    pytest.param({"Origin": None}, id="neither"),
    pytest.param({"Origin": "null"}, id="null"),
    pytest.param({"Origin": "null", "Referer": PAGE}, id="null-with-referer"),
    pytest.param({"Origin": EVIL, "Referer": PAGE}, id="origin-beats-referer"),
    pytest.param({"Origin": f"{SITE}.evil.example"}, id="suffix"),
    pytest.param({"Origin": "http://www.example.com"}, id="scheme"),
    pytest.param({"Origin": f"{SITE}:8443"}, id="port"),
    pytest.param({"Origin": "https://example.com"}, id="parent-domain"),
    pytest.param({"Origin": "https://www.example.co"}, id="prefix"),
    pytest.param({"Origin": f"{SITE}@evil.example"}, id="userinfo"),
    pytest.param(
        {"Origin": None, "Referer": f"{SITE}@evil.example/x"}, id="referer-userinfo"
    ),
    pytest.param(
        {"Origin": None, "Referer": f"{SITE}.evil.example/"}, id="referer-suffix"
    ),
]


@pytest.mark.parametrize("source", ALLOWED_SOURCES)
def test_posts_from_allowed_pages_are_accepted(app, client, relay, source):
    assert_json_accepted(post(client, FIELDS, headers={**JSON, **source}))
    assert len(delivered(app, relay)) == 1


@pytest.mark.parametrize("source", REFUSED_SOURCES)
def test_posts_from_other_pages_are_403(app, client, relay, source):
    response = post(client, FIELDS, headers={**JSON, **source})
    assert_json_error(response, 403, "origin")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert_nothing_stored_or_sent(app, relay)


def test_refused_origin_gets_an_html_page_without_a_link_to_it(client):
    response = post(client, FIELDS, headers={**HTML, "Origin": EVIL, "Referer": EVIL})
    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert "<html" in page and "This site may not post to this form." in page
    assert "evil.example" not in page


# -- CORS ---------------------------------------------------------------------


def preflight(client: FlaskClient, origin: str | None, **headers: str):
    sent = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, idempotency-key",
        **headers,
    }
    if origin is not None:
        sent["Origin"] = origin
    return client.options("/f/default", headers=sent)


def vary(response) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",")}


def test_preflight_from_an_allowed_origin(client):
    response = preflight(client, SITE)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "idempotency-key" in allowed and "content-type" in allowed
    assert "origin" in vary(response)


@pytest.mark.parametrize(
    ("origin", "headers"),
    [
        (EVIL, {}),
        ("null", {}),
        (None, {}),
        (f"{SITE}.evil.example", {}),
        ("http://www.example.com", {}),
    ],
)
def test_preflight_from_another_origin_is_403_without_cors(client, origin, headers):
    response = preflight(client, origin, **headers)
    assert response.status_code == 403
    for header in (
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
    ):
        assert header not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"Access-Control-Request-Method": "PUT"},
        {"Access-Control-Request-Headers": "x-forwarded-for"},
    ],
)
def test_preflight_for_other_methods_or_headers_is_403(client, headers):
    response = preflight(client, SITE, **headers)
    assert response.status_code == 403
    assert "Access-Control-Allow-Methods" not in response.headers


def test_preflight_for_an_unknown_form_is_403(client):
    response = client.options("/f/nope", headers={"Origin": SITE})
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("data", "status"), [(FIELDS, 200), ({"message": ""}, 422)], ids=["ok", "error"]
)
def test_answers_to_allowed_origins_carry_cors_headers(client, data, status):
    response = post(client, data, headers=JSON)
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert "origin" in vary(response)
    assert "*" not in response.headers.getlist("Access-Control-Allow-Origin")


def test_answers_to_other_origins_vary_but_carry_no_cors(client):
    response = post(client, FIELDS, headers={**JSON, "Origin": EVIL})
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "origin" in vary(response)
