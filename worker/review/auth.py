"""Who is asking and may they: argon2 passwords, the signed session cookie's key, CSRF tokens, the Origin
check, roles.

The signed session cookie holds a server-side session id (`sessions`) and the CSRF token, never the user:
the session row and the user row are read again on every request, so logout, a password change, disabling a
user or changing a role takes effect at once.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from worker.db import queries
from worker.db.session import session_scope
from worker.review import sessions
from worker.settings import Settings

ROLES = ("viewer", "reviewer", "admin")  # each role may do everything the ones before it may
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))  # unknown names cost the same time as wrong passwords


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker argon2 parameters than today's; login then stores a new one."""
    return _hasher.check_needs_rehash(password_hash)


def session_secret(settings: Settings) -> str:
    """`review_secret`, or a key generated once and kept in `<home>/review-secret` (mode 0600), so
    sessions survive restarts and several server processes on one home agree."""
    if settings.review_secret:
        return settings.review_secret
    path = settings.home_dir / "review-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole under a private name, then linked into place: link fails if another process won the
        # race, and no process ever reads a created-but-not-yet-written (empty) key.
        draft = path.with_name(f".review-secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links (SMB): a rename, which could replace a winner's key
                if not path.exists():
                    os.replace(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)
    return path.read_text().strip()


@dataclass(frozen=True)
class SessionUser:
    id: int
    name: str
    role: str

    def has_role(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def sees_identifiers(self) -> bool:
        """Patient identifiers (and anything that may carry them) are for reviewers and admins only."""
        return self.has_role("reviewer")


class LoginRequired(Exception):
    """No valid session: the app answers 401 under /api/ and a redirect to /login elsewhere."""


def db_session(request: Request) -> Iterator[Session]:
    """One database session per request, committed when the handler returns without error."""
    with session_scope(request.app.state.settings.sqlalchemy_url) as session:
        yield session


# Committed when the handler returns, before the response leaves: a 201 means the review is stored.
DB = Depends(db_session, scope="function")


def authenticate(session: Session, name: str, password: str) -> SessionUser | None:
    """The user if the name exists, is not disabled and the password matches; upgrades an old hash."""
    user = queries.user_named(session, name)
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password) or user.disabled:
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return SessionUser(user.id, user.name, user.role)


def start_session(request: Request, session: Session, user: SessionUser) -> None:
    """A fresh session for a fresh login: nothing from before it (a planted token or id) carries over."""
    request.session.clear()
    session_id = sessions.open_session(session, user.id, request.app.state.settings)
    request.session.update({"sid": session_id, CSRF_FIELD: secrets.token_urlsafe(32)})


def end_session(request: Request, session: Session) -> None:
    """Logout: the session id stops working on the server, so a copy of the cookie is worth nothing."""
    sessions.end_session(session, request.session.get("sid"))
    request.session.clear()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (the login form of an anonymous visitor needs one too)."""
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = request.session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


async def csrf_protect(request: Request) -> None:
    """Every state-changing request carries the session's token: forms in a hidden field, JSON in the
    X-CSRF-Token header. Applied to the whole app, so no POST route can forget it."""
    if request.method in SAFE_METHODS:
        return
    if _foreign_origin(request):
        raise HTTPException(403, "cross-site request refused")
    expected = request.session.get(CSRF_FIELD)
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "missing or wrong CSRF token")


def _foreign_origin(request: Request) -> bool:
    """An Origin header that names another site than the one asked (the Host header). A missing Origin is
    allowed: command-line clients send none, and browsers send one with every cross-site POST."""
    origin = request.headers.get("origin")
    if origin is None:
        return False
    parts = urlsplit(origin)
    return parts.scheme not in ("http", "https") or parts.netloc.lower() != request.headers.get("host", "").lower()


def current_user(request: Request, session: Session = DB) -> SessionUser:
    """The user of a standing session, enabled; raises LoginRequired otherwise."""
    uid = sessions.session_user_id(session, request.session.get("sid"), request.app.state.settings)
    user = queries.user_by_id(session, uid) if uid is not None else None
    if user is None or user.disabled or user.role not in ROLES:
        request.session.pop("sid", None)
        raise LoginRequired
    return SessionUser(user.id, user.name, user.role)


def require(role: str) -> Callable[..., SessionUser]:
    """A dependency that lets through users with at least `role` and answers 403 to the others."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def dependency(user: SessionUser = Depends(current_user)) -> SessionUser:
        if not user.has_role(role):
            raise HTTPException(403, f"needs the {role} role")
        return user

    return dependency
