"""How fast the console exports, and how much memory a long export takes.

    python bench/export.py [--rows 100000] [--database-url URL]

Builds the real app (create_app) on a throw-away SQLite file (or the given
database, which must be empty), bulk-inserts --rows submissions with ~1 kB
messages and a few extra fields, logs an owner in through the test client
and streams /admin/export.csv and /admin/export.jsonl chunk by chunk. Prints
rows per second and the peak growth of this process's RSS (VmRSS, sampled
every 1,000 chunks) over its value before the request. The rows are
inserted by a child process, so their memory is not in the figure.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from app import create_app  # noqa: E402
from app.clock import SystemClock  # noqa: E402
from app.ledger import Ledger, make_engine, migrate, submissions  # noqa: E402
from app.services import EXTENSION  # noqa: E402

EMAIL, PASSWORD = "bench@example.com", "correct horse battery"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def fill(ledger, rows: int) -> None:
    """Insert `rows` submissions, 2,000 to a statement."""
    now = time.time() - rows
    message = ("Hello, I would like a quote for 12 chairs. 你好 🎉 " * 20)[:1000]
    for start in range(0, rows, 2000):
        batch = [
            {
                "receipt": f"B{n:08d}", "form_id": "default",
                "recipient_alias": "sales",
                "mail_from": "forms@formpost.test", "recipients": "sales@example.com",
                "subject": f"Quote request {n}", "message_id": f"<{n}@bench.test>",
                "raw": b"", "state": "sent", "attempts": 1, "created_at": now + n,
                "queued_at": now, "next_attempt_at": now, "name": f"Visitor {n}",
                "email": f"v{n}@example.net", "message": message,
                "fields": json.dumps(
                    [["message", message], ["phone", "+44 20 7946 0000"],
                     ["company", f"=Company {n}"]], ensure_ascii=False,
                ),
            }
            for n in range(start, min(rows, start + 2000))
        ]  # fmt: skip
        with ledger.engine.begin() as conn:
            conn.execute(insert(submissions), batch)


def measure(client, path: str, rows: int) -> dict[str, float]:
    before = peak = rss_kib()
    started = time.perf_counter()
    response = client.get(path, buffered=False)
    size = lines = 0
    for n, chunk in enumerate(response.iter_encoded()):
        size += len(chunk)
        lines += chunk.count(b"\n")
        if n % 1000 == 0:
            peak = max(peak, rss_kib())
    response.close()
    seconds = time.perf_counter() - started
    peak = max(peak, rss_kib())
    return {
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "mb": round(size / 1e6, 1),
        "lines": lines,
        "peak_rss_growth_mib": round((peak - before) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url")
    parser.add_argument("--fill-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill_only:
        engine = make_engine(args.database_url)
        migrate(engine)
        fill(Ledger(engine, SystemClock()), args.rows)
        engine.dispose()
        return
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/bench.db"
        app = create_app(
            {
                "INSTANCE_PATH": folder,
                "DATABASE_URL": url,
                "SECRET_KEY": "bench-secret-key-0123456789",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": "9",
                "MAIL_FROM": "Contact form <forms@formpost.test>",
                "MAIL_RECIPIENTS": "sales=sales@example.com",
            }
        )
        services = app.extensions[EXTENSION]
        services.owners.add(EMAIL, PASSWORD)
        subprocess.run(
            [sys.executable, __file__, "--fill-only", "--database-url", url,
             "--rows", str(args.rows)],
            check=True,
        )  # fmt: skip
        client = app.test_client()
        page = client.get("/admin/login").get_data(as_text=True)
        token = CSRF.search(page).group(1)
        data = {"csrf_token": token, "email": EMAIL, "password": PASSWORD}
        assert client.post("/admin/login", data=data).status_code == 302
        print(f"rss before exports: {rss_kib() / 1024:.1f} MiB")
        for kind in ("csv", "jsonl"):
            print(kind, json.dumps(measure(client, f"/admin/export.{kind}", args.rows)))
        services.ledger.engine.dispose()


if __name__ == "__main__":
    main()
