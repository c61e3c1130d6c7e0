"""Writing submissions out as CSV or JSON lines, one line at a time.

Pure: rows in (anything with the ledger's listed columns), text out, so an
export streams in constant memory whatever its length. CSV starts with a
UTF-8 byte order mark, so spreadsheet applications read it as UTF-8, and a
cell starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'` so no
spreadsheet runs it as a formula. JSON lines carry the values untouched.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

COLUMNS = (
    "receipt", "form", "state", "created_at", "subject", "name", "email", "message",
)  # fmt: skip
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"


def rfc3339(epoch: float) -> str:
    """Format seconds since the epoch as RFC 3339 UTC, to the second."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def other_fields(row: Any) -> list[list[str]]:
    """The row's fields other than name, email and message, in submitted order."""
    stored = getattr(row, "fields", None)
    if not stored:
        return []
    shown = {row.name, row.email, row.message} - {None}
    return [[n, v] for n, v in json.loads(stored) if v not in shown or not v]


def record(row: Any) -> dict[str, Any]:
    """One row as the export's named values (fields: the other fields)."""
    return {
        "receipt": row.receipt,
        "form": row.form_id,
        "state": row.state,
        "created_at": rfc3339(row.created_at),
        "subject": row.subject or "",
        "name": row.name or "",
        "email": row.email or "",
        "message": row.message or "",
        "fields": other_fields(row),
    }


def neutralise(cell: str) -> str:
    """Prefix `'` to a cell a spreadsheet would read as a formula."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def csv_lines(rows: Iterable[Any]) -> Iterator[str]:
    """Yield the CSV export: BOM and header, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: Iterable[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        return buffer.getvalue()

    yield BOM + line([*COLUMNS, "fields"])
    for row in rows:
        values = record(row)
        cells = [values[name] for name in COLUMNS]
        cells.append(json.dumps(values["fields"], ensure_ascii=False))
        yield line(neutralise(cell) for cell in cells)


def jsonl_lines(rows: Iterable[Any]) -> Iterator[str]:
    """Yield the JSON lines export: one object per row, values untouched."""
    for row in rows:
        yield json.dumps(record(row), ensure_ascii=False) + "\n"
