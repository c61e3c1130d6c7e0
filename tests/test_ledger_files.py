"""ledger/files.py: files stored with their row, read back in chunks, erased with it.

Every way a row leaves (erase, erase matching, retention, purge) takes its
files and every chunk with it: no orphan is left, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from app.ledger import Filters, Ledger
from app.ledger.files import CHUNK
from app.ledger.schema import attachment_chunks, attachments, submissions
from app.uploads import Upload

from .helpers import mark_sent
from .storekit import endpoint, message_for

DAY = 86400.0


def upload(name: str, data: bytes, kind: str = "application/pdf") -> Upload:
    return Upload(
        field="file",
        filename=name,
        file=io.BytesIO(data),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=kind,
    )


def store_with_files(ledger: Ledger, n: int, *datas: bytes) -> str:
    post = endpoint((("message", f"post {n}"),))
    return ledger.enqueue(
        message_for(post),
        form_id=post.form_id,
        alias=post.recipient,
        subject=post.subject,
        content=post.content(),
        files=[upload(f"f{i}.pdf", data) for i, data in enumerate(datas)],
    )


def counts(ledger: Ledger) -> tuple[int, int]:
    with ledger.engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table)).scalar()
            for table in (attachments, attachment_chunks)
        )


def test_files_come_back_in_order_and_whole(ledger):
    big = bytes(range(256)) * (CHUNK // 256 * 2 + 3)  # two chunks and a bit
    store_with_files(ledger, 0, b"%PDF-small", big)
    (row,) = ledger.rows()
    stored = ledger.files(row.id)
    assert [f.filename for f in stored] == ["f0.pdf", "f1.pdf"]
    assert [f.size for f in stored] == [10, len(big)]
    assert b"".join(ledger.file_bytes(stored[1].id)) == big
    assert counts(ledger) == (2, 1 + 3)


def test_a_row_without_files_claims_none(ledger):
    store_with_files(ledger, 0)
    store_with_files(ledger, 1, b"x")
    claimed = ledger.claim(10, 60)
    assert sorted(c.files for c in claimed) == [0, 1]


def _erase(ledger, receipts):
    return ledger.erase(receipts)


def _erase_matching(ledger, receipts):
    return ledger.erase_matching(Filters(form="site"))


def _retention(ledger, receipts):
    for row in ledger.claim(10, 60):
        assert mark_sent(ledger, row)
    ledger.clock.advance(40 * DAY)
    return ledger.erase_delivered_before(ledger.clock.now() - 30 * DAY)


def _purge(ledger, receipts):
    for row in ledger.claim(10, 60):
        assert mark_sent(ledger, row)
    ledger.clock.advance(40 * DAY)
    return ledger.purge_sent(30 * DAY)


@pytest.mark.parametrize(
    "remove",
    [_erase, _erase_matching, _retention, _purge],
    ids=["erase", "erase_matching", "retention", "purge"],
)
def test_every_way_a_row_goes_takes_its_files(ledger, remove: Callable):
    receipts = [
        store_with_files(ledger, 0, b"a" * (CHUNK + 1), b"b"),
        store_with_files(ledger, 1, b"c"),
    ]
    assert counts(ledger) == (3, 4)
    assert remove(ledger, receipts) == 2
    assert counts(ledger) == (0, 0)


def test_erasing_one_row_keeps_the_others_files(ledger):
    first = store_with_files(ledger, 0, b"a")
    store_with_files(ledger, 1, b"b", b"c")
    ledger.erase([first])
    assert counts(ledger) == (2, 2)
    owned = select(attachments.c.submission_id).limit(1).scalar_subquery()
    with ledger.engine.connect() as conn:
        owner = conn.execute(
            select(submissions.c.receipt).where(submissions.c.id == owned)
        ).scalar()
    assert owner != first
