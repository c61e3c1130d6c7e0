"""Time, injectable: the system clock in production, a fake one in tests."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch, and an interruptible wait."""

    def now(self) -> float: ...

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to `seconds` or until `stop` is set; return stop.is_set()."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Return time.time()."""
        return time.time()

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep until the timeout or the stop event, whichever comes first."""
        return stop.wait(seconds)
