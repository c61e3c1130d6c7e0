"""Built-in content signals: what contact-form spam shows and customers rarely do.

The layer reads the visitor's name, subject and message (never other
fields: a `website` field is meant to hold a link) and scores what it sees:

| rule                | what it looks for                                   | score |
| ------------------- | --------------------------------------------------- | ----: |
| `bbcode_link`       | `[url=...]`, `[url]...[/url]`: forum markup (bots)  |   4.0 |
| `html_link`         | `<a href=...>` in the text                          |   1.5 |
| `link_in_name`      | a URL or `www.` address in the name                 |   4.0 |
| `link_in_subject`   | a URL or `www.` address in the subject              |   2.5 |
| `link_density`      | 2+ links, under 10 words per link (not mostly_link) |   1.5 |
| `shortener`         | a link through a URL shortener (bit.ly, ...)        |   3.5 |
| `abused_tld`        | a link under a TLD mostly used for abuse (.top,...) |   2.0 |
| `file_link`         | a link straight to an archive or program (.zip,...) |   1.5 |
| `mostly_link`       | a link and under 5 other words                      |   1.5 |
| `script_link`       | Cyrillic/CJK text, under 30 characters per link     |   1.5 |
| `mixed_script_word` | a word mixing Latin and Cyrillic letters (`vіagra`) |   3.0 |
| `pitch_phrases`     | PHRASES below: SEO, web-design, guest-post, lead    |  1-3  |
|                     | lists, cold outreach, crypto, forex, loans, scams,  | each, |
|                     | casino, pharma, in English, Russian, Chinese; +1    | max 9 |
|                     | for 3 strong ones, +1 with a link (over 1.5 only)   |       |
| `all_caps`          | 20+ letters, 70% of them capitals                   |   1.0 |
| `repeated_punct`    | runs like `!!!`, `???`, `$$$`                       |   0.5 |

Every reason is a score only (action `score`): no signal but a pitch of
several phrases reaches quarantine on its own, a post is quarantined (at
`quarantine_at`, 5 by default) when several agree, and the whole layer
adds at most 9 (LAYER_MAX), so on its own it never reaches `drop_at`
(15). How the weights are set: what a customer might well write (an
HTML snippet, two links, a short question under a link, a link in
Chinese text, one topic phrase such as "backlinks") weighs at most 1.5,
so a customer without JavaScript (a missing proof of work scores 3) who
shows one of them stays under 5; 2 and more goes to what customers
practically never do (BBCode, a link as their name, a shortener, a pitch
of several phrases). They were tuned against the labelled corpus in
tests/corpus/; bench/spam.py prints what this layer adds there, its
false positives (zero is the line) and its rate on a held-out set.

A reason says what it saw ("3 pitch phrases: backlinks, guest post, ...")
in the layer's own words: the name of the matched phrase, a count, a host
of a shortener; never the visitor's text around it.

Why a short, weighted phrase list and not a trained classifier: each
phrase is a reason an owner can read and argue with ("guest post" scored
1.5), the list is reviewed in tests against sentences customers write
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
from dataclasses import replace
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
TAG = re.compile(r"</?[a-z][^>]*>|\[/?(url|link)[^\]]*\]", re.IGNORECASE)
PUNCT_RUN = re.compile(r"([!?$€*])\1{2,}")

# (label shown to the owner, regular expression, weight). Case-insensitive;
# matched on the name, subject and message with whitespace collapsed. A
# phrase counts once however often it appears.
PHRASES: tuple[tuple[str, str, float], ...] = (
    # SEO and web-design pitches: the second person is the pitch.
    (
        "first page of google",
        r"\b(first|top|1st) page (of|on|in) google\b|\btop of google\b",
        2.5,
    ),
    (
        "your website's numbers",
        r"\byour (organic traffic|rankings?|seo|google (business )?profile|"
        r"online (presence|visibility)|conversion rates?|bounce rate|page ?speed|"
        r"homepage|facebook page|instagram)\b",
        1.5,
    ),
    (
        "backlinks",
        r"\b(back ?links?|do-?follow|link building|link insertions?|"
        r"links? back to|authority links?)\b",
        1.5,
    ),
    (
        "domain authority",
        r"\b(domain authority|high (da|pa|dr)\b|da ?\d\d\+?|monthly traffic)",
        2.0,
    ),
    ("guest post", r"\bguest[- ]?(post(s|ing)?|articles?|blog(ging)?)\b", 1.5),
    (
        "guest-post terms",
        r"\b(author bio|your niche|in return (for|i'?d)|high[- ]quality "
        r"(article|content|backlinks)|(fit|suit)s? your (blog|site|audience)|"
        r"partner site|in exchange|contextual links?|"
        r"contribute an? (article|post)|write for (you|your blog)|"
        r"(share )?your (guest post )?guidelines|publish an? (paid |sponsored )?"
        r"(article|post) on your)\b",
        1.5,
    ),
    ("sponsored post", r"\b(sponsored|paid) (post|article)s?\b", 1.5),
    (
        "increase your traffic",
        r"\b(increase|boost|improve|double|skyrocket|grow) (your|ur) "
        r"(website'?s?|site'?s?|online|organic|google|local)? ?"
        r"(traffic|rankings?|seo|visibility|sales|leads|presence)\b",
        2.0,
    ),
    (
        "rank your website",
        r"\b(rank|ranking) (your|ur) (website|site|business)\b",
        2.0,
    ),
    (
        "seo services",
        r"\b(seo|smo|digital marketing) (services?|packages?|experts?|agency|"
        r"company|consultant|specialists?|plans?)\b",
        1.5,
    ),
    (
        "looked at your website",
        r"\b(i|we)( was| were| am| are| have| have been| just)? "
        r"(looking at|checking|checked|reviewing|reviewed|analy[sz]ing|"
        r"analy[sz]ed|audit(ing|ed)|went through) your (website|site)\b|"
        r"\b(seo )?(audit|analysis) of your (website|site|domain)\b",
        1.5,
    ),
    (
        "found problems on your site",
        r"\b(noticed|found|spotted) (a few|some|several|many|\d+) "
        r"(issues|errors|problems|mistakes)\b",
        1.5,
    ),
    (
        "your website is outdated",
        r"\byour (website|site) (looks|is|seems) (a bit |very |quite |so )?"
        r"(outdated|old|dated|slow|not mobile)",
        1.5,
    ),
    (
        "redesign your website",
        r"\b(redesign|revamp|rebuild|upgrade) (of )?(your|ur) (website|site)\b",
        2.0,
    ),
    (
        "web design offer",
        r"\b((affordable|professional|cheap) )?(web ?site|web) "
        r"(design|development) (services?|packages?|company|agency)\b",
        1.5,
    ),
    (
        "not ranking",
        r"\b(not|isn'?t) (ranking|showing up|visible) (on|in) google\b",
        1.5,
    ),
    ("reviews for sale", r"\b(5-star|five-star|positive) (google )?reviews\b", 2.0),
    (
        "followers for sale",
        r"\b\d[\d,.]*k? (real |active )?(followers|likes|subscribers)\b|"
        r"\b(real|targeted) (visitors|traffic)\b",
        2.0,
    ),
    (
        "visitors into leads",
        r"\bvisitors? into (leads|customers|sales)\b|\btalk with web visitors?\b|"
        r"\bleave without (contacting|buying)\b|\btext them back\b",
        2.5,
    ),
    (
        "capture visitor details",
        r"\bcaptur\w* (any |every |your )?visitors?'?s? (name|details|info)",
        2.0,
    ),
    (
        "comment-spam opener",
        r"\b(nice|good|great|cool|awesome) (site|website|blog|post|article)\b|"
        r"\bgreat resource\b|\buseful links\b|\b(check|look at) this( out)?\b|"
        r"\bthanks for the (article|post)\b|\bclick here\b",
        1.5,
    ),
    # Cold outreach: how a pitch asks for an answer.
    (
        "mass-mail greeting",
        r"\b(dear|hello|hi) (business owner|owner|website owner|webmaster|sir|"
        r"sir/madam|sir or madam|friend|dear|beneficiary)\b|"
        r"\bare you the owner\b",
        1.5,
    ),
    (
        "offer to send",
        r"\b(send|share)( you)?( (a|an|our|the|my|some))? (free |full )?(proposal|"
        r"report|audit|portfolio|samples?|price ?list|pricing|prices|counts|"
        r"topic ideas|mockup|cost|costs)\b|"
        r"\bwant (me to (send|share)|the (report|list))\b",
        1.5,
    ),
    (
        "free audit",
        r"\bfree (seo |website |video |site )?(audit|trial|mockup|consultation|"
        r"report|analysis|bet|spins|week|month|demo)\b",
        1.5,
    ),
    (
        "reply yes or no",
        r"\b(reply|respond|write back)( with| for)? [\"'‘]?(yes|no|stop|"
        r"unsubscribe|interested|the application|\d)\b|"
        r"\breply (with )?[\"'‘]\w+[\"'’]|"
        r"\breply if interested\b|\bif (you are |you're )?not interested\b",
        1.5,
    ),
    ("if interested", r"\bif (you are |you're )?interested\b|\binterested\?", 0.5),
    ("book a call", r"\b(quick|short|brief) (call|chat|zoom)\b|\bbook a call\b", 0.5),
    (
        "grow your business",
        r"\b(help|helps|helping) (your|ur) business grow\b|\bgrow your business\b",
        1.5,
    ),
    (
        "businesses like yours",
        r"\b(for|help|helps|helping) (small |local )?businesses( like yours)?\b|"
        r"\bcompanies like yours\b",
        1.5,
    ),
    ("more clients", r"\b(more|new) (clients|customers|appointments|leads)\b", 1.0),
    (
        "we offer",
        r"\bwe (offer|provide|specialize|specialise|generate|build|develop|make) ",
        0.5,
    ),
    ("our portfolio", r"\b(our|check our) (work|portfolio|samples)\b", 0.5),
    (
        "price from",
        r"\b(start(s|ing)? (at|from)|from (just|only)|(for )?(just|only)|"
        r"packages? from|start with|invest|deposit|"
        r"prices? from) [$€£] ?\d|[$€£] ?\d[\d,.]* ?(/|per |an? )"
        r"(hour|hr|month|mo|link|lead|post)\b",
        1.5,
    ),
    (
        "cheap price",
        r"\b(affordable|competitive|low|lowest|cheap) (price|prices|rates?|cost|"
        r"interest( rates?)?)\b",
        1.0,
    ),
    (
        "lead list",
        r"\b(b2b |verified |targeted )?(email|leads?|contact|mailing|attendees?) "
        r"(list|database)s?\b",
        2.0,
    ),
    (
        "verified contacts",
        r"\b(verified|qualified|targeted) (b2b )?(contacts|leads|emails|"
        r"email addresses)\b|\bdeliverability\b|"
        r"\b(contacts|records): ?\d|"
        r"\b\d{1,3}(,\d{3})+ (verified )?(contacts|records)\b",
        2.0,
    ),
    ("decision makers", r"\bdecision[- ]makers?\b", 1.5),
    (
        "happy clients",
        r"\b(hundreds|thousands|\d+\+?) of (happy|satisfied) (clients|customers)\b|"
        r"\bmoney[- ]back guarantee\b|\bresult[- ]oriented\b",
        1.5,
    ),
    (
        "outsourcing offer",
        r"\b(virtual assistant|data entry|lead generation|explainer videos?|"
        r"social media management)\b",
        1.0,
    ),
    (
        "messenger contact",
        r"\b(on|via) (whatsapp|telegram)\b|\btelegram: ?@|\bt\.me/|\bdm me\b|"
        r"\bqq ?\d{5,}|详询qq",
        1.0,
    ),
    # Money: crypto, forex, loans, "income".
    (
        "crypto investment",
        r"\b(bitcoin|btc|crypto(currency)?|usdt|ethereum|eth) "
        r"(investment|investing|trading|profits?|mining pool|wallet recovery|"
        r"doubling|signals|advisor)\b",
        2.5,
    ),
    (
        "crypto giveaway",
        r"\bairdrop\b|\bconnect your wallet\b|\bseed phrase\b|"
        r"\b(funds?|money|crypto) recovery\b|\brecover your (funds|money|crypto)\b|"
        r"\bget your money back\b",
        2.5,
    ),
    ("forex", r"\bforex\b|\bbinary options?\b", 2.0),
    (
        "guaranteed returns",
        r"\b(guaranteed|daily|weekly|passive|steady|consistent) "
        r"(profits?|returns?|income|earnings)\b",
        2.5,
    ),
    (
        "promised rate",
        r"\b\d+% (accuracy|win rate|returns?|profit|daily|deposit bonus|bonus)\b",
        2.0,
    ),
    (
        "earn per day",
        r"\b(earn|make|making) \$?\d[\d,.]*k? ?(usd|dollars|\$|€|euros?)? "
        r"(per|a|every|each) (day|week|hour)\b",
        2.5,
    ),
    ("financial help", r"\bfinancial (help|freedom|assistance)\b", 1.5),
    (
        "loan offer",
        r"\b(instant|quick|fast|easy|personal|business|urgent) (cash )?loans? "
        r"(offer|approval|approved|available|at)\b|\bloan (offer|officer)\b",
        2.0,
    ),
    ("no credit check", r"\bno credit checks?\b", 2.0),
    (
        "business funding",
        r"\b(merchant )?cash advances?\b|\bworking capital\b|\bpre-?approved\b",
        2.0,
    ),
    ("work from home", r"\bwork from home\b|\bno experience (needed|required)\b", 2.0),
    # Scams and phishing.
    (
        "account threat",
        r"\byour (account|domain|website|mailbox) (has been|was|is|will be|is about"
        r" to) (suspended|locked|expire|expired|deactivated|closed|blocked)",
        2.5,
    ),
    ("verify your identity", r"\bverify your (identity|account|email)\b", 2.0),
    (
        "parcel scam",
        r"\byour (parcel|package|delivery) (could not|couldn't|was not|cannot) be "
        r"delivered\b|\bredelivery fee\b",
        2.5,
    ),
    (
        "legal threat",
        r"\blegal action\b|\bpay within \d+ (hours|days)\b|"
        r"\bto avoid (fees|late fees|suspension)\b",
        1.0,
    ),
    (
        "prize",
        r"\b(you have|you've) (won|been selected)\b|\bclaim (now|here)\b|"
        r"\bclaim (your )?(prize|reward|gift|tokens|bonus|winnings)\b",
        2.0,
    ),
    (
        "advance fee",
        r"\bnext of kin\b|\bbeneficiary\b|\binheritance\b|\$\d[\d.]* million\b",
        2.5,
    ),
    # Gambling, pharma and the rest of the inbox's junk.
    (
        "casino",
        r"\b(online )?casino\b|\bfree spins\b|\bslot machines? online\b|"
        r"\bplay slots\b|\bwin real money\b|\b(deposit|welcome) bonus\b",
        2.5,
    ),
    ("betting", r"\b(sports? betting|bookmaker|betting (tips|site))\b", 2.0),
    (
        "pharma",
        r"\b(viagra|cialis|levitra|tramadol|xanax|phentermine|oxycodone)\b",
        3.0,
    ),
    (
        "no prescription",
        r"\bwithout (a )?prescription\b|\bno prescription\b|"
        r"\bno doctor (needed|required)\b|\bgeneric meds\b",
        2.0,
    ),
    ("diet pills", r"\b(diet|weight loss|keto|slimming) pills?\b|\blose weight\b", 2.5),
    ("replica goods", r"\breplica (watches|bags|shoes|handbags)\b", 2.5),
    (
        "essay writing",
        r"\bwrite my essay\b|\bessays? (written|writing)\b|\bany paper\b",
        2.0,
    ),
    ("adult", r"\b(hot|lonely) (girls|singles|women) (in|near) your\b", 2.5),
    # Russian-language pitches seen on contact forms.
    (
        "продвижение сайтов",
        r"продвижени\w* (ваш\w* )?сайт|рост позиций|позици\w* в (яндекс|google)|"
        r"\bв топ",
        2.5,
    ),
    ("прогон", r"\bпрогон\w*", 2.5),
    ("рассылка", r"рассылк\w*", 2.5),
    ("предлагаем", r"предлагаем|предложить вам|\bпод ключ\b", 1.5),
    ("казино", r"казино", 2.5),
    ("займ", r"\bзайм\w*|\bкредит\w*( \w+)? без|\bбез справок|\bодобрени\w* за", 2.0),
    ("заработок", r"заработ\w*|без вложений", 2.0),
    ("ставки", r"\bставк\w* на спорт", 2.5),
    ("букмекер", r"\bбукмекер\w*|коэффициент\w*", 2.0),
    ("гарантия", r"\bгарант\w*", 1.0),
    ("недорого", r"\bкупить\b|\bдешево\b|\bнедорого\b|\bскидк\w*", 1.0),
    ("подробнее", r"\bподробн(ее|ости)\b|\bпишите\b", 1.0),
    # Chinese-language pitches (gambling, invoices, click farms, SEO).
    ("博彩", r"博彩|百家乐|娱乐城|赌场|棋牌|时时彩|真人(视讯|娱乐)", 3.0),
    ("注册送", r"注册(就)?送|首存|返水|彩金", 2.5),
    ("代开发票", r"代开\w*发票|发票代开", 3.0),
    ("刷单", r"刷单|兼职日(赚|结)|日赚\d+", 2.5),
    (
        "网站排名",
        r"(网站|关键词)(快速)?排名|seo优化|百度(首页|快照)|外链|权重|收录",
        2.0,
    ),
    ("群发推广", r"群发|推广", 2.5),
    ("效果好价格低", r"效果好|价格低|不上首页不收费|见效|上首页|价格优惠|详询", 1.0),
    ("カジノ", r"カジノ|토토|카지노", 2.5),
)
_COMPILED = tuple(
    (label, re.compile(pattern, re.IGNORECASE), weight)
    for label, pattern, weight in PHRASES
)
# Several different pitch phrases together say more than their sum. The
# soft ones (under PHRASES_STRONG: "if interested", "we offer", "low cost")
# do not count toward that, and alone add little: a customer's own
# enquiry can hold a few of them.
PHRASES_MANY, PHRASES_MANY_BONUS, PHRASES_STRONG = 3, 1.0, 1.5
# Soft phrases with no strong one beside them add at most this much.
PHRASES_SOFT_ALONE = 1.0
# A pitch that also carries a link is asking to be clicked (not a lone phrase).
PHRASES_LINK_BONUS = 1.0
PHRASES_MAX = 9.0

# Top-level domains that abuse reports (Spamhaus, Interisle) find mostly
# registered for spam and phishing; a customer's link is rarely under one.
ABUSED_TLDS = frozenset(
    {
        "top",
        "xyz",
        "click",
        "loan",
        "win",
        "bid",
        "icu",
        "buzz",
        "cyou",
        "rest",
        "sbs",
        "cfd",
        "quest",
        "monster",
        "gq",
        "cf",
        "tk",
        "ml",
    }
)
# Links straight to a file a mail filter would not let through.
ARCHIVE = re.compile(r"\.(zip|rar|7z|exe|scr|iso|apk|msi)(\?|$)", re.IGNORECASE)
# Cyrillic letters that look like Latin ones: what a mixed word meant.
HOMOGLYPHS = str.maketrans("аеорсухіјѕԁԛԝАВЕКМНОРСТХІЈЅ", "aeopcyxijsdqwABEKMHOPCTXIJS")

# The whole layer adds at most this: enough to quarantine on its own,
# never to drop (drop_at is 15 by default). Content alone should not
# lose a message, and a misjudged customer waits in quarantine.
LAYER_MAX = 9.0

W_BBCODE = 4.0
W_HTML_LINK = 1.5
W_LINK_IN_NAME = 4.0
W_LINK_IN_SUBJECT = 2.5
W_LINK_DENSITY = 1.5
W_SHORTENER = 3.5
W_MOSTLY_LINK = 1.5
W_ABUSED_TLD = 2.0
W_ARCHIVE = 1.5
W_SCRIPT_LINK = 1.5
W_MIXED_SCRIPT = 3.0
W_ALL_CAPS = 1.0
W_PUNCT_RUN = 0.5

WORDS_PER_LINK = 10
MOSTLY_LINK_WORDS = 5
SCRIPT_CHARS_PER_LINK = 30


def check(ctx: SpamContext, settings: SpamSettings, services: Services) -> list[Reason]:
    """Score the name, subject and message for content spam shows."""
    return signals(ctx.name, ctx.subject, ctx.message)


def signals(name: str, subject: str, message: str) -> list[Reason]:
    """Return the reasons for one post's name, subject and message."""
    reasons: list[Reason] = []
    links = URL.findall(message)
    reasons += _markup(name, subject, message)
    reasons += _links(message, links)
    mixed = _mixed_script_words(" ".join((name, subject, message)))
    if mixed:
        reasons.append(
            _reason(
                "mixed_script_word",
                f"{mixed} word{'s' if mixed > 1 else ''} mixing Latin and Cyrillic",
                "",
                W_MIXED_SCRIPT,
            )
        )
    reasons += _phrases(" ".join((name, subject, message)), bool(links))
    reasons += _shouting(subject, message)
    return _capped(reasons)


def _capped(reasons: list[Reason]) -> list[Reason]:
    """Keep the layer's total at LAYER_MAX, taking the excess off the largest."""
    excess = sum(r.score for r in reasons) - LAYER_MAX
    if excess <= 0:
        return reasons
    out = list(reasons)
    for i in sorted(range(len(out)), key=lambda i: -out[i].score):
        if excess <= 0:
            break
        cut = min(excess, out[i].score)
        excess -= cut
        out[i] = replace(
            out[i],
            score=round(out[i].score - cut, 3),
            threshold=f"layer total at most {LAYER_MAX:g}",
        )
    return out


def _markup(name: str, subject: str, message: str) -> list[Reason]:
    found = []
    bbcode = len(BBCODE.findall(message)) + len(BBCODE.findall(subject))
    if bbcode:
        found.append(_reason("bbcode_link", f"{bbcode} [url] tags", "", W_BBCODE))
    html = len(HTML_LINK.findall(message))
    if html:
        found.append(_reason("html_link", f"{html} <a href> tags", "", W_HTML_LINK))
    if URL.search(name):
        found.append(_reason("link_in_name", "a link in the name", "", W_LINK_IN_NAME))
    if URL.search(subject):
        found.append(
            _reason("link_in_subject", "a link in the subject", "", W_LINK_IN_SUBJECT)
        )
    return found


def _links(message: str, links: list[str]) -> list[Reason]:
    if not links:
        return []
    found = []
    rest = URL.sub(" ", TAG.sub(" ", BBCODE.sub(" ", message)))
    words = _word_count(rest)
    mostly = words < MOSTLY_LINK_WORDS
    # Little text around several links is counted once: as mostly a link.
    if len(links) >= 2 and not mostly and words < WORDS_PER_LINK * len(links):
        found.append(
            _reason(
                "link_density",
                f"{len(links)} links in {words} words",
                f"at least {WORDS_PER_LINK} words per link",
                W_LINK_DENSITY,
            )
        )
    hosts = {_host(link) for link in links}
    short = sorted(h for h in hosts if h in SHORTENERS)
    if short:
        found.append(
            _reason("shortener", "link shortener: " + ", ".join(short), "", W_SHORTENER)
        )
    abused = sorted({h.rpartition(".")[2] for h in hosts} & ABUSED_TLDS)
    if abused:
        found.append(
            _reason(
                "abused_tld",
                "links under ." + ", .".join(abused),
                "",
                W_ABUSED_TLD,
            )
        )
    files = sorted({m.group(1).lower() for u in links if (m := ARCHIVE.search(u))})
    if files:
        found.append(
            _reason("file_link", "a link to a ." + ", .".join(files), "", W_ARCHIVE)
        )
    if mostly:
        found.append(
            _reason(
                "mostly_link",
                f"a link and {words} other word{'s' if words != 1 else ''}",
                f"at least {MOSTLY_LINK_WORDS} words",
                W_MOSTLY_LINK,
            )
        )
    script = _script(rest)
    text_length = len("".join(rest.split()))
    # One link with a few words of Cyrillic or Chinese is a customer's
    # question as often as spam (mostly_link has it); several are not.
    if (
        script
        and (len(links) >= 2 or not mostly)
        and text_length < SCRIPT_CHARS_PER_LINK * len(links)
    ):
        found.append(
            _reason(
                "script_link",
                f"{len(links)} link{'s' if len(links) > 1 else ''} in {script} text",
                f"at least {SCRIPT_CHARS_PER_LINK} characters per link",
                W_SCRIPT_LINK,
            )
        )
    return found


def _phrases(text: str, has_link: bool) -> list[Reason]:
    # Words that mix scripts are also read as the Latin they imitate
    # ("vіagra"); both readings are searched.
    plain = " ".join(text.split())
    latin = WORD.sub(
        lambda m: m[0].translate(HOMOGLYPHS) if _mixes_scripts(m[0]) else m[0], plain
    )
    matched = [
        (label, w)
        for label, rx, w in _COMPILED
        if rx.search(plain) or (latin != plain and rx.search(latin))
    ]
    if not matched:
        return []
    strong = [w for _, w in matched if w >= PHRASES_STRONG]
    soft = sum(w for _, w in matched if w < PHRASES_STRONG)
    score = sum(strong) + (soft if strong else min(soft, PHRASES_SOFT_ALONE))
    count = len(matched)
    value = (
        f"{count} pitch phrase{'s' if count > 1 else ''}: "
        f"{', '.join(label for label, _ in matched)}"
    )
    if len(strong) >= PHRASES_MANY:
        score += PHRASES_MANY_BONUS
    # Only a pitch (more than one phrase a customer might use) gains by
    # its link: "Great website! Do these boots come in wide fit? <link>"
    # must not.
    if has_link and score > PHRASES_STRONG:
        score += PHRASES_LINK_BONUS
        value += ", with a link"
    return [
        _reason(
            "pitch_phrases",
            value,
            f"max {PHRASES_MAX:g}",
            min(PHRASES_MAX, score),
        )
    ]


def _shouting(subject: str, message: str) -> list[Reason]:
    found = []
    letters = [ch for ch in message if ch.isalpha() and ch.lower() != ch.upper()]
    if len(letters) >= 20:
        upper = sum(1 for ch in letters if ch.isupper())
        if upper >= 0.7 * len(letters):
            found.append(
                _reason(
                    "all_caps",
                    f"{round(100 * upper / len(letters))}% capitals",
                    "under 70%",
                    W_ALL_CAPS,
                )
            )
    runs = len(PUNCT_RUN.findall(subject + " " + message))
    if runs:
        found.append(
            _reason(
                "repeated_punct",
                f"{runs} run{'s' if runs > 1 else ''} like !!!",
                "",
                W_PUNCT_RUN,
            )
        )
    return found


def _reason(rule: str, value: str, threshold: str, score: float) -> Reason:
    return Reason(layer=LAYER, rule=rule, value=value, threshold=threshold, score=score)


def _host(link: str) -> str:
    match = HOST.match(link)
    host = match.group(1).lower().rstrip(".") if match else ""
    return host.removeprefix("www.")


def _script(text: str) -> str | None:
    """Return "Cyrillic" or "CJK" when the text is mostly in that script."""
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
    # A CJK character carries about a word, a Latin letter a fifth of one.
    if cjk >= 2 and cjk * 5 > other:
        return "CJK"
    return None


def _word_count(text: str) -> int:
    """Count words; unspaced CJK text counts a word per two characters."""
    count = 0
    for token in WORD.findall(text):
        cjk = sum(1 for ch in token if _is_cjk(ch))
        count += max(1, (cjk + 1) // 2 + len(token) - cjk) if cjk else 1
    return count


def _is_cjk(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith(
        ("CJK", "HIRAGANA", "KATAKANA", "HANGUL")
    )


def _mixes_scripts(word: str) -> bool:
    if len(word) < 3 or word.isascii():
        return False
    latin = cyrillic = False
    for ch in word:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            latin = latin or name.startswith("LATIN")
            cyrillic = cyrillic or name.startswith("CYRILLIC")
    return latin and cyrillic


def _mixed_script_words(text: str) -> int:
    """Count words that mix Latin and Cyrillic letters (homoglyph disguises)."""
    return sum(1 for word in WORD.findall(text) if _mixes_scripts(word))
