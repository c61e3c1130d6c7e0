"""Export of the current filter as CSV and JSON lines, parsed back.

Through the real app on SQLite and PostgreSQL: the bytes a browser would
save are read back with the csv and json modules. One test exports 20,000
rows and watches this process's resident memory while it reads the stream.
"""

from __future__ import annotations

import csv
import io
import json
import re
from types import SimpleNamespace

import pytest
from sqlalchemy import insert

from app.export import csv_lines, jsonl_lines, neutralise
from app.ledger import submissions

from .consolekit import EMAIL, PASSWORD, log_in
from .helpers import fast_hashing, ledger_of, services_of

SITE = "https://www.example.com"
HEADER = ["receipt", "form", "state", "created_at", "subject", "name", "email",
          "message", "fields"]  # fmt: skip


@pytest.fixture
def console(make_app, relay, database_url):
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE, DATABASE_URL=database_url))
    fast_hashing(app)
    services_of(app).owners.add(EMAIL, PASSWORD)
    return app


@pytest.fixture
def owner(console):
    client = console.test_client()
    log_in(client)
    return client


def post(app, **fields) -> str:
    data = {"email": "ada@example.net", "message": "Hi", **fields}
    response = app.test_client().post(
        "/f/default", data=data, headers={"Origin": SITE, "Accept": "application/json"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["id"]


def read_csv(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf")  # the BOM spreadsheets look for
    text = body.decode("utf-8")[1:]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == HEADER
    return [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]


def test_the_csv_export_reads_back_with_cjk_emoji_and_formula_cells(console, owner):
    first = post(console, subject="注文について 📦", name="山田 太郎", message="=1+2")
    second = post(
        console,
        subject="-2+3",
        name="@SUM(A1)",
        email="bob@example.org",
        message='line one\nline "two",\r\n\tindented',
        order="+44 20",
        note="plain",
    )
    response = owner.get("/admin/export.csv")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    disposition = response.headers["Content-Disposition"]
    assert re.fullmatch(
        r'attachment; filename="formpost-\d{4}-\d\d-\d\d\.csv"', disposition
    )
    newest, oldest = read_csv(response.get_data())
    assert oldest["receipt"] == first and newest["receipt"] == second
    assert oldest["subject"] == "注文について 📦" and oldest["name"] == "山田 太郎"
    assert oldest["message"] == "'=1+2"  # neutralised
    assert newest["subject"] == "'-2+3" and newest["name"] == "'@SUM(A1)"
    assert newest["message"] == 'line one\nline "two",\r\n\tindented'
    assert newest["email"] == "bob@example.org" and newest["state"] == "pending"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", newest["created_at"])
    assert json.loads(newest["fields"]) == [["order", "+44 20"], ["note", "plain"]]


def test_the_jsonl_export_keeps_values_untouched(console, owner):
    receipt = post(console, subject="=cmd|' /C calc'!A0", name="Zoë 🎉", extra="+1")
    response = owner.get("/admin/export.jsonl")
    assert response.headers["Content-Type"] == "application/jsonl; charset=utf-8"
    assert response.headers["Content-Disposition"].endswith('.jsonl"')
    body = response.get_data()
    assert "Zoë 🎉".encode() in body  # UTF-8, not \\u escapes
    (line,) = [json.loads(x) for x in body.decode("utf-8").splitlines()]
    assert line["receipt"] == receipt and line["subject"] == "=cmd|' /C calc'!A0"
    assert line["name"] == "Zoë 🎉" and line["fields"] == [["extra", "+1"]]
    assert line["form"] == "default" and line["state"] == "pending"


def test_the_export_follows_the_filter(console, owner):
    post(console, subject="keep this")
    wanted = post(console, subject="invoice 42")
    body = owner.get("/admin/export.jsonl?q=invoice&state=pending").get_data()
    assert [json.loads(x)["receipt"] for x in body.splitlines()] == [wanted]
    assert owner.get("/admin/export.csv?q=nothing").get_data() == (
        b"\xef\xbb\xbf" + ",".join(HEADER).encode() + b"\r\n"
    )
    assert owner.get("/admin/export.csv?from=nope").status_code == 400
    assert owner.get("/admin/export.xml").status_code == 404


def test_the_export_needs_a_log_in(console):
    post(console)
    response = console.test_client().get("/admin/export.csv")
    assert response.status_code == 302 and b"ada@" not in response.get_data()


@pytest.mark.parametrize(
    ("cell", "out"),
    [("=1", "'=1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"),
     ("\rx", "'\rx"), ("a=1", "a=1"), ("", ""), (" =1", " =1"), ("'=1", "'=1")],
)  # fmt: skip
def test_neutralise(cell, out):
    assert neutralise(cell) == out


def test_writers_take_any_rows():
    row = SimpleNamespace(
        receipt="R", form_id="f", state="sent", created_at=0.0, subject="s",
        name=None, email=None, message=None, fields=None,
    )  # fmt: skip
    assert list(csv_lines([row]))[1] == "R,f,sent,1970-01-01T00:00:00Z,s,,,,[]\r\n"
    assert json.loads(next(jsonl_lines([row])))["fields"] == []


def rss_kib() -> int:
    status = open("/proc/self/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def bulk_insert(ledger, count: int, message: str) -> None:
    """Store `count` rows in one executemany (no posts: seconds, not minutes)."""
    now = ledger.clock.now()
    for start in range(0, count, 1000):
        _insert_rows(ledger, now, range(start, min(count, start + 1000)), message)


def _insert_rows(ledger, now: float, numbers: range, message: str) -> None:
    rows = [
        {
            "receipt": f"T{n:08d}", "form_id": "default", "recipient_alias": "sales",
            "mail_from": "forms@formpost.test", "recipients": "sales@example.com",
            "subject": f"Subject {n} 件名", "message_id": f"<{n}@bulk.test>",
            "raw": b"", "state": "sent", "attempts": 1, "created_at": now + n,
            "queued_at": now, "next_attempt_at": now, "name": f"Name {n}",
            "email": f"v{n}@example.net", "message": message,
            "fields": json.dumps([["message", message], ["n", str(n)]]),
        }
        for n in numbers
    ]  # fmt: skip
    with ledger.engine.begin() as conn:
        conn.execute(insert(submissions), rows)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_exporting_20000_rows_streams_in_flat_memory(console, owner):
    rows, message = 20_000, "x" * 2000  # about 40 MB of CSV
    bulk_insert(ledger_of(console), rows, message)
    before = rss_kib()
    response = owner.get("/admin/export.csv", buffered=False)
    chunks = response.iter_encoded()
    first = next(chunks)
    assert first.startswith(b"\xef\xbb\xbf")
    peak, total, lines = before, len(first), first.count(b"\r\n")
    for n, chunk in enumerate(chunks):
        total += len(chunk)
        lines += chunk.count(b"\r\n")
        if n % 1000 == 0:
            peak = max(peak, rss_kib())
    response.close()
    peak = max(peak, rss_kib())
    assert lines == rows + 1 and total > 40_000_000
    growth_mib = (peak - before) / 1024
    assert growth_mib < 16, f"RSS grew by {growth_mib:.1f} MiB"
