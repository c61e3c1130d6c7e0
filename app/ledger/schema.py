"""Schema and migrations: the tables' current shape and how a database gets there.

The Table objects describe the current shape for the queries in this package.
The DDL that creates and upgrades a database lives in MIGRATIONS, one entry
per version, frozen once released.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StorageError
from . import index
from .content import read_message, search_columns

# `spam`: quarantined by the spam verdict, stored but not delivered until an
# owner releases it. `dropped`: a post the verdict dropped, kept (with its
# reasons in `verdict`) so an owner can still release a false drop.
STATES = ("pending", "sending", "sent", "failed", "spam", "dropped", "deleted")
# What the visitor sent, cleared when a row is erased (a tombstone is left).
CONTENT_COLUMNS = ("name", "email", "message", "fields", "user_agent", "client_ip")
RELAY_KEY = "relay"

metadata = MetaData()

# The current shape of the tables, used by the queries below. The DDL that
# creates and upgrades them lives in MIGRATIONS and is frozen per version.
submissions = Table(
    "submissions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("receipt", String(16), nullable=False, unique=True),
    Column("form_id", String(64), nullable=False),
    Column("recipient_alias", String(64), nullable=False),
    Column("mail_from", String(320), nullable=False),
    Column("recipients", Text, nullable=False),
    Column("subject", String(400), nullable=False),
    Column("message_id", Text, nullable=False, unique=True),
    Column("raw", LargeBinary, nullable=False),
    # A digest (dedupe_digest), never the key itself: any key fits.
    Column("dedupe_key", String(160), unique=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("queued_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("claim_token", String(32)),
    Column("last_attempt_at", Float),
    Column("last_error_kind", String(16)),
    Column("last_reply", Text),
    Column("sent_at", Float),
    Column("client_ip", String(64)),
    Column("fingerprint", String(64)),
    # What the visitor sent, as data (version 5): fields is a JSON list of
    # [name, value] pairs in submitted order; name, email and message where
    # known. NULL for rows whose stored message could not be read back.
    Column("name", String(200)),
    Column("email", String(320)),
    Column("message", Text),
    Column("fields", Text),
    Column("origin", String(255)),
    Column("user_agent", String(512)),
    Column("erased_at", Float),
    # The spam verdict (version 7): JSON {"verdict", "score", "reasons": [...]}
    # (app/spam); NULL for posts stored before version 7 or never scored.
    Column("verdict", Text),
    # SHA-256 of the normalised message body, for "the same body posted again
    # across forms" (app/spam/rules.py).
    Column("body_digest", String(64)),
    # How many files came with the post (version 8): the worker reads them
    # from `attachments` only for rows that have some.
    Column("file_count", Integer, nullable=False, server_default="0"),
)
# A submission's files (files.py): one row per file, its bytes in chunks.
attachments = Table(
    "attachments",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("submission_id", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(127), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
)
attachment_chunks = Table(
    "attachment_chunks",
    metadata,
    Column("attachment_id", BigInteger, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)
# Full-text search: SQLite keeps an FTS5 table `submission_search` (rowid =
# submissions.id); PostgreSQL a tsvector column `submissions.search` with a
# GIN index. Neither is in these Table objects: search.py writes them.
PG_ONLY_COLUMNS = {"submissions": {"search"}}
# One row per delivery attempt of a submission: its timeline.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("submission_id", BigInteger, nullable=False),
    Column("at", Float, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error_kind", String(16)),
    Column("reply", Text),
)
# Submissions stored per form and UTC day (days since the epoch): counts that
# survive erasure and retention.
daily_counts = Table(
    "daily_counts",
    metadata,
    Column("form_id", String(64), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False),
)
# One row per rate or quota key: the GCRA "theoretical arrival time" (limits.py).
limit_buckets = Table(
    "limit_buckets",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("tat", Float, nullable=False),
)
# Counts kept up to date where rows change state (queue.py): "backlog".
counters = Table(
    "ledger_counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
BACKLOG = "backlog"
# Bounds of the submissions columns a post fills (checked before the commit).
BOUNDS = {
    c.name: c.type.length
    for c in submissions.c
    if isinstance(c.type, String) and not isinstance(c.type, Text) and c.type.length
}
relay_health = Table(
    "relay_health",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("failing_since", Float),
    Column("last_error_at", Float),
    Column("last_error_kind", String(16)),
    Column("last_error", Text),
    Column("last_success_at", Float),
)
owners = Table(
    "owners",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    # A new random value whenever the password changes: it is part of the
    # session's user id, so changing a password signs every session out.
    Column("session_key", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_login_at", Float),
)
# Tokens for /api/v1: a SHA-256 of each token, never the token (tokens.py).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("can_write", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)
# Proofs of work (ALTCHA) already accepted, kept until they expire, so each
# solution is accepted once (app/spam/altcha.py).
spent_proofs = Table(
    "spent_proofs",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),
)
# Notifications beyond the email (version 8): one row per submission and
# channel (webhook, apprise, autoresponse), a queue of its own with the same
# lease, backoff and dead letter as the email's. `target` is a digest of the
# channel as configured, never the URL itself (a secret); the worker finds the
# channel again in the form's configuration at send time. `label` is what the
# console shows (scheme and host of a webhook, the scheme of an Apprise URL).
DELIVERY_KINDS = ("webhook", "apprise", "autoresponse")
DELIVERY_STATES = ("pending", "sending", "sent", "failed", "disabled")
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("submission_id", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("target", String(64), nullable=False),
    Column("label", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("queued_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("claim_token", String(32)),
    Column("last_attempt_at", Float),
    Column("last_error", Text),
    Column("sent_at", Float),
    # The Standard Webhooks `webhook-id`: the same on every retry.
    Column("webhook_id", String(40), nullable=False),
    # Autoresponses: "<utc day>:<digest of the address>", unique, so one
    # address gets at most one per day across forms.
    Column("once_key", String(80), unique=True),
    UniqueConstraint("submission_id", "target"),
)
# Webhook endpoints that answered 410 Gone: no more attempts until an owner
# retries one of their deliveries.
disabled_targets = Table(
    "disabled_targets",
    metadata,
    Column("target", String(64), primary_key=True),
    Column("disabled_at", Float, nullable=False),
    Column("reason", Text, nullable=False),
)
schema_version = Table(
    "formpost_schema", metadata, Column("version", Integer, nullable=False)
)


# -- schema versions ---------------------------------------------------------
#
# Each entry upgrades the schema by one version and is never edited once
# released: a database at version N runs entries N+1.. in one transaction, so
# every existing row is kept (ALTER/INSERT ... SELECT, never drop-and-create).


def _v1_initial(conn: Connection) -> None:
    v1 = MetaData()
    Table(
        "submissions",
        v1,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("receipt", String(16), nullable=False, unique=True),
        Column("form_id", String(64), nullable=False),
        Column("recipient_alias", String(64), nullable=False),
        Column("mail_from", String(320), nullable=False),
        Column("recipients", Text, nullable=False),
        Column("subject", String(400), nullable=False),
        Column("message_id", String(255), nullable=False, unique=True),
        Column("raw", LargeBinary, nullable=False),
        Column("dedupe_key", String(160), unique=True),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", Float, nullable=False),
        Column("queued_at", Float, nullable=False),
        Column("next_attempt_at", Float, nullable=False),
        Column("lease_until", Float),
        Column("claim_token", String(32)),
        Column("last_attempt_at", Float),
        Column("last_error_kind", String(16)),
        Column("last_reply", Text),
        Column("sent_at", Float),
        Index("ix_submissions_due", "state", "next_attempt_at"),
    )
    Table(
        "relay_health",
        v1,
        Column("key", String(32), primary_key=True),
        Column("failing_since", Float),
        Column("last_error_at", Float),
        Column("last_error_kind", String(16)),
        Column("last_error", Text),
        Column("last_success_at", Float),
    )
    v1.create_all(conn)


def _v2_client_ip(conn: Connection) -> None:
    # Rate limits and quotas are counted in the ledger: these make it cheap.
    conn.exec_driver_sql("ALTER TABLE submissions ADD COLUMN client_ip VARCHAR(64)")
    conn.exec_driver_sql(
        "CREATE INDEX ix_submissions_rate "
        "ON submissions (form_id, client_ip, created_at)"
    )
    conn.exec_driver_sql(
        "CREATE INDEX ix_submissions_recipient "
        "ON submissions (recipient_alias, created_at)"
    )


def _v3_counters(conn: Connection) -> None:
    # Limits are kept in counters updated with each row instead of counted
    # per post; content dedupe gets its fingerprint; dedupe keys become
    # fixed-length digests, so no key can overflow the column.
    conn.exec_driver_sql("ALTER TABLE submissions ADD COLUMN fingerprint VARCHAR(64)")
    conn.exec_driver_sql(
        "CREATE INDEX ix_submissions_fingerprint "
        "ON submissions (fingerprint, created_at)"
    )
    if conn.dialect.name == "postgresql":
        # The Message-ID's domain is MAIL_FROM's, up to 252 characters.
        conn.exec_driver_sql(
            "ALTER TABLE submissions ALTER COLUMN message_id TYPE TEXT"
        )
    conn.exec_driver_sql(
        "CREATE TABLE limit_buckets "
        "(key VARCHAR(64) NOT NULL PRIMARY KEY, tat FLOAT NOT NULL)"
    )
    conn.exec_driver_sql(
        "CREATE TABLE ledger_counters "
        "(name VARCHAR(32) NOT NULL PRIMARY KEY, value BIGINT NOT NULL)"
    )
    conn.exec_driver_sql(
        "INSERT INTO ledger_counters (name, value) SELECT 'backlog', count(*) "
        "FROM submissions WHERE state IN ('pending', 'sending')"
    )
    keys = conn.exec_driver_sql(
        "SELECT id, dedupe_key FROM submissions WHERE dedupe_key IS NOT NULL"
    ).all()
    for row_id, key in keys:
        conn.execute(
            text("UPDATE submissions SET dedupe_key = :digest WHERE id = :id"),
            {"digest": _v3_digest(key), "id": row_id},
        )


def _v3_digest(key: str) -> str:
    # Frozen with version 3: dedupe_digest must keep computing the same.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def dedupe_digest(key: str) -> str:
    """Return what the ledger stores for a dedupe key: 64 hex characters."""
    return _v3_digest(key)


def _v4_owners(conn: Connection) -> None:
    # The console's accounts: argon2id hashes only, never a password.
    v4 = MetaData()
    Table(
        "owners",
        v4,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("email", String(254), nullable=False, unique=True),
        Column("password_hash", String(255), nullable=False),
        Column("session_key", String(32), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("last_login_at", Float),
    )
    v4.create_all(conn)


def _v5_content(conn: Connection) -> None:
    # The visitor's fields as data beside the message, full-text search over
    # them, each delivery attempt, tombstones, and counts that survive erasure.
    dialect = conn.dialect.name
    for column in (
        "name VARCHAR(200)",
        "email VARCHAR(320)",
        "message TEXT",
        "fields TEXT",
        "origin VARCHAR(255)",
        "user_agent VARCHAR(512)",
        "erased_at FLOAT",
    ):
        conn.exec_driver_sql(f"ALTER TABLE submissions ADD COLUMN {column}")
    v5 = MetaData()
    Table(
        "delivery_attempts",
        v5,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("submission_id", BigInteger, nullable=False),
        Column("at", Float, nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("error_kind", String(16)),
        Column("reply", Text),
        Index("ix_delivery_attempts_submission", "submission_id", "id"),
    )
    Table(
        "daily_counts",
        v5,
        Column("form_id", String(64), primary_key=True),
        Column("day", Integer, primary_key=True),
        Column("count", BigInteger, nullable=False),
    )
    v5.create_all(conn)
    for statement in index.create_statements(dialect):
        conn.exec_driver_sql(statement)
    _v5_backfill(conn)
    for statement in index.finish_statements(dialect):
        conn.exec_driver_sql(statement)
    day = (
        "CAST(created_at / 86400 AS INTEGER)"
        if dialect == "sqlite"
        else "CAST(floor(created_at / 86400) AS INTEGER)"
    )
    conn.exec_driver_sql(
        f"INSERT INTO daily_counts (form_id, day, count) "
        f"SELECT form_id, {day}, count(*) FROM submissions GROUP BY form_id, {day}"
    )
    # The last attempt of each row is all that version 4 kept of its timeline.
    conn.exec_driver_sql(
        "INSERT INTO delivery_attempts "
        "(submission_id, at, outcome, error_kind, reply) "
        "SELECT id, last_attempt_at, CASE state WHEN 'sent' THEN 'sent' "
        "WHEN 'failed' THEN 'failed' ELSE 'retry' END, last_error_kind, last_reply "
        "FROM submissions WHERE last_attempt_at IS NOT NULL "
        "AND state IN ('sent', 'failed', 'pending') ORDER BY id"
    )


_V5_BATCH = 500


def _v5_backfill(conn: Connection) -> None:
    """Read each stored message back into fields, in batches of rows by id.

    A message that cannot be read keeps NULL fields (the console shows the
    message instead); the migration goes on.
    """
    dialect = conn.dialect.name
    store = text(
        "UPDATE submissions SET name = :name, email = :email, message = :message, "
        "fields = :fields WHERE id = :id"
    )
    last = 0
    while True:
        rows = conn.execute(
            text(
                "SELECT id, form_id, subject, raw FROM submissions WHERE id > :last "
                "ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": _V5_BATCH},
        ).all()
        if not rows:
            return
        updates, entries = [], []
        for row_id, form_id, subject, raw in rows:
            found = read_message(bytes(raw), form_id)
            if found is None:
                continue
            columns = found.columns()
            updates.append(
                {
                    "id": row_id,
                    "name": columns["name"],
                    "email": columns["email"],
                    "message": columns["message"],
                    "fields": columns["fields"],
                }
            )
            searched = search_columns(
                subject, found.name, found.email, found.message, found.fields
            )
            entries.append(
                {"id": row_id, **searched, "search_text": index.search_text(searched)}
            )
        if updates:
            conn.execute(store, updates)
            conn.execute(index.index_row(dialect), entries)
        last = rows[-1][0]


def _v6_api_tokens(conn: Connection) -> None:
    # Tokens for the submissions API: only their SHA-256 is stored; a revoked
    # token keeps its row (and its name) so `tokens list` can show it.
    v6 = MetaData()
    Table(
        "api_tokens",
        v6,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("can_write", Boolean, nullable=False),
        Column("created_at", Float, nullable=False),
        Column("last_used_at", Float),
        Column("revoked_at", Float),
    )
    v6.create_all(conn)


def _v7_spam(conn: Connection) -> None:
    # The spam verdict and its reasons per row, a digest of the body for
    # repeats across forms, and the proofs of work already spent.
    conn.exec_driver_sql("ALTER TABLE submissions ADD COLUMN verdict TEXT")
    conn.exec_driver_sql("ALTER TABLE submissions ADD COLUMN body_digest VARCHAR(64)")
    conn.exec_driver_sql(
        "CREATE INDEX ix_submissions_body_digest "
        "ON submissions (body_digest, created_at)"
    )
    v7 = MetaData()
    Table(
        "spent_proofs",
        v7,
        Column("digest", String(64), primary_key=True),
        Column("expires_at", Float, nullable=False),
    )
    v7.create_all(conn)


def _v8_deliveries(conn: Connection) -> None:
    # Deliveries to webhooks, Apprise and autoresponses, each with its own
    # state; the email's delivery stays in `submissions`.
    v8 = MetaData()
    Table(
        "deliveries",
        v8,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("submission_id", BigInteger, nullable=False),
        Column("kind", String(16), nullable=False),
        Column("target", String(64), nullable=False),
        Column("label", String(200), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("created_at", Float, nullable=False),
        Column("queued_at", Float, nullable=False),
        Column("next_attempt_at", Float, nullable=False),
        Column("lease_until", Float),
        Column("claim_token", String(32)),
        Column("last_attempt_at", Float),
        Column("last_error", Text),
        Column("sent_at", Float),
        Column("webhook_id", String(40), nullable=False),
        Column("once_key", String(80), unique=True),
        UniqueConstraint("submission_id", "target"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )
    Table(
        "disabled_targets",
        v8,
        Column("target", String(64), primary_key=True),
        Column("disabled_at", Float, nullable=False),
        Column("reason", Text, nullable=False),
    )
    v8.create_all(conn)


def _v9_attachments(conn: Connection) -> None:
    # Files posted with a submission, in the database so that they commit
    # with their row and every machine sharing the database can send them.
    conn.exec_driver_sql(
        "ALTER TABLE submissions ADD COLUMN file_count INTEGER NOT NULL DEFAULT 0"
    )
    v9 = MetaData()
    Table(
        "attachments",
        v9,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("submission_id", BigInteger, nullable=False),
        Column("position", Integer, nullable=False),
        Column("filename", String(255), nullable=False),
        Column("content_type", String(127), nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Index("ix_attachments_submission", "submission_id", "position"),
    )
    Table(
        "attachment_chunks",
        v9,
        Column("attachment_id", BigInteger, primary_key=True),
        Column("seq", Integer, primary_key=True),
        Column("data", LargeBinary, nullable=False),
    )
    v9.create_all(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_initial,
    _v2_client_ip,
    _v3_counters,
    _v4_owners,
    _v5_content,
    _v6_api_tokens,
    _v7_spam,
    _v8_deliveries,
    _v9_attachments,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(engine: Engine) -> int:
    """Bring the schema to SCHEMA_VERSION, keeping every row; return the version.

    Safe to run from several processes at once: PostgreSQL takes an advisory
    lock, SQLite's BEGIN IMMEDIATE serialises the upgrade. Raise StorageError
    if the database cannot be reached or is newer than this code.
    """
    try:
        with engine.begin() as conn:
            return _upgrade(conn)
    except SQLAlchemyError as exc:
        raise StorageError(f"could not prepare the database: {exc}") from exc


def _upgrade(conn: Connection) -> int:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7453101)")
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(select(func.max(schema_version.c.version))).scalar()
    current = current or 0
    if current > SCHEMA_VERSION:
        raise StorageError(
            f"database schema is version {current}, newer than this Formpost "
            f"({SCHEMA_VERSION}); upgrade Formpost"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](conn)
        conn.execute(schema_version.delete())
        conn.execute(schema_version.insert().values(version=version))
    return SCHEMA_VERSION


def current_version(engine: Engine) -> int:
    """Return the schema version stored in the database (0 when empty)."""
    try:
        with engine.connect() as conn:
            if not engine.dialect.has_table(conn, "formpost_schema"):
                return 0
            query = select(func.max(schema_version.c.version))
            return conn.execute(query).scalar() or 0
    except SQLAlchemyError as exc:
        raise StorageError(f"could not read the schema version: {exc}") from exc
