"""Finding submissions: filters, full-text search and keyset pages.

A query is plain words, all of which must match (the last one also as a
prefix). Words are quoted before they reach the database's query language,
and words with no letter or digit are dropped, so no input is an FTS5 or
tsquery syntax error: `"`, `*`, `AND`, `NEAR(` search for what they say.
Pages run newest first by id and continue below the last id shown (keyset),
never with OFFSET: rows stored meanwhile neither repeat nor skip rows.

Chinese, Japanese and Korean text has no spaces between words, so both
indexes hold a whole run of such characters as one token, and a word typed
in the search box would match only a run that starts with it. A word with
CJK characters is therefore matched as a substring of the stored columns
(LIKE, a scan of the filtered rows) instead of through the index, which is
what a reader of those languages expects from a search box.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Select,
    String,
    and_,
    bindparam,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
)

from .index import FTS_TABLE, PG_CONFIG
from .schema import submissions

_WORD = re.compile(r"[^\W_]")  # a letter or digit: something either index holds
_PREFIX_WORD = re.compile(r"[^\W_]+")  # safe to write into a tsquery as it is
_CURSOR = re.compile(r"[1-9][0-9]{0,18}")
# Scripts written without spaces between words: Han (with its extensions and
# compatibility forms), kana, Hangul, and the CJK punctuation and full-width
# forms between them.
_CJK = re.compile(
    "[\u2e80-\u2fdf\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff00-\uffef"
    "\U00020000-\U0003134f]"
)
_fts = table(FTS_TABLE, column("rowid"))
MAX_LIMIT = 500


class BadCursor(ValueError):
    """A page cursor this ledger did not hand out."""


@dataclass(frozen=True)
class Filters:
    """Which submissions: words to search for, form, state and time range.

    `since` and `until` bound created_at (since <= created_at < until);
    `hide` names states left out (the console's inbox hides spam).
    """

    query: str | None = None
    form: str | None = None
    state: str | None = None
    since: float | None = None
    until: float | None = None
    hide: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    """Rows newest first (no message bytes), and the cursor of the next page."""

    rows: list[Any]
    next: str | None


def words(query: str | None) -> list[str]:
    """Split a query into the words that can match anything."""
    # NUL separates words: PostgreSQL's text cannot hold it.
    text = (query or "").replace("\x00", " ")
    return [w for w in text.split() if _WORD.search(w)]


def fts5_query(terms: list[str]) -> str:
    """Quote each word as an FTS5 string (all must match; the last as a prefix)."""
    quoted = ['"' + w.replace('"', '""') + '"' for w in terms]
    return " ".join(quoted) + " *"


def decode_cursor(cursor: str | None) -> int | None:
    """Return the id a page continues below, or raise BadCursor."""
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not _CURSOR.fullmatch(cursor):
        raise BadCursor("not a page cursor")
    return int(cursor)


def matching(
    columns: list[Any], filters: Filters, dialect: str, below: int | None
) -> Select | None:
    """Build the SELECT of rows matching `filters`, newest first, below an id.

    None when the query has words but none that can match: nothing does.
    """
    c = submissions.c
    stmt = select(*columns)
    if filters.form is not None:
        stmt = stmt.where(c.form_id == filters.form)
    if filters.state is not None:
        stmt = stmt.where(c.state == filters.state)
    if filters.hide:
        stmt = stmt.where(c.state.not_in(filters.hide))
    if filters.since is not None:
        stmt = stmt.where(c.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(c.created_at < filters.until)
    key = c.id
    if filters.query is not None and filters.query.strip():
        terms = words(filters.query)
        if not terms:
            return None
        cjk = [w for w in terms if _CJK.search(w)]
        terms = [w for w in terms if not _CJK.search(w)]
        if cjk:
            stmt = stmt.where(c.erased_at.is_(None), and_(*map(_substring, cjk)))
        if terms and dialect == "sqlite":
            # The index leads, in its own rowid order, newest first: the
            # planner then reads matches only until the page is full
            # instead of collecting every match and sorting them.
            match = literal_column(FTS_TABLE).op("MATCH")(
                bindparam("fts", fts5_query(terms), type_=String)
            )
            stmt = stmt.select_from(_fts.join(submissions, c.id == _fts.c.rowid))
            stmt = stmt.where(match)
            key = _fts.c.rowid
        elif terms:
            stmt = stmt.where(literal_column("search").op("@@")(_tsquery(terms)))
    if below is not None:
        stmt = stmt.where(key < below)
    return stmt.order_by(key.desc())


def _substring(word: str) -> Any:
    """Match `word` anywhere in the columns the index covers (LIKE, escaped)."""
    c = submissions.c
    return or_(
        *(
            column.contains(word, autoescape=True)
            for column in (c.subject, c.name, c.email, c.message, c.fields)
        )
    )


def _tsquery(terms: list[str]) -> Any:
    config = literal_column(f"'{PG_CONFIG}'::regconfig")
    *head, last = terms
    if _PREFIX_WORD.fullmatch(last):
        # Letters and digits only: nothing in it is tsquery syntax.
        query = func.to_tsquery(config, bindparam("last", last + ":*", type_=String))
        if head:
            plain = func.plainto_tsquery(
                config, bindparam("head", " ".join(head), type_=String)
            )
            query = plain.op("&&")(query)
        return query
    return func.plainto_tsquery(config, bindparam("all", " ".join(terms), type_=String))
