"""A submission's files, stored in the database beside its row, in chunks.

In the database, not on a disk beside it: several machines share only the
database, and a file must be committed in the same transaction as its
submission (queue.py's group commit) so that a post is stored whole or not
at all. Chunks keep every statement, and every read, to CHUNK bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, insert, select

from .driver import driver_args, reading
from .schema import attachment_chunks, attachments

CHUNK = 256 * 1024


class StoredFile(Protocol):
    """What the ledger needs of a received file (app/uploads.py's Upload)."""

    filename: str
    content_type: str
    size: int
    sha256: str

    def chunks(self, size: int) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class Attachment:
    """A stored file's description, without its bytes."""

    id: int
    submission_id: int
    position: int
    filename: str
    content_type: str
    size: int
    sha256: str


@functools.lru_cache(maxsize=2)
def _insert_attachment(dialect: str) -> Any:
    stmt = insert(attachments).values(
        {
            k: bindparam(k)
            for k in (
                "submission_id",
                "position",
                "filename",
                "content_type",
                "size",
                "sha256",
            )
        }
    )
    if dialect == "postgresql":
        return stmt.returning(attachments.c.id)
    return stmt


@functools.lru_cache(maxsize=1)
def _insert_chunk() -> Any:
    return insert(attachment_chunks).values(
        attachment_id=bindparam("attachment_id"),
        seq=bindparam("seq"),
        data=bindparam("data"),
    )


def store_files(
    cursor: Any, engine: Engine, submission_id: int, files: Iterable[StoredFile]
) -> None:
    """Write each file and its chunks on the driver's cursor (the row's transaction)."""
    dialect = engine.dialect.name
    for position, stored in enumerate(files):
        params = {
            "submission_id": submission_id,
            "position": position,
            "filename": stored.filename,
            "content_type": stored.content_type,
            "size": stored.size,
            "sha256": stored.sha256,
        }
        cursor.execute(*driver_args(_insert_attachment(dialect), params, engine))
        attachment_id = (
            cursor.fetchone()[0] if dialect == "postgresql" else cursor.lastrowid
        )
        for seq, data in enumerate(stored.chunks(CHUNK)):
            values = {"attachment_id": attachment_id, "seq": seq, "data": data}
            cursor.execute(*driver_args(_insert_chunk(), values, engine))


def delete_files(conn: Connection, submission_ids: Any) -> None:
    """Delete the files of these submissions (a list of ids or a subquery)."""
    owned = select(attachments.c.id).where(
        attachments.c.submission_id.in_(submission_ids)
    )
    conn.execute(
        attachment_chunks.delete().where(attachment_chunks.c.attachment_id.in_(owned))
    )
    conn.execute(
        attachments.delete().where(attachments.c.submission_id.in_(submission_ids))
    )


def list_files(conn: Connection, submission_id: int) -> list[Attachment]:
    """Return a submission's files in the order they were posted."""
    rows = conn.execute(
        select(attachments)
        .where(attachments.c.submission_id == submission_id)
        .order_by(attachments.c.position)
    ).all()
    return [Attachment(**row._mapping) for row in rows]


def read_chunks(engine: Engine, attachment_id: int) -> Iterator[bytes]:
    """Yield a file's bytes one chunk per short read: memory stays at one chunk."""
    seq = 0
    query = select(attachment_chunks.c.data).where(
        attachment_chunks.c.attachment_id == bindparam("attachment_id"),
        attachment_chunks.c.seq == bindparam("seq"),
    )
    while True:
        with reading(engine) as conn:
            data = conn.execute(
                query, {"attachment_id": attachment_id, "seq": seq}
            ).scalar()
        if data is None:
            return
        yield bytes(data)
        seq += 1
