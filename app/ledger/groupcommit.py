"""Group commit: the rows of concurrent requests share one COMMIT and one sync."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Pending:
    """One row waiting for a group commit, and what became of it.

    `request` is what the writer needs (queue.py's row, limits and keys).
    After the commit, `receipt` is the answer (its own, or the first
    post's when it repeats one), or `refusal` says which limit refused it;
    `error` is set if its transaction failed.
    """

    request: Any
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    receipt: str | None = None  # None until its transaction committed
    refusal: Exception | None = None
    error: Exception | None = None


class GroupCommit:
    """Commit the rows of concurrent requests together: one COMMIT, one sync.

    The first request to arrive leads: it takes every row waiting, writes them
    in one transaction and wakes their requests once COMMIT has returned. Rows
    that arrive meanwhile wait for the next leader, chosen among them, so no
    request works on others' behalf for more than one batch. The disk sync
    (synchronous=FULL, or PostgreSQL's WAL flush) is the slow part of a
    commit; sharing it is what lets one process accept many posts per sync.
    """

    def __init__(self, write: Callable[[list[Pending]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._waiting: list[Pending] = []
        self._busy = False

    def run(self, item: Pending) -> None:
        """Return once `item` is committed, refused or failed."""
        with self._lock:
            self._waiting.append(item)
            follow = self._busy
            self._busy = True
        if follow:
            item.wake.wait()
            if not item.lead:
                return
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            self._write(batch)
        finally:
            for waiting in batch:
                waiting.wake.set()
            with self._lock:
                if self._waiting:
                    self._waiting[0].lead = True
                    self._waiting[0].wake.set()
                else:
                    self._busy = False
