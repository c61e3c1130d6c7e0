"""The ledger: every accepted submission, durably stored, and the queue over it.

One table (`submissions`) is queue, archive, dead-letter store and dedupe
index. SQLAlchemy Core; the same statements run on SQLite (embedded default,
WAL + synchronous=FULL) and PostgreSQL (several machines).

| module         | holds                                                        |
| -------------- | ------------------------------------------------------------ |
| schema.py      | the tables, the migrations, `migrate`                        |
| driver.py      | engines, SQLite's writer lock, the raw driver transaction    |
| groupcommit.py | concurrent posts sharing one COMMIT                          |
| limits.py      | rate and quota buckets, the backlog counter                  |
| content.py     | what a visitor sent, as data; reading it back from a message |
| index.py       | the full-text index's storage (FTS5 table, tsvector column)  |
| search.py      | filters, search queries, keyset page cursors                 |
| timeline.py    | delivery attempts; a submission's detail                     |
| actions.py     | retry now, erase to a tombstone (counter kept exact)         |
| release.py     | spam and dropped rows released to the queue by an owner      |
| lease.py       | claiming due rows under a lease (email and channel queues)   |
| deliveries.py  | webhooks, Apprise, autoresponses: one queued row per channel |
| queue.py       | `Ledger`: store, claim, settle, list, search, erase, purge   |
| owners.py      | the console's owner accounts (argon2id hashes only)          |
| tokens.py      | API tokens (SHA-256 of each token only)                      |
| proofs.py      | proofs of work already spent (ALTCHA), until they expire     |

Every database error that leaves the package is a StorageError.
"""

from ..errors import StorageError
from .content import Content
from .deliveries import Channel, ClaimedDelivery
from .driver import default_url, make_engine
from .limits import LimitExceeded, Limits
from .queue import Claimed, Ledger, Outcome, Stats, new_receipt
from .schema import (
    SCHEMA_VERSION,
    STATES,
    current_version,
    dedupe_digest,
    migrate,
    submissions,
)
from .search import BadCursor, Filters, Page
from .timeline import Attempt, Detail

__all__ = [
    "SCHEMA_VERSION",
    "STATES",
    "Attempt",
    "BadCursor",
    "Detail",
    "Filters",
    "Page",
    "Channel",
    "Claimed",
    "ClaimedDelivery",
    "Content",
    "Ledger",
    "LimitExceeded",
    "Limits",
    "Outcome",
    "Stats",
    "StorageError",
    "current_version",
    "dedupe_digest",
    "default_url",
    "make_engine",
    "migrate",
    "new_receipt",
    "submissions",
]
