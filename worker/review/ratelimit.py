"""Failed-login throttling, counted in the database (`login_failures`), so every review process sees the same
counts and a restart forgets nothing. Three counts within the window, each with its own limit:

- per (name, address) pair: the client that guessed is refused for that name, even with the right password;
- per address: one client cannot try name after name;
- per name: past it, only a client that has not failed for the name within the window has its password
  checked, so guessing from elsewhere cannot lock the user out while every guessing address stays refused.

A refused attempt answers 429 with Retry-After before any password is checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from worker.db import queries
from worker.db.models import as_utc
from worker.settings import Settings

KEY_LENGTH = 300  # the column's width


@dataclass(frozen=True)
class Limits:
    window: timedelta
    per_pair: int
    per_name: int
    per_address: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(timedelta(seconds=settings.review_login_window_seconds), settings.review_login_max_failures,
                   settings.review_login_max_failures_per_name, settings.review_login_max_failures_per_address)


@dataclass(frozen=True)
class Attempt:
    """One login attempt: the name as typed and the client's address."""

    name: str
    address: str | None

    @property
    def name_key(self) -> str:
        return ("name:" + self.name.strip().casefold())[:KEY_LENGTH]

    @property
    def address_key(self) -> str:
        return "addr:" + (self.address or "?")

    @property
    def pair_key(self) -> str:
        return (f"pair:{self.address or '?'}|" + self.name.strip().casefold())[:KEY_LENGTH]


def _wait(db: Session, key: str, limit: int, limits: Limits, now: datetime) -> float | None:
    """Seconds until `key` is under `limit` again (when enough of its oldest failures leave the window)."""
    times = queries.login_failure_times(db, key, now - limits.window, limit)
    if len(times) < limit:
        return None
    return (as_utc(times[-1]) + limits.window - now).total_seconds()


def retry_after(db: Session, limits: Limits, attempt: Attempt) -> int | None:
    """Seconds the attempt must wait, or None when its password may be checked."""
    now = datetime.now(UTC)
    checks = [(attempt.pair_key, limits.per_pair), (attempt.address_key, limits.per_address)]
    if queries.login_failure_times(db, attempt.pair_key, now - limits.window, 1):  # this client failed for the name
        checks.append((attempt.name_key, limits.per_name))
    waits = [wait for key, limit in checks if (wait := _wait(db, key, limit, limits, now)) is not None]
    return max(1, math.ceil(max(waits))) if waits else None


def record_failure(db: Session, limits: Limits, attempt: Attempt) -> None:
    """Count a wrong name or password under all three keys, and drop what has left the window."""
    now = datetime.now(UTC)
    queries.add_login_failures(db, (attempt.pair_key, attempt.name_key, attempt.address_key), now)
    queries.prune_login_failures(db, now - limits.window)


def record_success(db: Session, attempt: Attempt) -> None:
    """The right password: this client's failures for the name are forgiven (the name and address counts stay)."""
    queries.forget_login_failures(db, attempt.pair_key)
