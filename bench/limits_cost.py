"""What checking the limits costs a post, with an empty window and a full one.

    python bench/limits_cost.py [--rows 100000] [--posts 300] [--postgres URL]

Stores posts through the ledger (the accept path's last step, no web stack)
with the limits on and set high enough never to refuse (rate 1,000,000 a
minute, quota and backlog 10,000,000), first with no rows in the window, then
with --rows rows from the same client to the same recipient in the last
minute, all still pending. Beside each, what one count over that window (the
check as it was before the limits became counters) takes on the same
database. Prints a table; the figure that matters is the ratio, taken side
by side in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pgschema import throwaway_schema  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app.clock import SystemClock  # noqa: E402
from app.ledger import Ledger, Limits, make_engine, migrate  # noqa: E402
from app.message import Envelope  # noqa: E402

HIGH = Limits(rate=((1_000_000, 60),), recipient_daily=10_000_000, backlog=10_000_000)
IP = "192.0.2.1"
# The old check's shape: count the window, reading at most `limit` rows.
COUNT = text(
    "SELECT count(*) FROM (SELECT 1 FROM submissions WHERE form_id = 'default' "
    "AND client_ip = :ip AND created_at > :since LIMIT 1000000) AS w"
)


def envelope(tag: str) -> Envelope:
    return Envelope(
        mail_from="bench@formpost.test",
        recipients=("sales@example.com",),
        data=f"Subject: {tag}\r\n\r\nbody\r\n".encode(),
        message_id=f"<{tag}@formpost.test>",
    )


def post_costs(ledger: Ledger, posts: int, tag: str) -> tuple[float, float]:
    """Median wall and CPU microseconds of one limited post."""
    walls, cpus = [], []
    for n in range(posts):
        wall, cpu = time.perf_counter(), time.process_time()
        ledger.enqueue(
            envelope(f"{tag}-{n}"),
            form_id="default",
            alias="sales",
            subject="s",
            client_ip=IP,
            limits=HIGH,
        )
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1e6, statistics.median(cpus) * 1e6


def count_cost(ledger: Ledger, repeats: int = 20) -> float:
    """Median microseconds of one count over the last minute's rows."""
    times = []
    with ledger.engine.connect() as conn:
        for _ in range(repeats):
            start = time.perf_counter()
            conn.execute(COUNT, {"ip": IP, "since": time.time() - 60}).scalar()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def fill(ledger: Ledger, rows: int) -> None:
    """Store `rows` pending posts from IP to 'sales' in the last minute, at once."""
    now = time.time()
    values = [
        {
            "receipt": f"F{n:08d}",
            "message_id": f"<fill{n}@formpost.test>",
            "at": now - 30 + n * 1e-5,
            "raw": b"x",
            "ip": IP,
        }
        for n in range(rows)
    ]
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO submissions (receipt, form_id, recipient_alias, "
                "mail_from, recipients, subject, message_id, raw, state, attempts, "
                "created_at, queued_at, next_attempt_at, client_ip) VALUES (:receipt,"
                " 'default', 'sales', 'b@x.test', 'sales@example.com', 's', "
                ":message_id, :raw, 'pending', 0, :at, :at, :at, :ip)"
            ),
            values,
        )
        # Kept by the ledger as rows change state; these went around it.
        conn.execute(text("UPDATE ledger_counters SET value = value + :n"), {"n": rows})


def measure(url: str, rows: int, posts: int) -> list[tuple[str, float, float, float]]:
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine, SystemClock())
    post_costs(ledger, 20, "warm")  # buckets made, statements compiled
    empty = post_costs(ledger, posts, "empty")
    empty_count = count_cost(ledger)
    fill(ledger, rows)
    full = post_costs(ledger, posts, "full")
    full_count = count_cost(ledger)
    engine.dispose()
    return [
        ("0 rows in the window", *empty, empty_count),
        (f"{rows:,} rows in the window", *full, full_count),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--postgres", help="also on PostgreSQL (a throw-away schema)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="formpost-limits-") as tmp:
        results["SQLite"] = measure(f"sqlite:///{tmp}/ledger.db", args.rows, args.posts)
    if args.postgres:
        results["PostgreSQL"] = _on_postgres(args.postgres, args.rows, args.posts)
    print(
        f"\nOne post stored with the limits on (median of {args.posts}), and one "
        "count over the window for comparison\n"
    )
    print(f"{'':<34}{'post µs':>10}{'CPU µs':>10}{'a count µs':>12}")
    for name, lines in results.items():
        print(name)
        for label, wall, cpu, count in lines:
            print(f"  {label:<32}{wall:>10.0f}{cpu:>10.0f}{count:>12.0f}")
        (_, wall0, cpu0, _), (_, wall1, cpu1, _) = lines
        print(f"  {'full / empty':<32}{wall1 / wall0:>10.2f}{cpu1 / cpu0:>10.2f}")
    return 0


def _on_postgres(url: str, rows: int, posts: int):
    with throwaway_schema(url) as schema_url:
        return measure(schema_url, rows, posts)


if __name__ == "__main__":
    sys.exit(main())
