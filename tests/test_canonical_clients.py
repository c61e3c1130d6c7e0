"""One site is one origin and one client is one address, however written.

CORS answers echo the origin in the canonical form browsers compare against
(never the raw header), and the rate limit counts a client behind a proxy
once whatever spelling of its address the proxy forwards.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from .relay import Relay

SITE = "https://www.example.com"
FIELDS = {"message": "hi"}


@pytest.fixture
def app(make_app: Callable[..., Flask], relay: Relay) -> Flask:
    return make_app(relay.env(ALLOWED_ORIGINS=SITE))


@pytest.mark.parametrize(
    "origin",
    [
        "HTTPS://WWW.Example.COM:443",
        "https://www.example.com.",
        "https://WWW.EXAMPLE.COM",
        "https://www.example.com:443",
        "HTTPS://www.example.com.:443",
    ],
)
@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_post_answer_echoes_the_canonical_origin(app, origin, accept):
    response = app.test_client().post(
        "/f/default", data=FIELDS, headers={"Origin": origin, "Accept": accept}
    )
    assert response.status_code in (200, 303)
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize("origin", ["HTTPS://WWW.Example.COM:443", SITE + "."])
def test_preflight_echoes_the_canonical_origin(app, origin):
    response = app.test_client().options(
        "/f/default",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SITE


def test_refusal_answers_echo_the_canonical_origin_too(app):
    """A 422 must be readable by the page, or the visitor sees nothing."""
    response = app.test_client().post(
        "/f/default",
        json={"message": ""},
        headers={"Origin": "HTTPS://WWW.Example.COM:443"},
    )
    assert response.status_code == 422
    assert response.headers["Access-Control-Allow-Origin"] == SITE


@pytest.mark.parametrize(
    "origin", ["https://www.example.com:8443", "http://www.example.com", "null"]
)
def test_other_origins_get_no_cors_header(app, origin):
    response = app.test_client().post(
        "/f/default", data=FIELDS, headers={"Origin": origin}
    )
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


# -- one client behind a proxy, however its address is written -------------------

SPELLINGS = [
    pytest.param(
        ["::1", "0:0:0:0:0:0:0:1", "0000:0000::0001"], "::1", id="ipv6-loopback"
    ),
    pytest.param(
        ["2001:DB8::1", "2001:db8:0:0:0:0:0:1", "2001:0db8::0001"],
        "2001:db8::1",
        id="ipv6-case-and-zeros",
    ),
    pytest.param(
        ["::ffff:192.0.2.7", "192.0.2.7", "::FFFF:c000:0207"],
        "192.0.2.7",
        id="ipv4-mapped",
    ),
    pytest.param(
        ["client-lie, ::1", "1.2.3.4, 0:0:0:0:0:0:0:1", "[::1]"],
        "::1",
        id="forwarded-chains",
    ),
]


@pytest.mark.parametrize(("spellings", "canonical"), SPELLINGS)
def test_rate_limit_counts_one_client_behind_a_proxy_once(
    make_app, relay, spellings, canonical
):
    """TRUSTED_PROXY_HOPS=1 and a 2/minute limit: the third spelling is refused."""
    app = make_app(
        relay.env(ALLOWED_ORIGINS=SITE, TRUSTED_PROXY_HOPS="1", RATE_LIMIT="2/minute")
    )
    client = app.test_client()
    statuses = [
        client.post(
            "/f/default",
            json={"message": f"post {n}"},
            headers={"Origin": SITE, "X-Forwarded-For": forwarded},
        ).status_code
        for n, forwarded in enumerate(spellings)
    ]
    assert statuses == [200, 200, 429]
    rows = app.extensions["formpost"].ledger.rows()
    assert [r.client_ip for r in rows] == [canonical, canonical]


def test_different_clients_behind_the_proxy_are_counted_apart(make_app, relay):
    app = make_app(
        relay.env(ALLOWED_ORIGINS=SITE, TRUSTED_PROXY_HOPS="1", RATE_LIMIT="1/minute")
    )
    client = app.test_client()
    statuses = [
        client.post(
            "/f/default",
            json=FIELDS,
            headers={"Origin": SITE, "X-Forwarded-For": forwarded},
        ).status_code
        for forwarded in ("::1", "::2", "192.0.2.7", "192.0.2.8")
    ]
    assert statuses == [200, 200, 200, 200]


def test_without_a_trusted_proxy_the_header_is_not_believed(make_app, relay):
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE, RATE_LIMIT="1/minute"))
    client = app.test_client()
    statuses = [
        client.post(
            "/f/default",
            json=FIELDS,
            headers={"Origin": SITE, "X-Forwarded-For": forwarded},
        ).status_code
        for forwarded in ("192.0.2.7", "192.0.2.8")
    ]
    assert statuses == [200, 429]  # both are the test client's own address
