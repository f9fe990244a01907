"""Who is asking: argon2 password hashes, dashboard sessions, API tokens, login throttling.

Sessions and tokens are random strings handed to the client once; the database keeps only
their SHA-256, so a leaked database does not let anyone in. A dashboard session also has a
CSRF token the page must echo in a header on every change (the session cookie is
SameSite=Strict as well). Failed sign-ins are counted per client address and email.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from multibackup.server.models import ApiToken, User, WebSession

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
TOKEN_PREFIX = "mbt_"
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(user: User, password: str) -> bool:
    """True if the password is the user's; constant work for a wrong one."""
    try:
        return _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def burn_time(password: str) -> None:
    """Hash work for an unknown email, so the answer time does not tell who has an account."""
    try:
        _HASHER.verify(_DUMMY_HASH, password)
    except VerificationError:
        pass


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    return None


def new_session(db: Session, user: User, hours: int) -> tuple[str, WebSession]:
    """A dashboard session; the user's expired ones are dropped on the way."""
    db.execute(delete(WebSession).where(WebSession.user_id == user.id,
                                        WebSession.expires_at <= datetime.now(UTC)))
    token = "mbs_" + secrets.token_urlsafe(32)
    row = WebSession(user_id=user.id, token_hash=digest(token),
                     csrf_token=secrets.token_urlsafe(24),
                     expires_at=datetime.now(UTC) + timedelta(hours=hours))
    db.add(row)
    db.flush()
    return token, row


def session_user(db: Session, token: str) -> tuple[User, WebSession] | None:
    row = db.scalar(select(WebSession).where(WebSession.token_hash == digest(token)))
    if row is None or row.expires_at <= datetime.now(UTC):
        return None
    user = db.get(User, row.user_id)
    return (user, row) if user is not None else None


def new_token(db: Session, user: User, name: str, days: int | None) -> tuple[str, ApiToken]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(days=days) if days else None
    row = ApiToken(user_id=user.id, name=name, token_hash=digest(token), expires_at=expires)
    db.add(row)
    db.flush()
    return token, row


@dataclass
class TokenCheck:
    user: User | None
    expired: bool = False


def token_user(db: Session, token: str) -> TokenCheck:
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token)))
    if row is None:
        return TokenCheck(None)
    now = datetime.now(UTC)
    if row.expires_at is not None and row.expires_at <= now:
        return TokenCheck(None, expired=True)
    row.last_used_at = now
    return TokenCheck(db.get(User, row.user_id))


class LoginThrottle:
    """At most ``limit`` failed sign-ins per ``window`` seconds per (address, email)."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str, email: str) -> int:
        """Seconds to wait before another attempt is heard (0: go ahead)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent((address, email.lower()), now)
            if len(times) < self.limit:
                return 0
            return max(1, int(times[0] + self.window - now + 0.999))

    def failed(self, address: str, email: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent((address, email.lower()), now).append(now)

    def succeeded(self, address: str, email: str) -> None:
        with self._lock:
            self._failures.pop((address, email.lower()), None)
