"""Server-side review sessions: the cookie carries a random session id, the `sessions` table says whether it
still stands, so logout, a password change or a disabled account ends it at once, and idle or old sessions
end by themselves (`review_session_idle_minutes`, `review_session_hours`).

Only the id's sha256 is stored: a copy of the database holds no usable session.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from worker.db import queries
from worker.db.models import as_utc
from worker.settings import Settings

TOUCH_SECONDS = 30  # last-seen is written at most this often per session, not on every request


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(db: Session, user_id: int, settings: Settings) -> str:
    """A new session for a fresh login; returns the id the cookie carries. Sessions past their hours are
    deleted here, so the table holds only what could still stand."""
    session_id, now = secrets.token_urlsafe(32), datetime.now(UTC)
    queries.delete_review_sessions_before(db, now - timedelta(hours=settings.review_session_hours))
    queries.add_review_session(db, _key(session_id), user_id, now)
    return session_id


def session_user_id(db: Session, session_id: object, settings: Settings) -> int | None:
    """The user of a standing session (and notes that it was seen); None if unknown, ended or timed out."""
    if not isinstance(session_id, str) or not session_id:
        return None
    row = queries.review_session(db, _key(session_id))
    if row is None or row.revoked_at is not None:
        return None
    now = datetime.now(UTC)
    last_seen = as_utc(row.last_seen_at)
    if (now - last_seen > timedelta(minutes=settings.review_session_idle_minutes)
            or now - as_utc(row.created_at) > timedelta(hours=settings.review_session_hours)):
        return None
    if (now - last_seen).total_seconds() >= TOUCH_SECONDS:
        row.last_seen_at = now
    return row.user_id


def end_session(db: Session, session_id: object) -> None:
    """Logout: the id stops working, wherever a copy of the cookie lies."""
    if isinstance(session_id, str) and session_id:
        queries.revoke_review_sessions(db, datetime.now(UTC), key=_key(session_id))


def end_user_sessions(db: Session, user_id: int) -> int:
    """Every open session of a user (password changed, account disabled); returns how many ended."""
    return queries.revoke_review_sessions(db, datetime.now(UTC), user_id=user_id)
