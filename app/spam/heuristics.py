"""Built-in content signals: what contact-form spam shows and customers rarely do.

The layer reads the visitor's name, subject and message (never other
fields: a `website` field is meant to hold a link) and scores what it sees:

| rule                | what it looks for                                   | score |
| ------------------- | --------------------------------------------------- | ----: |
| `bbcode_link`       | `[url=...]`, `[url]...[/url]`: forum markup (bots)  |   4.0 |
| `html_link`         | `<a href=...>` in the text                          |   2.0 |
| `link_in_name`      | a URL or `www.` address in the name                 |   4.0 |
| `link_in_subject`   | a URL or `www.` address in the subject              |   2.5 |
| `link_density`      | 2+ links, fewer than 15 words per link              |   2.0 |
| `shortener`         | a link through a URL shortener (bit.ly, ...)        |   2.5 |
| `mostly_link`       | a link with fewer than 5 other words                |   2.0 |
| `script_link`       | Cyrillic/CJK text with 2+ links, or one link and    |   2.0 |
|                     | under 40 characters of text                         |       |
| `mixed_script_word` | a word mixing Latin and Cyrillic letters (`vіagra`) |   2.5 |
| `pitch_phrases`     | SEO, web-design, guest-post, lead-list, crypto,     |   1-3 |
|                     | forex, loan, casino, pharma phrases (PHRASES)       | each, |
|                     |                                                     | max 9 |
| `all_caps`          | 20+ letters, 70% of them capitals                   |   1.0 |
| `repeated_punct`    | runs like `!!!`, `???`, `$$$` (0.5 each)            | <=1.0 |

Every reason is a score only (action `score`): no signal quarantines on
its own, a post is quarantined (at `quarantine_at`, 5 by default) when
several agree, and dropped only at `drop_at` (15). The weights were tuned
against the labelled corpus in tests/corpus/ (bench/spam.py prints what
this layer catches and its false positives there; zero is the line).

A reason says what it saw ("3 pitch phrases: backlinks, guest post, ...")
in the layer's own words: the name of the matched phrase, a count, a host
of a shortener; never the visitor's text around it.

Why a short, weighted phrase list and not a trained classifier: each
phrase is a reason an owner can read and argue with ("guest post" scored
2), the list is reviewed in tests against sentences customers write
(tests/test_heuristics.py), it needs no training data (a new install has
none, and a form gets a few posts a day), and it ships no model to
update. The phrases are written in the second person of a sales pitch
("increase your traffic", "redesign your website"), not the topic words
("SEO", "crypto") a customer uses when asking a question. Statistical
filtering is rspamd's job (its Bayes and fuzzy hashes, when RSPAMD_URL
is set), where an owner can train it on their own mail.

The script rule is kept simple: Formpost does not know a form's
language, so it does not compare a post with the form's other posts; it
scores Cyrillic or CJK text that is little more than a carrier for links
(link spam), while a Chinese customer's question with one link passes.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

from . import Reason, SpamContext
from .settings import SpamSettings

if TYPE_CHECKING:
    from ..services import Services

LAYER = "heuristics"

BBCODE = re.compile(r"\[(url|link)(=[^\]]*)?\]", re.IGNORECASE)
HTML_LINK = re.compile(r"<a\s[^>]*href\s*=", re.IGNORECASE)
# A link as spam writes it: with a scheme, or starting with www.
URL = re.compile(
    r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"'\]\[)]+",
    re.IGNORECASE,
)
HOST = re.compile(r"^(?:(?:https?|ftp)://)?([^/:?#\s]+)", re.IGNORECASE)
SHORTENERS = frozenset(
    {
        "bit.ly",
        "bitly.com",
        "tinyurl.com",
        "goo.gl",
        "t.co",
        "is.gd",
        "v.gd",
        "ow.ly",
        "cutt.ly",
        "rebrand.ly",
        "shorturl.at",
        "tiny.cc",
        "rb.gy",
        "t.ly",
        "s.id",
        "clck.ru",
        "u.to",
        "tr.ee",
        "shorte.st",
        "adf.ly",
    }
)
WORD = re.compile(r"\w+", re.UNICODE)
PUNCT_RUN = re.compile(r"([!?$€*])\1{2,}")

# (label shown to the owner, regular expression, weight). Case-insensitive;
# matched on the name, subject and message with whitespace collapsed. A
# phrase counts once however often it appears.
PHRASES: tuple[tuple[str, str, float], ...] = (
    # SEO and web-design pitches: the second person is the pitch.
    ("first page of google", r"\b(first|top|1st) page (of|on|in) google\b", 2.5),
    ("backlinks", r"\b(back ?links?|do-?follow links?|link building)\b", 2.0),
    ("domain authority", r"\b(domain authority|high (da|pa|dr)\b|da ?\d\d\+?)", 2.0),
    ("guest post", r"\bguest[- ]?post(s|ing)?\b", 2.0),
    ("sponsored post", r"\bsponsored (post|article)s?\b", 1.5),
    (
        "increase your traffic",
        r"\b(increase|boost|improve|double|skyrocket) (your|ur) "
        r"(website'?s?|site'?s?|online|organic|google)? ?"
        r"(traffic|rankings?|seo|visibility|sales|leads)\b",
        2.0,
    ),
    (
        "rank your website",
        r"\b(rank|ranking) (your|ur) (website|site|business)\b",
        2.0,
    ),
    (
        "seo services",
        r"\b(seo|smo|digital marketing) (services?|packages?|experts?|agency)\b",
        1.5,
    ),
    (
        "looked at your website",
        r"\b(i|we) (was|were|am|are|have been|just) "
        r"(looking at|checking|visited|reviewing|went through|came across) "
        r"your (website|site)\b",
        1.5,
    ),
    (
        "redesign your website",
        r"\b(redesign|revamp|rebuild|upgrade) (of )?(your|ur) (website|site)\b",
        2.0,
    ),
    (
        "web design offer",
        r"\b(affordable|professional|cheap) (web ?site|web) "
        r"(design|development) (services?|packages?|company)\b",
        1.5,
    ),
    (
        "not ranking",
        r"\b(not|isn'?t) (ranking|showing up|visible) (on|in) google\b",
        1.5,
    ),
    # Lead lists and marketing data.
    (
        "lead list",
        r"\b(b2b |verified |targeted )?(email|leads?|contact|mailing) "
        r"(list|database)s? (of|for|with)\b",
        2.0,
    ),
    ("decision makers", r"\bdecision[- ]makers?\b", 1.5),
    ("opt out", r"\b(reply|respond|write) (with )?[\"']?(stop|no|unsubscribe)\b", 1.0),
    # Money: crypto, forex, loans, "income".
    (
        "crypto investment",
        r"\b(bitcoin|btc|crypto(currency)?|usdt|ethereum|eth) "
        r"(investment|investing|trading (platform|bot|signals)|profits?|mining pool|"
        r"wallet recovery|doubling)\b",
        2.5,
    ),
    ("forex", r"\bforex\b|\bbinary options?\b", 2.0),
    (
        "guaranteed returns",
        r"\b(guaranteed|daily|weekly|passive) (profits?|returns?|income|earnings)\b",
        2.5,
    ),
    (
        "earn per day",
        r"\b(earn|make|making) \$?\d[\d,.]*k? ?(usd|dollars|\$|€|euros?)? "
        r"(per|a|every|each) (day|week|hour)\b",
        2.5,
    ),
    (
        "loan offer",
        r"\b(instant|quick|fast|easy|personal|business) (cash )?loans? "
        r"(offer|approval|approved|available|at)\b|\bloan offer\b",
        2.0,
    ),
    ("no credit check", r"\bno credit checks?\b", 2.0),
    # Gambling and pharma.
    ("casino", r"\b(online )?casino\b|\bfree spins\b|\bslot machines? online\b", 2.5),
    ("betting", r"\b(sports? betting|bookmaker|betting (tips|site))\b", 2.0),
    (
        "pharma",
        r"\b(viagra|cialis|levitra|tramadol|xanax|phentermine|oxycodone)\b",
        3.0,
    ),
    ("no prescription", r"\bwithout (a )?prescription\b|\bno prescription\b", 2.0),
    ("adult", r"\b(hot|lonely) (girls|singles|women) (in|near) your\b", 2.5),
    # Russian-language pitches seen on contact forms.
    ("продвижение сайтов", r"продвижени\w* (ваш\w* )?сайт", 2.5),
    ("прогон", r"\bпрогон\w*", 2.5),
    ("казино", r"казино", 2.5),
    ("займ", r"\bзайм\w*|\bкредит\w* без", 2.0),
    ("заработок", r"заработ\w*|без вложений", 2.0),
    ("ставки", r"\bставк\w* на спорт|\bбукмекер\w*", 2.0),
    ("купить", r"\bкупить\b|\bдешево\b|\bскидк\w*", 1.0),
    # Chinese-language pitches (gambling, invoices, click farms, SEO).
    ("博彩", r"博彩|百家乐|娱乐城|赌场|棋牌|时时彩|真人(视讯|娱乐)", 3.0),
    ("注册送", r"注册(就)?送|首存|返水|彩金", 2.5),
    ("代开发票", r"代开\w*发票|发票代开", 3.0),
    ("刷单", r"刷单|兼职日(赚|结)|日赚\d+", 2.5),
    ("网站排名", r"(网站|关键词)(快速)?排名|seo优化|百度(首页|快照)", 2.0),
)
_COMPILED = tuple(
    (label, re.compile(pattern, re.IGNORECASE), weight)
    for label, pattern, weight in PHRASES
)
PHRASES_MAX = 9.0

W_BBCODE = 4.0
W_HTML_LINK = 2.0
W_LINK_IN_NAME = 4.0
W_LINK_IN_SUBJECT = 2.5
W_LINK_DENSITY = 2.0
W_SHORTENER = 2.5
W_MOSTLY_LINK = 2.0
W_SCRIPT_LINK = 2.0
W_MIXED_SCRIPT = 2.5
W_ALL_CAPS = 1.0
W_PUNCT_RUN = 0.5

WORDS_PER_LINK = 15
MOSTLY_LINK_WORDS = 5
SHORT_SCRIPT_TEXT = 40


def check(ctx: SpamContext, settings: SpamSettings, services: Services) -> list[Reason]:
    """Score the name, subject and message for content spam shows."""
    return signals(ctx.name, ctx.subject, ctx.message)


def signals(name: str, subject: str, message: str) -> list[Reason]:
    """Return the reasons for one post's name, subject and message."""
    reasons: list[Reason] = []
    links = URL.findall(message)

    bbcode = len(BBCODE.findall(message)) + len(BBCODE.findall(subject))
    if bbcode:
        reasons.append(_reason("bbcode_link", f"{bbcode} [url] tags", "", W_BBCODE))
    html = len(HTML_LINK.findall(message))
    if html:
        reasons.append(_reason("html_link", f"{html} <a href> tags", "", W_HTML_LINK))
    if URL.search(name):
        reasons.append(
            _reason("link_in_name", "a link in the name", "", W_LINK_IN_NAME)
        )
    if URL.search(subject):
        reasons.append(
            _reason("link_in_subject", "a link in the subject", "", W_LINK_IN_SUBJECT)
        )

    rest = URL.sub(" ", message)
    words = len(WORD.findall(rest))
    if len(links) >= 2 and words < WORDS_PER_LINK * len(links):
        reasons.append(
            _reason(
                "link_density",
                f"{len(links)} links in {words} words",
                f"at least {WORDS_PER_LINK} words per link",
                W_LINK_DENSITY,
            )
        )
    short = sorted({h for h in (_host(link) for link in links) if h in SHORTENERS})
    if short:
        reasons.append(
            _reason("shortener", "link shortener: " + ", ".join(short), "", W_SHORTENER)
        )
    if links and words < MOSTLY_LINK_WORDS:
        reasons.append(
            _reason(
                "mostly_link",
                f"a link and {words} other words",
                f"at least {MOSTLY_LINK_WORDS} words",
                W_MOSTLY_LINK,
            )
        )
    script = _script(rest)
    text_length = len("".join(rest.split()))
    if links and script and (len(links) >= 2 or text_length < SHORT_SCRIPT_TEXT):
        reasons.append(
            _reason(
                "script_link",
                f"{len(links)} links in {script} text",
                "",
                W_SCRIPT_LINK,
            )
        )
    mixed = _mixed_script_words(" ".join((name, subject, message)))
    if mixed:
        reasons.append(
            _reason(
                "mixed_script_word",
                f"{mixed} words mixing Latin and Cyrillic letters",
                "",
                W_MIXED_SCRIPT,
            )
        )

    text = " ".join(" ".join((name, subject, message)).split())
    matched = [(label, w) for label, rx, w in _COMPILED if rx.search(text)]
    if matched:
        score = min(PHRASES_MAX, sum(w for _, w in matched))
        count = len(matched)
        reasons.append(
            _reason(
                "pitch_phrases",
                f"{count} pitch phrase{'s' if count > 1 else ''}: "
                + ", ".join(label for label, _ in matched),
                "",
                score,
            )
        )

    letters = [ch for ch in message if ch.isalpha() and ch.lower() != ch.upper()]
    if len(letters) >= 20:
        upper = sum(1 for ch in letters if ch.isupper())
        if upper >= 0.7 * len(letters):
            reasons.append(
                _reason(
                    "all_caps",
                    f"{round(100 * upper / len(letters))}% capitals",
                    "under 70%",
                    W_ALL_CAPS,
                )
            )
    runs = len(PUNCT_RUN.findall(subject + " " + message))
    if runs:
        reasons.append(
            _reason(
                "repeated_punct",
                f"{runs} runs like !!!",
                "",
                min(2 * W_PUNCT_RUN, runs * W_PUNCT_RUN),
            )
        )
    return reasons


def _reason(rule: str, value: str, threshold: str, score: float) -> Reason:
    return Reason(layer=LAYER, rule=rule, value=value, threshold=threshold, score=score)


def _host(link: str) -> str:
    match = HOST.match(link)
    host = match.group(1).lower() if match else ""
    return host.removeprefix("www.")


def _script(text: str) -> str | None:
    """Return "Cyrillic" or "CJK" when most of the letters are in that script."""
    cyrillic = cjk = other = 0
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if name.startswith("CYRILLIC"):
            cyrillic += 1
        elif name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")):
            cjk += 1
        else:
            other += 1
    total = cyrillic + cjk + other
    if not total:
        return None
    if cyrillic > total / 2:
        return "Cyrillic"
    # A Han character carries a word: a few of them already make the text CJK.
    if cjk * 2 > other / 2 and cjk >= 2:
        return "CJK"
    return None


def _mixed_script_words(text: str) -> int:
    """Count words that mix Latin and Cyrillic letters (homoglyph disguises)."""
    count = 0
    for word in WORD.findall(text):
        if len(word) < 3 or word.isascii():
            continue
        latin = cyrillic = False
        for ch in word:
            if not ch.isalpha():
                continue
            name = unicodedata.name(ch, "")
            if name.startswith("LATIN"):
                latin = True
            elif name.startswith("CYRILLIC"):
                cyrillic = True
        if latin and cyrillic:
            count += 1
    return count
