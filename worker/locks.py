"""Jobs that must never run twice at once (the nightly retraining), locked in the database.

The database is the one thing every worker on every machine shares, so the lock lives there: a row in
`job_locks` per running job. The holder refreshes `expires_at` while it works; a row left by a process
that died expires and the next run takes it over. Works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from worker.db.models import JobLock
from worker.db.session import session_scope


class LockHeld(Exception):
    """Another process runs the job now; the message says who and since when."""

    def __init__(self, name: str, holder: str, since: datetime) -> None:
        super().__init__(f"{name} is already running (held by {holder} since {since:%Y-%m-%d %H:%M:%S} UTC)")
        self.holder, self.since = holder, since


def _now() -> datetime:
    return datetime.now(UTC)


def _try_acquire(url: str, name: str, holder: str, ttl: timedelta) -> None:
    now = _now()
    with session_scope(url) as session:
        taken_over = session.execute(update(JobLock).where(JobLock.name == name, JobLock.expires_at < now)
                                     .values(holder=holder, acquired_at=now, expires_at=now + ttl))
        if taken_over.rowcount == 1:
            return
        session.add(JobLock(name=name, holder=holder, acquired_at=now, expires_at=now + ttl))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            row = session.scalar(select(JobLock).where(JobLock.name == name))
            raise LockHeld(name, row.holder if row else "?", row.acquired_at if row else now) from None


@contextmanager
def lease(url: str, name: str, ttl_seconds: float) -> Iterator[Callable[[], None]]:
    """Hold lock `name` for the block, or raise `LockHeld`; yields `refresh()`, to call while the work goes on.

    `refresh` pushes the expiry `ttl_seconds` ahead; if the lock was taken over meanwhile (this process
    stalled past its expiry) it raises `LockHeld` so the work stops instead of running twice.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    ttl = timedelta(seconds=ttl_seconds)
    _try_acquire(url, name, holder, ttl)

    def refresh() -> None:
        with session_scope(url) as session:
            kept = session.execute(update(JobLock).where(JobLock.name == name, JobLock.holder == holder)
                                   .values(expires_at=_now() + ttl))
            if kept.rowcount != 1:
                row = session.scalar(select(JobLock).where(JobLock.name == name))
                raise LockHeld(name, row.holder if row else "nobody", row.acquired_at if row else _now())

    try:
        yield refresh
    finally:
        with session_scope(url) as session:
            session.execute(delete(JobLock).where(JobLock.name == name, JobLock.holder == holder))
