"""A clock the test moves by hand (the one fake the suite allows)."""

from __future__ import annotations

import threading
import time


class FakeClock:
    """Starts at the real time; advances only when told, or when waited on.

    Starting just after the real time keeps rows stored by the system clock
    (a request handled before the test swapped clocks) due and consistent.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = float(int(time.time()) + 2) if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        # Time passes for the waiter; yield the CPU so threads can progress.
        self._now += seconds
        time.sleep(0)
        return stop.is_set()
