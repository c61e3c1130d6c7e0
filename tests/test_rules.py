"""rules: the owner's own rules, one by one, and that content alone never drops."""

from __future__ import annotations

import re
from ipaddress import ip_network

import pytest

from app.accept import Post, accept
from app.spam import SpamContext, decide
from app.spam.rules import check, count_links, post_text
from app.spam.settings import SpamSettings

from .helpers import services_of, use_fake_clock

BODY = "Hello, could you send me a quote for twelve chairs? Thanks, Ada"


@pytest.fixture
def svc(app):
    with app.app_context():
        yield services_of(app)


def ctx(**kw) -> SpamContext:
    return SpamContext(form_id="contact", **{"message": BODY, **kw})


DEFAULTS = SpamSettings()


def rules(svc, settings=DEFAULTS, **kw):
    return {r.rule: r for r in check(ctx(**kw), settings, svc)}


def test_a_plain_customer_message_has_no_reasons(svc):
    assert rules(svc, email="ada@example.net", client_ip="203.0.113.9") == {}


def test_a_filled_honeypot_drops(svc):
    found = rules(svc, honeypot_filled=True)
    assert found["honeypot"].action == "drop"


@pytest.mark.parametrize(
    ("message", "max_links", "score"),
    [
        ("no links at all", 2, None),
        ("see https://a.example and http://b.example/x", 2, None),
        ("https://a.example http://b.example www.c.example", 2, 2.5),
        ("https://a.example http://b.example www.c.example [url=x]y[/url]", 2, 3.5),
        (" ".join(f"https://s{i}.example" for i in range(12)), 2, 5.0),
        ("one link: https://a.example", 0, 2.5),
        (" ".join(f"https://s{i}.example" for i in range(12)), 12, None),
    ],
)
def test_links_over_the_allowance_score(svc, message, max_links, score):
    found = rules(svc, SpamSettings(max_links=max_links), message=message)
    if score is None:
        assert "links" not in found
    else:
        assert found["links"].score == score
        assert found["links"].action == "score"
        assert found["links"].threshold == f"at most {max_links}"


def test_steering_fields_and_tokens_are_not_the_visitors_text():
    context = SpamContext(
        form_id="contact",
        message="Hi",
        pairs=(
            ("message", "Hi"),
            ("_next", "https://www.example.com/thanks"),
            ("cf-turnstile-response", "http://token"),
            ("website", "https://my.example"),
        ),
    )
    text = post_text(context)
    assert "thanks" not in text and "token" not in text
    assert count_links(text) == 1  # the visitor's own website field counts


@pytest.mark.parametrize(
    ("words", "message", "hit"),
    [
        (("casino",), "Best CASINO bonus!", "casino"),
        (("casino",), "I work at the casinos in town", None),
        (("sex",), "We are based in Sussex.", None),
        (("buy now",), "Please Buy Now, friend", "buy now"),
        (("c++",), "I write c++ for a living", "c++"),
        (("крипто",), "Лучшее КРИПТО предложение", "крипто"),
    ],
)
def test_blocked_words_match_whole_words_in_any_case(svc, words, message, hit):
    found = rules(svc, SpamSettings(blocked_words=words), message=message)
    if hit is None:
        assert "blocked_word" not in found
    else:
        assert found["blocked_word"].value == hit
        assert found["blocked_word"].action == "quarantine"


def test_blocked_words_look_at_subject_name_and_other_fields(svc):
    settings = SpamSettings(blocked_words=("casino",))
    assert "blocked_word" in rules(svc, settings, subject="Casino offer")
    assert "blocked_word" in rules(svc, settings, name="Casino Bob")
    extra = (("company", "Casino Ltd"),)
    assert "blocked_word" in rules(svc, settings, pairs=extra)


def test_blocked_patterns_quarantine_and_name_the_pattern_not_the_text(svc):
    settings = SpamSettings(blocked_patterns=(re.compile(r"\bseo\b", re.I),))
    found = rules(svc, settings, message="Cheap SEO for you")
    assert found["blocked_pattern"].action == "quarantine"
    assert found["blocked_pattern"].value == r"\bseo\b"
    assert "blocked_pattern" not in rules(svc, settings, message="Seoul trip")


@pytest.mark.parametrize(
    ("email", "hit"),
    [
        ("bot@spam.example", "spam.example"),
        ("bot@Mail.Spam.Example", "spam.example"),
        ("ada@notspam.example", None),
        ("ada@spam.example.org", None),
        ("no-at-sign", None),
        ("", None),
    ],
)
def test_blocked_email_domains_match_the_domain_and_its_subdomains(svc, email, hit):
    settings = SpamSettings(blocked_email_domains=("spam.example",))
    found = rules(svc, settings, email=email)
    if hit is None:
        assert "blocked_email_domain" not in found
    else:
        assert found["blocked_email_domain"].threshold == hit
        assert found["blocked_email_domain"].action == "quarantine"


@pytest.mark.parametrize(
    ("ip", "hit"),
    [
        ("198.51.100.7", "198.51.100.0/24"),
        ("203.0.113.9", "203.0.113.9/32"),
        ("2001:db8::1", "2001:db8::/32"),
        ("198.51.101.7", None),
        ("2001:db9::1", None),
        ("not-an-ip", None),
        (None, None),
    ],
)
def test_blocked_networks_drop(svc, ip, hit):
    settings = SpamSettings(
        blocked_networks=(
            ip_network("198.51.100.0/24"),
            ip_network("203.0.113.9/32"),
            ip_network("2001:db8::/32"),
        )
    )
    found = rules(svc, settings, client_ip=ip)
    if hit is None:
        assert "blocked_network" not in found
    else:
        assert found["blocked_network"].threshold == hit
        assert found["blocked_network"].action == "drop"


@pytest.mark.parametrize(
    ("seconds", "scored"), [(None, False), (0.4, True), (2.9, True), (3.0, False)]
)
def test_fill_time_scores_only_a_known_fill_under_the_minimum(
    make_app, seconds, scored
):
    app = make_app({"MIN_FILL_SECONDS": "3"})
    with app.app_context():
        found = rules(services_of(app), fill_seconds=seconds)
    assert ("fill_time" in found) is scored
    if scored:
        assert found["fill_time"].score == 3.0


def _store(app, form_id: str, message: str) -> None:
    post = Post(form_id=form_id, recipient="sales", subject="Hi", message=message)
    with app.app_context():
        accept(services_of(app), post)


def test_a_body_stored_before_on_any_form_scores_as_a_repeat(app_on_db):
    app = app_on_db
    clock = use_fake_clock(app)
    _store(app, "default", BODY)
    with app.app_context():
        svc = services_of(app)
        assert rules(svc)["repeated_body"].score == 2.0
        # Spacing, case and line endings do not make it another body.
        again = rules(svc, message=BODY.upper().replace(" ", "  \r\n"))
        assert again["repeated_body"].value == "1 earlier copy"
    _store(app, "other", BODY)
    _store(app, "hosted", BODY)
    with app.app_context():
        svc = services_of(app)
        found = rules(svc)["repeated_body"]
        assert (found.value, found.score) == ("3 earlier copies", 3.0)
        assert "repeated_body" not in rules(svc, SpamSettings(repeat_window=0))
        assert "repeated_body" not in rules(svc, message="Another text entirely.")
    clock.advance(86401)
    with app.app_context():
        assert "repeated_body" not in rules(services_of(app))


def test_short_bodies_are_never_repeats(app):
    _store(app, "default", "Call me back.")
    with app.app_context():
        assert "repeated_body" not in rules(services_of(app), message="Call me back.")


def test_content_alone_never_drops_a_post(make_app, relay):
    """Every content rule at once, at its heaviest: quarantined, not dropped."""
    app = make_app(relay.env(MIN_FILL_SECONDS="3"))
    spammy = " ".join(f"https://s{i}.example casino seo" for i in range(20))
    for _ in range(4):
        _store(app, "default", spammy)
    settings = SpamSettings(
        blocked_words=("casino",),
        blocked_patterns=(re.compile("seo"),),
        blocked_email_domains=("spam.example",),
    )
    with app.app_context():
        reasons = check(
            ctx(message=spammy, email="x@spam.example", fill_seconds=0.1),
            settings,
            services_of(app),
        )
        assert {r.rule for r in reasons} >= {
            "links",
            "blocked_word",
            "blocked_pattern",
            "blocked_email_domain",
            "repeated_body",
            "fill_time",
        }
    verdict = decide(reasons, settings.quarantine_at, settings.drop_at)
    assert verdict.name == "quarantine"
    assert verdict.score < settings.drop_at
