"""Who is asking and may they: argon2 passwords, the signed session cookie's key, CSRF tokens, roles.

The session cookie holds only the user id and the CSRF token; the user row is read again on every
request, so disabling a user or changing a role takes effect at once.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from worker.db import queries
from worker.db.session import session_scope
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
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secrets.token_urlsafe(48) + "\n")
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


def start_session(request: Request, user: SessionUser) -> None:
    """A fresh session for a fresh login: nothing from before it (a planted token) carries over."""
    request.session.clear()
    request.session.update({"uid": user.id, CSRF_FIELD: secrets.token_urlsafe(32)})


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
    expected = request.session.get(CSRF_FIELD)
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "missing or wrong CSRF token")


def current_user(request: Request, session: Session = DB) -> SessionUser:
    """The logged-in, enabled user; raises LoginRequired otherwise."""
    uid = request.session.get("uid")
    user = queries.user_by_id(session, uid) if isinstance(uid, int) else None
    if user is None or user.disabled or user.role not in ROLES:
        request.session.pop("uid", None)
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
