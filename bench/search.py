"""How long the owner's console searches take over 100,000 submissions.

    python bench/search.py [--rows 100000] [--repeat 30] [--postgres URL]

Fills a throw-away database (a SQLite file; with --postgres, also a schema
of that PostgreSQL database) with --rows realistic submissions: composed
messages, names, addresses, subjects and messages of generated text over a
vocabulary with a few common and many rare words, five forms, mostly sent,
some failed and pending. They are bulk-inserted with the ledger's own search
index statements (index.py). Then it times Ledger.search for the console's
typical questions, each --repeat times, and prints the median and the 95th
percentile beside a plain newest-50 listing. The target: each under 200 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.headerregistry import Address
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pgschema import throwaway_schema  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app.clock import SystemClock  # noqa: E402
from app.compose import Submission, compose  # noqa: E402
from app.ledger import Content, Ledger, make_engine, migrate  # noqa: E402
from app.ledger import index as search_index  # noqa: E402
from app.ledger.content import search_columns  # noqa: E402

MAIL_FROM = Address("Formpost", addr_spec="forms@formpost.test")
RECIPIENT = Address("Sales", addr_spec="sales@example.com")
FIRST = "Ada Bob Carla Dmitri Elena Farid Grace Hiro Ines Jonas Kemal Lena".split()
LAST = "Lovelace Stone Ortiz Ivanov Rossi Haddad Hopper Tanaka Silva Berg".split()
FORMS = ["hosted", "contact", "quote", "support", "careers"]
STATES = ["sent"] * 18 + ["failed", "pending"]
COMMON = "please"  # in about half of the messages
RARE = "zephyrine"  # in ten of them
TARGET_MS = 200.0


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return sorted(words)


def make_rows(count: int, seed: int = 7) -> tuple[list[dict], str]:
    """Return `count` rows for the submissions table, and one address in them."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf-like
    rare_rows = set(rng.sample(range(count), min(10, count)))
    start = time.time() - count * 30
    rows = []
    for n in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = f"{first} {last}"
        email = f"{first.lower()}.{last.lower()}{n % 997}@example.org"
        text_words = rng.choices(words, weights, k=rng.randint(15, 60))
        if rng.random() < 0.5:
            text_words.insert(rng.randrange(len(text_words)), COMMON)
        if n in rare_rows:
            text_words.append(RARE)
        message = " ".join(text_words).capitalize() + "."
        subject = " ".join(rng.choices(words, weights, k=4)).capitalize()
        form = rng.choice(FORMS)
        if form == "hosted":
            fields = (("name", name), ("email", email), ("subject", subject))
            fields += (("message", message),)
        else:
            fields = (
                ("name", name),
                ("email", email),
                ("company", f"{rng.choice(words).capitalize()} Ltd"),
                ("phone", f"+1 555 {n % 10000:04d}"),
                ("message", message),
            )
        rows.append(
            {
                "id": n + 1,
                "form": form,
                "state": rng.choice(STATES),
                "at": start + n * 30,
                "subject": subject,
                "content": Content(fields, name, email, message),
            }
        )
    return rows, rows[count // 2]["content"].email


INSERT = text(
    "INSERT INTO submissions (id, receipt, form_id, recipient_alias, mail_from, "
    "recipients, subject, message_id, raw, state, attempts, created_at, queued_at, "
    "next_attempt_at, sent_at, name, email, message, fields) VALUES (:id, :receipt, "
    ":form, 'sales', 'forms@formpost.test', 'sales@example.com', :subject, "
    ":message_id, :raw, :state, 1, :at, :at, :at, :at, :name, :email, :message, "
    ":fields)"
)


def fill(ledger: Ledger, rows: list[dict]) -> None:
    """Bulk-insert the rows and their search entries, as the ledger writes them."""
    engine = ledger.engine
    dialect = engine.dialect.name
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.exec_driver_sql("DROP INDEX ix_submissions_search")
        for start in range(0, len(rows), 2000):
            batch, entries = [], []
            for row in rows[start : start + 2000]:
                content: Content = row["content"]
                columns = content.columns()
                raw = compose(
                    Submission(
                        recipient=RECIPIENT,
                        subject=row["subject"],
                        message=content.message,
                        name=content.name,
                        email=content.email,
                        fields=content.fields if row["form"] != "hosted" else (),
                    ),
                    mail_from=MAIL_FROM,
                    message_id=f"<{row['id']}@formpost.test>",
                    date=datetime.fromtimestamp(row["at"], UTC),
                ).data
                batch.append(
                    {
                        **row,
                        **columns,
                        "receipt": f"B{row['id']:07d}",
                        "message_id": f"<{row['id']}@formpost.test>",
                        "raw": raw,
                    }
                )
                searched = search_columns(
                    row["subject"],
                    content.name,
                    content.email,
                    content.message,
                    content.fields,
                )
                entries.append(
                    {
                        "id": row["id"],
                        **searched,
                        "search_text": search_index.search_text(searched),
                    }
                )
            conn.execute(INSERT, batch)
            conn.execute(search_index.index_row(dialect), entries)
        for statement in search_index.finish_statements(dialect):
            conn.exec_driver_sql(statement)
    if dialect == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("VACUUM ANALYZE submissions")


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Median and 95th percentile milliseconds of `call`, and its last answer."""
    call()  # statements compiled, pages cached: a console in use
    times = []
    answer = None
    for _ in range(repeat):
        start = time.perf_counter()
        answer = call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95, answer


def measure(url: str, count: int, repeat: int) -> list[tuple[str, float, float, int]]:
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine, SystemClock())
    rows, address = make_rows(count)
    fill(ledger, rows)
    first_common = ledger.search(COMMON)
    recent = rows[-1]["at"] - 7 * 86400
    search = ledger.search
    cases: list[tuple[str, Callable[[], object]]] = [
        ("newest 50, no query (listing)", lambda: search()),
        (f"rare word ({RARE})", lambda: search(RARE)),
        (f"common word ({COMMON})", lambda: search(COMMON)),
        ("an email address", lambda: search(address)),
        ("two words, the last a prefix", lambda: search("please Ada lov")),
        ("filter only: form + failed", lambda: search(form="quote", state="failed")),
        ("filter only: last 7 days", lambda: search(since=recent)),
        (
            "common word + form + state",
            lambda: search(COMMON, form="support", state="sent"),
        ),
        (
            "page 2 of the common word",
            lambda: search(COMMON, cursor=first_common.next),
        ),
        ("no match", lambda: search("qqqqqq")),
    ]
    results = []
    for label, call in cases:
        median, p95, page = timed(call, repeat)
        results.append((label, median, p95, len(page.rows)))
    engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", help="also on PostgreSQL (a throw-away schema)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="formpost-search-") as tmp:
        results["SQLite"] = measure(
            f"sqlite:///{tmp}/ledger.db", args.rows, args.repeat
        )
    if args.postgres:
        results["PostgreSQL"] = _on_postgres(args.postgres, args.rows, args.repeat)
    print(
        f"\nLedger.search over {args.rows:,} submissions, {args.repeat} runs each "
        f"(target: under {TARGET_MS:.0f} ms)\n"
    )
    print(f"{'':<40}{'median ms':>10}{'p95 ms':>10}{'rows':>6}")
    for name, lines in results.items():
        print(name)
        for label, median, p95, found in lines:
            mark = "" if p95 < TARGET_MS else "  over target"
            print(f"  {label:<38}{median:>10.1f}{p95:>10.1f}{found:>6}{mark}")
    return 0


def _on_postgres(url: str, rows: int, repeat: int):
    with throwaway_schema(url) as schema_url:
        return measure(schema_url, rows, repeat)


if __name__ == "__main__":
    sys.exit(main())
