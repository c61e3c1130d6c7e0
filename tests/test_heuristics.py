"""The built-in content signals (app/spam/heuristics.py), sentence by sentence.

Positive cases: what contact-form spam writes, and the rule each must trip.
Negative cases: what customers write (SEO and crypto as topics, a Chinese
customer with one link, code with URLs, shouting at a late parcel), which
must stay at 1.5 or under: low enough that a visitor without JavaScript
(a missing proof of work scores 3) is still under the default quarantine
threshold of 5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from app.spam import SpamContext
from app.spam.gate import LAYERS
from app.spam.heuristics import LAYER, LAYER_MAX, PHRASES, check, signals
from app.spam.settings import SpamSettings

from .helpers import services_of

# (name, subject, message)
CUSTOMERS = [
    ("Laura", "Website quote", "Could you build us a new website with basic SEO?"),
    ("Ben", "SEO audit", "Our organic traffic fell 40%; can you quote an SEO audit?"),
    ("Olivia", "Crypto?", "Do you accept payment in crypto, Bitcoin or Ethereum?"),
    ("Sam", "Tax", "Is the crypto tax workshop suitable for individuals?"),
    ("Nadia", "Finance", "Do you offer finance or do we need to arrange a loan?"),
    (
        "李明",
        "尺寸",
        "你好，请问这款书架 https://shop.example/p/oak-shelf 的尺寸是外部还是内部"
        "尺寸？我家的墙只有122厘米宽。谢谢您的回复。",
    ),
    (
        "Kevin",
        "Webhook",
        "I verify signatures like this:\n\n    sig = hmac.new(key, body, sha256)\n"
        "The docs at https://docs.shop.example/webhooks don't say which body.",
    ),
    (
        "Jonas",
        "API 500",
        "```\ncurl -s https://api.shop.example/v2/orders?since=2026-12-01\n"
        '{"error":"internal"}\n```\nIs there an incident?',
    ),
    (
        "Daniel",
        "Footer",
        'In the footer I have <a href="https://shop.example/unsubscribe">Unsubscribe'
        "</a> but the variable is not replaced. Is user.id available there?",
    ),
    (
        "Arjun",
        "Two sofas",
        "I'm deciding between https://shop.example/p/harbour-3 and "
        "https://shop.example/p/harbour-corner. Is the fabric the same on both, "
        "and is it washable? Will the corner one fit through a 76 cm door?",
    ),
    (
        "Greta",
        "Backlinks on your blog?",
        "I linked to your recipe page, hope that's OK",
    ),
    ("George", "Guest post", "Would you write a guest post for our parish newsletter?"),
    ("Derek", "ORDER NOT ARRIVED", "I ORDERED TWO WEEKS AGO AND NOTHING HAS ARRIVED."),
    (
        "Karen",
        "Really!!!",
        "Nobody came!!! This is the second time. What is going on???",
    ),
    ("Emma", "Thank you! ❤️", "The flowers arrived and my mum was over the moon 💐🎉"),
    ("Anna", "Congratulations!", "Congratulations on your tenth anniversary!"),
    ("Raj", "Locked out", "My account is locked after the update, can you help?"),
    ("Pavel", "Прайс", "Добрый день! Отправьте, пожалуйста, прайс-лист на муку."),
    (
        "Igor",
        "Заказ",
        "Здравствуйте, я заказал кофемолку https://shop.example/p/grinder-200. "
        "Подскажите, когда будет доставка? Номер заказа 5521.",
    ),
    (
        "Yuki",
        "在庫",
        "抹茶茶碗（黒）の在庫はまだありますか？日本への発送は可能でしょうか。",
    ),
    (
        "Mia",
        "Soap shop",
        "We make handmade soap and want more customers online. Do you have a "
        "low cost option? If you're interested in the project, let me know.",
    ),
    (
        "Ellie",
        "Damage",
        "Photos: https://photos.example/a/1 https://photos.example/a/2",
    ),
    ("Chen", "", "https://shop.example/p/tea-set-blue 这个还有货吗"),
    ("Tom", "Hello", "Please send me your price list and opening hours."),
    (
        "Zara",
        "Projector",
        "Could we get a loan of a projector for a charity film night?",
    ),
    (
        "Mark",
        "Google",
        "Our site barely shows up on Google. What SEO would you suggest?",
    ),
]

# (name, subject, message, a rule that must be among the reasons)
SPAM = [
    ("Steven", "hi", "[url=https://casino.example]best casino[/url]", "bbcode_link"),
    ("Win http://prize.example", "You won", "Claim it today.", "link_in_name"),
    ("Bob", "http://deals.example", "best deals here", "link_in_subject"),
    ("Rob", "nice", "Thanks for the article! https://bit.ly/3xYz9Qw", "shortener"),
    ("Dave", "Hi", "hi http://free-money.example.top", "abused_tld"),
    ("Dave", "Hi", "hi http://free-money.example.top", "mostly_link"),
    (
        "Li",
        "",
        "see http://x.example/1 and also http://x.example/2 or maybe http://x.example/3",
        "link_density",
    ),
    ("Ann", "Notice", "See proof: https://docs.example/proof.zip", "file_link"),
    (
        "Oleg",
        "",
        "Лучшее онлайн казино с бонусом http://casino.example.ru",
        "script_link",
    ),
    (
        "兼职",
        "",
        "手机刷单兼职日结 简单易做 http://a.example.cn http://b.example.cn",
        "script_link",
    ),
    (
        "客服",
        "",
        "你好 http://link.example.cn/a http://link.example.cn/b",
        "mostly_link",
    ),
    ("Store", "Men", "Best prices on vіagra and сialis.", "mixed_script_word"),
    (
        "Cash",
        "LOANS",
        "INSTANT LOANS TODAY, NO CREDIT CHECK, BAD CREDIT IS OK",
        "all_caps",
    ),
    ("Win", "Won!!!", "You have been selected!!! Claim now $$$", "repeated_punct"),
]

# (message, phrase labels that must all be found)
PITCHES = [
    (
        "I was looking at your website and it is not on the first page of Google. "
        "We sell high quality backlinks and guest posting.",
        {"looked at your website", "first page of google", "backlinks", "guest post"},
    ),
    ("We can redesign your website, packages from $299.", {"redesign your website"}),
    ("Improve your online visibility and boost your sales.", {"increase your traffic"}),
    ("Bitcoin investment with guaranteed daily profit.", {"crypto investment"}),
    ("Personal loans at low interest, no credit check.", {"loan offer"}),
    ("B2B email list of decision makers, 25,000 verified contacts.", {"lead list"}),
    ("Online casino with free spins.", {"casino"}),
    ("Buy vіagra without prescription.", {"pharma", "no prescription"}),
    ("Your account has been suspended. Verify your identity.", {"account threat"}),
    (
        "Продвижение сайтов в Яндексе, прогон по базам.",
        {"продвижение сайтов", "прогон"},
    ),
    ("澳门娱乐城 真人百家乐 注册送88元", {"博彩", "注册送"}),
    ("代开各类发票，联系微信", {"代开发票"}),
    ("Web Visitors Into Leads captures any visitor's name", {"visitors into leads"}),
]


def total(name: str, subject: str, message: str) -> float:
    return sum(r.score for r in signals(name, subject, message))


@pytest.mark.parametrize(("name", "subject", "message"), CUSTOMERS)
def test_what_customers_write_stays_under_the_no_javascript_margin(
    name, subject, message
):
    reasons = signals(name, subject, message)
    assert sum(r.score for r in reasons) <= 1.5, [(r.rule, r.value) for r in reasons]


@pytest.mark.parametrize(("name", "subject", "message", "rule"), SPAM)
def test_spam_trips_its_rule(name, subject, message, rule):
    assert rule in {r.rule for r in signals(name, subject, message)}


@pytest.mark.parametrize(("message", "labels"), PITCHES)
def test_pitch_phrases_are_named(message, labels):
    (reason,) = [r for r in signals("", "", message) if r.rule == "pitch_phrases"]
    for label in labels:
        assert label in reason.value


def test_a_full_pitch_reaches_quarantine_on_its_own():
    message = (
        "Hi, I was looking at your website and noticed it is not ranking on Google. "
        "We can get you on the first page of Google with our SEO services: high DA "
        "backlinks and guest posting. Reply YES for a free audit."
    )
    assert total("Rahul", "Increase your website traffic", message) >= 5.0


def test_several_phrases_and_a_link_add_a_bonus_with_a_ceiling():
    message = " ".join(
        [
            "casino, free spins, viagra, forex, bitcoin investment, guaranteed",
            "profit, no credit check, backlinks, guest post http://x.example",
        ]
    )
    (reason,) = [r for r in signals("", "", message) if r.rule == "pitch_phrases"]
    assert reason.score == 9.0
    assert reason.threshold == "max 9"
    assert reason.value.endswith(", with a link")


def test_reasons_never_quote_the_visitors_text():
    secret = "Zanzibar-4711"
    message = (
        f"[url=http://{secret}.example]{secret}[/url] I was looking at your website "
        f"{secret}, backlinks {secret} https://bit.ly/{secret} "
        f"VERY LOUD {secret.upper()} TEXT!!!"
    )
    reasons = signals(f"{secret} http://{secret}.example", secret, message)
    assert len(reasons) >= 5
    for reason in reasons:
        assert secret.lower() not in (reason.value + reason.threshold).lower()
        assert reason.layer == LAYER
        assert reason.action == "score"


def test_only_a_combined_score_reaches_quarantine_and_never_drop():
    """Each signal scores under quarantine_at but the phrases together; the
    layer as a whole adds at most LAYER_MAX, under drop_at."""
    worst = "[url=http://a.example]x[/url] " * 20 + "casino viagra forex " * 10
    reasons = signals("http://a.example vіagra", "http://a.example!!!", worst)
    for reason in reasons:
        assert reason.action == "score"
        if reason.rule != "pitch_phrases":
            assert reason.score < SpamSettings().quarantine_at
    assert sum(r.score for r in reasons) == LAYER_MAX < SpamSettings().drop_at
    assert any(r.threshold == "layer total at most 9" for r in reasons)


def test_other_fields_are_not_read(app: Flask):
    """A `website` field holds a link by design: only name, subject, message count."""
    ctx = SpamContext(
        form_id="default",
        pairs=(("website", "https://bit.ly/abc"), ("company", "SEO services ltd")),
        name="Ruth",
        subject="Quote",
        message="Could you quote for a new kitchen? We are in Cork.",
    )
    with app.app_context():
        assert check(ctx, SpamSettings(), services_of(app)) == []


def test_the_layer_runs_after_rules_in_the_gate():
    names = [name for name, _ in LAYERS]
    assert names.index("heuristics") == names.index("rules") + 1


def test_every_phrase_pattern_matches_its_own_kind_of_text():
    """No phrase is dead: each label has a sample in these tests or the corpus."""
    corpus = Path(__file__).parent / "corpus"
    texts = [m for m, _ in PITCHES] + [s[2] for s in SPAM]
    for line in (corpus / "spam.jsonl").read_text("utf-8").splitlines():
        post = json.loads(line)
        texts.append(" ".join(v for _, v in post["fields"]))
    seen: set[str] = set()
    for text in texts:
        for reason in signals("", "", text):
            if reason.rule == "pitch_phrases":
                named = reason.value.split(": ", 1)[1].removesuffix(", with a link")
                seen |= set(named.split(", "))
    assert {label for label, _, _ in PHRASES} - seen == set()
