"""safe_next: where a post may send the browser, and everything it refuses."""

from __future__ import annotations

import pytest

from app.redirects import safe_next

ORIGIN = "https://www.example.com"
HOSTS = frozenset({"www.example.com", "xn--bcher-kva.example", "192.0.2.7"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Relative paths go to the (verified) posting origin.
        ("/thanks.html", f"{ORIGIN}/thanks.html"),
        ("/", f"{ORIGIN}/"),
        ("/done?x=1&y=2", f"{ORIGIN}/done?x=1&y=2"),
        ("/a/b#top", f"{ORIGIN}/a/b#top"),
        ("/%2F%2Fevil.example", f"{ORIGIN}/%2F%2Fevil.example"),
        ("  /thanks.html  ", f"{ORIGIN}/thanks.html"),
        # Absolute URLs on an allowed host.
        ("https://www.example.com/done?x=1", "https://www.example.com/done?x=1"),
        ("https://www.example.com", "https://www.example.com/"),
        ("http://www.example.com/plain", "http://www.example.com/plain"),
        ("https://www.example.com:8443/p", "https://www.example.com:8443/p"),
        ("HTTPS://WWW.EXAMPLE.COM/Done", "https://www.example.com/Done"),
        ("https://WWW.Example.Com/x", "https://www.example.com/x"),
        ("https://www.example.com./x", "https://www.example.com/x"),
        ("https://www.example.com/x#frag", "https://www.example.com/x"),
        ("https://bücher.example/ok", "https://xn--bcher-kva.example/ok"),
        ("https://xn--bcher-kva.example/ok", "https://xn--bcher-kva.example/ok"),
        ("https://192.0.2.7/ok", "https://192.0.2.7/ok"),
        # U+3002 is a dot to IDNA: this really is www.example.com.
        ("https://www\u3002example\u3002com/", "https://www.example.com/"),
    ],
)
def test_accepted(value, expected):
    assert safe_next(value, ORIGIN, HOSTS) == expected


REFUSED = [
    "",
    "   ",
    # other hosts and look-alikes
    "https://evil.example/",
    "https://www.example.com.evil.example/",
    "https://evil.example/?www.example.com",
    "https://evil.example/www.example.com",
    "https://evil.example#www.example.com",
    "https://example.com/",
    "https://wwww.example.com/",
    "https://www.examp1e.com/",
    "https://www.exаmple.com/",  # Cyrillic а
    "https://www.еxample.com/",  # Cyrillic е
    "https://www.example.co/",
    "https://www.example.com.:80.evil.example/",
    "https://www.example.com\u3002evil.example/",
    "https://192.0.2.8/",
    "https://[::1]/",
    # user-info
    "https://www.example.com@evil.example/",
    "http://www.example.com:80@evil.example/",
    "https://user:pass@www.example.com/",
    "https://@www.example.com/",
    "https://evil.example@www.example.com/",
    # scheme-relative and backslashes
    "//evil.example/",
    "//www.example.com/",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "https:\\\\evil.example",
    "https://evil.example\\@www.example.com/",
    # missing or odd authority
    "https:evil.example",
    "https:/evil.example",
    "https:///evil.example",
    "http:",
    "https://",
    "https://www.example.com:99999/",
    "https://www.example.com:port/",
    # other schemes
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,x",
    "vbscript:x",
    "ftp://www.example.com/",
    "file:///etc/passwd",
    "mailto:ada@www.example.com",
    # control characters, CR/LF, whitespace inside
    "/ok\r\nLocation: https://evil.example",
    "/ok\nSet-Cookie: a=b",
    "/ok\rx",
    "/\t/evil.example",
    "/ok\x00",
    "/ok\x7f",
    "/ok\u2028x",
    "https://www.example.com/ x",
    "/ /evil.example",
    # relative paths that are not absolute paths
    "thanks.html",
    "./thanks.html",
    "../thanks.html",
    "?x=1",
    "#top",
    "evil.example",
    "www.example.com/thanks",
    # encoded words are not URLs either
    "/=?utf-8?q?x?=",
]


@pytest.mark.parametrize("value", REFUSED)
def test_refused(value):
    assert safe_next(value, ORIGIN, HOSTS) is None


@pytest.mark.parametrize(
    "value",
    [
        "https://www.example.com\uff03@evil.example/",
        "https://evil.example\uff0f@www.example.com/",
        "https://www.example.com\uff20evil.example/",
    ],
)
def test_fullwidth_delimiters_are_refused(value):
    assert safe_next(value, ORIGIN, HOSTS) is None


def test_ipv6_redirect_host_keeps_its_brackets():
    assert safe_next("https://[::1]:8080/x", ORIGIN, {"::1"}) == "https://[::1]:8080/x"


def test_relative_paths_need_a_posting_origin():
    assert safe_next("/thanks.html", None, HOSTS) is None
    assert safe_next("https://www.example.com/x", None, HOSTS) == (
        "https://www.example.com/x"
    )


def test_relative_paths_use_whatever_origin_was_verified():
    origin = "http://localhost:5000"
    assert safe_next("/t", origin, HOSTS) == "http://localhost:5000/t"


def test_no_hosts_allows_only_relative_paths():
    assert safe_next("/t", ORIGIN, frozenset()) == f"{ORIGIN}/t"
    assert safe_next("https://www.example.com/t", ORIGIN, frozenset()) is None


def test_the_posting_origin_alone_does_not_allow_its_absolute_urls():
    """Absolute URLs need REDIRECT_HOSTS; the origin only anchors paths."""
    assert safe_next(f"{ORIGIN}/t", ORIGIN, {"other.example"}) is None
