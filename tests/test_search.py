"""Search over stored submissions: words, filters and keyset pages, both databases."""

from __future__ import annotations

import pytest

from app.ledger import BadCursor, Filters, Ledger

from .helpers import PG_URL, mark_failed, mark_sent, postgres_or_skip
from .storekit import endpoint, hosted, store
from .test_bench_smoke import bench


def found(ledger: Ledger, query: str | None = None, **filters) -> list[str]:
    return [r.receipt for r in ledger.search(query, **filters, limit=500).rows]


@pytest.fixture
def sample(ledger) -> dict[str, str]:
    """Three submissions that share no word but 'shared'."""
    return {
        "hosted": store(
            ledger,
            hosted(
                name="Jane Doe",
                email="jane.doe@example.com",
                subject="Invoice overdue",
                message="Please resend the shared invoice quickly",
            ),
        ),
        "endpoint": store(
            ledger,
            endpoint(
                (
                    ("name", "Bob Stone"),
                    ("email", "bob@example.org"),
                    ("company", "Acme Widgets"),
                    ("phone", "5550100"),
                    ("message", "A shared question about gears"),
                ),
                form_id="site",
                subject="Lead from site",
            ),
        ),
        "other": store(
            ledger,
            hosted(
                name="Ćiril Ødegård",
                email="ciril@example.net",
                subject="Greetings",
                message="Nothing in common, shared",
            ),
        ),
    }


@pytest.mark.parametrize(
    ("query", "which"),
    [
        pytest.param("overdue", "hosted", id="subject"),
        pytest.param("Jane", "hosted", id="name"),
        pytest.param("jane.doe@example.com", "hosted", id="email"),
        pytest.param("bob@example.org", "endpoint", id="email-endpoint"),
        pytest.param("resend", "hosted", id="message"),
        pytest.param("gears", "endpoint", id="message-endpoint"),
        pytest.param("Acme", "endpoint", id="other-field"),
        pytest.param("5550100", "endpoint", id="other-field-digits"),
        pytest.param("Ødegård", "other", id="non-ascii"),
        pytest.param("WIDGETS", "endpoint", id="any-case"),
        pytest.param("invoice jane", "hosted", id="words-across-columns"),
        pytest.param("quick", "hosted", id="prefix-of-last-word"),
        pytest.param("ciril", "other", id="address-by-its-start"),
        pytest.param('"Acme', "endpoint", id="stray-quote"),
        pytest.param("(acme)", "endpoint", id="brackets"),
        pytest.param("acme*", "endpoint", id="star"),
    ],
)
def test_each_column_is_searched(ledger, sample, query, which):
    assert found(ledger, query) == [sample[which]]


def test_every_word_must_match(ledger, sample):
    assert found(ledger, "shared") == [
        sample["other"],
        sample["endpoint"],
        sample["hosted"],
    ]
    assert found(ledger, "shared gears") == [sample["endpoint"]]
    assert found(ledger, "gears overdue") == []
    assert found(ledger, "nowhere") == []
    # Only the last word is a prefix.
    assert found(ledger, "quick invoice") == []


HOSTILE = [
    '"',
    "*",
    "AND",
    "NEAR(",
    "'",
    "\\",
    "OR",
    "NOT",
    "-",
    "^",
    "(",
    ")",
    "{subject}: x",
    "subject:invoice",
    "a OR b",
    "NEAR(a b, 2)",
    "x AND NOT y",
    "!jane & | <->",
    "'; DROP TABLE submissions; --",
    "\x00",
    "jane\x00doe",
    "jane:*",
    '"jane" \'',
    "\u2028",
    "   ",
    "é" * 2000,
]


@pytest.mark.parametrize("query", HOSTILE)
def test_a_hostile_query_is_only_words(ledger, sample, query):
    page = ledger.search(query)
    # Whatever it says, it is searched for as words: it finds what has them.
    for row in page.rows:
        assert row.receipt in sample.values()
    assert len(found(ledger)) == 3  # and the table is still there


def test_operators_are_searched_as_words(ledger):
    receipt = store(ledger, hosted(message="to be or not to be, near and far"))
    store(ledger, hosted(message="something else entirely"))
    for query in ("or", "NOT", "near", "AND far"):
        assert found(ledger, query) == [receipt], query


def test_filters_combine_with_each_other_and_the_query(ledger, clock):
    start = clock.now()
    first = store(ledger, hosted(message="alpha"))
    clock.advance(100)
    second = store(ledger, endpoint((("message", "alpha beta"),), form_id="site"))
    clock.advance(100)
    third = store(ledger, hosted(message="beta"))
    rows = ledger.claim(10, 60)
    mark_sent(ledger, rows[0])  # first
    mark_failed(ledger, rows[2], "permanent", "550 no")  # third
    assert found(ledger, form="hosted") == [third, first]
    assert found(ledger, form="site") == [second]
    assert found(ledger, state="sent") == [first]
    assert found(ledger, state="failed") == [third]
    assert found(ledger, state="sending") == [second]
    assert found(ledger, since=start + 50) == [third, second]
    assert found(ledger, until=start + 50) == [first]
    assert found(ledger, since=start + 50, until=start + 150) == [second]
    assert found(ledger, "alpha", form="hosted") == [first]
    assert found(ledger, "beta", state="failed", since=start + 150) == [third]
    assert found(ledger, "beta", state="sent") == []
    assert found(ledger, form="nonexistent") == []


def test_pages_have_no_duplicates_or_gaps_while_rows_arrive(ledger):
    before = [store(ledger, hosted(n, message=f"paged {n}")) for n in range(23)]
    seen: list[str] = []
    cursor = None
    arrived = []
    for _ in range(10):
        page = ledger.search("paged", cursor=cursor, limit=5)
        seen += [r.receipt for r in page.rows]
        # New posts arrive between pages: they are newer than any page shown.
        arrived.append(store(ledger, hosted(message="paged late")))
        cursor = page.next
        if cursor is None:
            break
    assert seen == list(reversed(before))
    assert len(set(seen)) == len(seen)
    # The newest page, read again, starts with what arrived meanwhile.
    assert found(ledger, "paged")[: len(arrived)] == list(reversed(arrived))


def test_a_listing_without_query_pages_newest_first(ledger):
    receipts = [store(ledger, hosted(n)) for n in range(7)]
    first = ledger.search(limit=3)
    assert [r.receipt for r in first.rows] == receipts[::-1][:3]
    second = ledger.search(cursor=first.next, limit=3)
    assert [r.receipt for r in second.rows] == receipts[::-1][3:6]
    last = ledger.search(cursor=second.next, limit=3)
    assert [r.receipt for r in last.rows] == receipts[:1]
    assert last.next is None
    exact = ledger.search(limit=7)
    assert exact.next is None and len(exact.rows) == 7


@pytest.mark.parametrize("cursor", ["", "0", "-1", "abc", "1 OR 1=1", "9" * 40, "01"])
def test_a_cursor_not_handed_out_is_refused(ledger, cursor):
    with pytest.raises(BadCursor):
        ledger.search(cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 501])
def test_the_page_size_is_bounded(ledger, limit):
    with pytest.raises(ValueError):
        ledger.search(limit=limit)


def test_iterate_streams_every_match_in_batches(ledger):
    receipts = [
        store(ledger, hosted(n, message=f"stream {'odd' if n % 2 else 'even'}"))
        for n in range(25)
    ]
    everything = list(ledger.iterate(Filters(), batch=4))
    assert [r.receipt for r in everything] == receipts[::-1]
    odd = [r.receipt for r in ledger.iterate(Filters(query="stream odd"), batch=3)]
    assert odd == receipts[1::2][::-1]
    assert list(ledger.iterate(Filters(query='"'))) == []
    assert everything[0].fields is not None  # the export reads fields


@pytest.mark.slow
def test_the_search_benchmark_runs_on_both_databases():
    """A small run of bench/search.py, so it cannot rot (figures not judged)."""
    args = ["--rows", "1500", "--repeat", "2"]
    try:
        postgres_or_skip()
    except pytest.skip.Exception:
        databases = ["SQLite"]
    else:
        args += ["--postgres", PG_URL]
        databases = ["SQLite", "PostgreSQL"]
    out = bench("search.py", *args, timeout=300)
    for database in databases:
        assert f"\n{database}\n" in out, out
    lines = [
        line for line in out.splitlines() if line.startswith("  ") and "ms" not in line
    ]
    assert len(lines) == 10 * len(databases), out
    rare = [line for line in out.splitlines() if "rare word" in line]
    assert all(line.split()[-1] == "10" for line in rare), out


# -- Chinese, Japanese, Korean: no spaces between words ---------------------------


@pytest.fixture
def cjk(ledger) -> dict[str, str]:
    """Submissions in Chinese, Japanese and Korean, and one in English."""
    return {
        "zh": store(
            ledger,
            hosted(
                name="张伟",
                email="zhang.wei@example.cn",
                subject="关于产品价格的咨询",
                message="你好，我想了解一下企业版的报价和发票流程。",
            ),
        ),
        "zh-field": store(
            ledger,
            endpoint(
                (
                    ("姓名", "李娜"),
                    ("公司", "北京星河科技有限公司"),
                    ("message", "请尽快回复100%"),
                ),
                form_id="site",
                subject="合作",
            ),
        ),
        "ja": store(ledger, hosted(name="山田太郎", message="見積もりをお願いします")),
        "ko": store(ledger, hosted(name="김민수", message="견적을 부탁드립니다")),
        "en": store(ledger, hosted(name="Jane Doe", message="A price question")),
    }


@pytest.mark.parametrize(
    ("query", "which"),
    [
        pytest.param("咨询", ["zh"], id="inside-the-subject"),
        pytest.param("价格", ["zh"], id="middle-of-a-run"),
        pytest.param("张伟", ["zh"], id="whole-name"),
        pytest.param("伟", ["zh"], id="end-of-name"),
        pytest.param("报价", ["zh"], id="inside-the-message"),
        pytest.param("发票 咨询", ["zh"], id="two-words"),
        pytest.param("报价 zhang", ["zh"], id="with-a-latin-word"),
        pytest.param("报价 jane", [], id="with-a-latin-word-elsewhere"),
        pytest.param("星河科技", ["zh-field"], id="other-field"),
        pytest.param("李娜", ["zh-field"], id="name-in-a-chinese-field"),
        pytest.param("见积", [], id="simplified-is-not-japanese"),
        pytest.param("見積", ["ja"], id="japanese"),
        pytest.param("견적", ["ko"], id="korean"),
        pytest.param("回复100%", ["zh-field"], id="percent-is-not-a-wildcard"),
        pytest.param("回复1%", [], id="percent-matches-only-itself"),
        pytest.param("请尽快回复_", [], id="underscore-is-not-a-wildcard"),
        pytest.param("不存在", [], id="absent"),
    ],
)
def test_cjk_words_are_found_inside_runs(ledger, cjk, query, which):
    assert found(ledger, query) == [cjk[name] for name in which]


def test_cjk_search_keeps_the_filters(ledger, cjk):
    assert found(ledger, "合作", form="site") == [cjk["zh-field"]]
    assert found(ledger, "合作", form="hosted") == []
    assert found(ledger, "咨询", state="sent") == []


def test_an_erased_submission_is_not_found_by_cjk_words(ledger, cjk):
    ledger.erase([cjk["zh"]])
    assert found(ledger, "咨询") == []
    assert found(ledger, "张伟") == []
