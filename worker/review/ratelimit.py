"""Failed-login throttling: after too many failures for one user name or from one client address within a
window, login answers 429 with Retry-After, before any password is checked.

The counts live in this process's memory: a restart forgets them, and several server processes count
separately (each lets through its own allowance). That is enough to turn online guessing from thousands of
tries a minute into a handful; a shared store would be needed for an exact limit across processes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

MAX_KEYS = 100_000  # a flood of distinct names cannot grow memory without bound


class FailureWindow:
    """Timestamps of recent failures per key (a user name or a client address), each with its own limit."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, limits: dict[str, int]) -> int | None:
        """Seconds until every key in `limits` (key -> allowed failures) is under its limit; None if all are."""
        now = self.clock()
        waits = []
        with self._lock:
            for key, limit in limits.items():
                times = self._recent(key, now)
                if len(times) >= limit:  # wait until enough of the oldest failures leave the window
                    waits.append(times[len(times) - limit] + self.window - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def fail(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= MAX_KEYS:
                for key in list(self._failures):
                    self._recent(key, now)
                while len(self._failures) >= MAX_KEYS:
                    self._failures.pop(next(iter(self._failures)))
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def name_key(name: str) -> str:
    return "name:" + name.strip().casefold()


def address_key(address: str | None) -> str:
    return "addr:" + (address or "?")
