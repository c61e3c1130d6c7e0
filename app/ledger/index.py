"""The full-text index's storage: what is written where, on each database.

SQLite: an FTS5 table `submission_search` (its rowid is submissions.id),
holding its own copy of the indexed text (SQLite 3.40 has no
contentless_delete, and a copy makes erasing a row one DELETE). PostgreSQL:
a tsvector column `submissions.search` ('simple' configuration: no stemming,
no stop words, so names and addresses match as typed) under a GIN index.

Both are written by explicit statements in the transaction that stores the
row, not by triggers: the row's values are at hand in Python already, the
storing transaction runs on the driver's cursor (driver.py), and the
migration that backfills old rows writes the same statements.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Column,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.sql.elements import TextClause

from .content import SEARCH_COLUMNS

FTS_TABLE = "submission_search"
PG_CONFIG = "simple"


def create_statements(dialect: str) -> list[str]:
    """Return the DDL that adds the index to a version-4 database."""
    if dialect == "sqlite":
        columns = ", ".join(SEARCH_COLUMNS)
        return [f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5({columns})"]
    return ["ALTER TABLE submissions ADD COLUMN search tsvector"]


def finish_statements(dialect: str) -> list[str]:
    """Return the DDL run after the backfill (an index built once, not per row)."""
    if dialect == "sqlite":
        return []
    return ["CREATE INDEX ix_submissions_search ON submissions USING GIN (search)"]


def search_text(columns: dict[str, str]) -> str:
    """Join the search columns into the one text PostgreSQL indexes."""
    return "\n".join(columns[name] for name in SEARCH_COLUMNS)


@functools.lru_cache(maxsize=4)
def index_row(dialect: str) -> TextClause:
    """Index one row (:id and the search columns) after it was stored."""
    if dialect == "sqlite":
        names = ", ".join(SEARCH_COLUMNS)
        binds = ", ".join(f":{n}" for n in SEARCH_COLUMNS)
        return text(f"INSERT INTO {FTS_TABLE} (rowid, {names}) VALUES (:id, {binds})")
    return text(
        f"UPDATE submissions SET search = to_tsvector('{PG_CONFIG}', :search_text) "
        "WHERE id = :id"
    )


@functools.lru_cache(maxsize=4)
def unindex_rows(dialect: str) -> TextClause:
    """Remove the rows in :ids (expanding) from the index."""
    if dialect == "sqlite":
        stmt = text(f"DELETE FROM {FTS_TABLE} WHERE rowid IN :ids")
    else:
        stmt = text("UPDATE submissions SET search = NULL WHERE id IN :ids")
    return stmt.bindparams(bindparam("ids", expanding=True))


def unindex_purged() -> TextClause:
    """Remove from SQLite's index the sent rows `purge_sent` deletes (:cutoff)."""
    return text(
        f"DELETE FROM {FTS_TABLE} WHERE rowid IN (SELECT id FROM submissions "
        "WHERE state = 'sent' AND sent_at < :cutoff)"
    )


@functools.lru_cache(maxsize=1)
def pg_submissions() -> Table:
    """The submissions table with PostgreSQL's search column, for its INSERT."""
    from .schema import submissions

    table = submissions.to_metadata(MetaData())
    table.append_column(Column("search", TSVECTOR))
    return table


def pg_search_value() -> Any:
    """The INSERT's value for the search column, from :search_text."""
    config = literal_column(f"'{PG_CONFIG}'::regconfig")
    return func.to_tsvector(config, bindparam("search_text", type_=String))
