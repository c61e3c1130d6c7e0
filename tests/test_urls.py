"""app/urls.py: origins and hosts in canonical form, refused with ValueError."""

from __future__ import annotations

import pytest

from app.urls import is_loopback, normalize_host, normalize_origin


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://www.example.com", "https://www.example.com"),
        ("https://www.example.com/", "https://www.example.com"),
        ("HTTPS://WWW.Example.COM", "https://www.example.com"),
        ("https://www.example.com.", "https://www.example.com"),
        ("https://www.example.com:443", "https://www.example.com"),
        ("http://www.example.com:80", "http://www.example.com"),
        ("http://www.example.com:8080", "http://www.example.com:8080"),
        ("https://www.example.com:80", "https://www.example.com:80"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
        ("  https://example.org  ", "https://example.org"),
    ],
)
def test_origins_come_out_canonical(given, canonical):
    assert normalize_origin(given) == canonical


@pytest.mark.parametrize(
    "given",
    [
        "null",
        "",
        "example.com",
        "ftp://example.com",
        "https://example.com/path",
        "https://example.com?q=1",
        "https://example.com#top",
        "https://user:pw@example.com",
        "https://example.com:99999",
        "https://exa mple.com",
        "https://-bad-.example",
        "javascript:alert(1)",
    ],
)
def test_what_is_not_an_origin_is_a_value_error(given):
    with pytest.raises(ValueError):
        normalize_origin(given)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("Example.ORG", "example.org"),
        ("example.org.", "example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("192.0.2.1", "192.0.2.1"),
        ("[2001:DB8::1]", "2001:db8::1"),
    ],
)
def test_hosts_come_out_canonical(given, canonical):
    assert normalize_host(given) == canonical


@pytest.mark.parametrize("given", ["example.org:8081", "example.org:", "localhost:80"])
def test_a_host_with_a_port_is_refused_saying_so(given):
    with pytest.raises(ValueError, match="a port is not part of a host entry"):
        normalize_host(given)


@pytest.mark.parametrize("given", ["", "exa mple.org", "a_b.example", "-x.example"])
def test_what_is_not_a_host_is_a_value_error(given):
    with pytest.raises(ValueError, match="is not a host name"):
        normalize_host(given)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LocalHost", True),
        ("localhost.localdomain", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("::", False),
        ("smtp.example.com", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.evil.example", False),
    ],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected
