"""What every request handler can reach: the database, the key, the worker, the scheduler.

Kept on ``app.state.ctx``; the caller's identity is resolved per request by
:func:`principal` from the session cookie or a bearer token.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Query, Request
from sqlalchemy.orm import Session

from multibackup.server import auth
from multibackup.server.api.problems import Problem
from multibackup.server.api.repositories import RepositoryCache
from multibackup.server.db import Database
from multibackup.server.keyring import Keyring
from multibackup.server.settings import ServerSettings

SESSION_COOKIE = "mb_session"
MAX_ID = 2**53  # ids beyond what every database and JavaScript hold are simply not found

#: an object id in a path: a positive integer the database can hold
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
OptionalId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
_SAFE = ("GET", "HEAD", "OPTIONS")


@dataclass
class ServerContext:
    settings: ServerSettings
    db: Database
    keyring: Keyring
    executor: Any
    scheduler: Any
    metrics: Any
    throttle: auth.LoginThrottle
    repositories: RepositoryCache = field(default_factory=RepositoryCache)


@dataclass(frozen=True)
class Principal:
    """The signed-in user as a request sees them."""

    user_id: int
    organisation_id: int
    role: str
    superadmin: bool
    email: str
    via: str  # "session" or "token"
    csrf: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin" or self.superadmin


def ctx(request: Request) -> ServerContext:
    return request.app.state.ctx


@contextmanager
def session(request: Request) -> Iterator[Session]:
    with ctx(request).db.session() as s:
        yield s


def principal(request: Request) -> Principal:
    """The caller, or 401; a cookie-signed change without the CSRF header is 403."""
    header = request.headers.get("authorization", "")
    with session(request) as s:
        if header.lower().startswith("bearer "):
            check = auth.token_user(s, header[7:].strip())
            if check.user is None:
                raise Problem(401, "token expired" if check.expired else "invalid token",
                              headers={"WWW-Authenticate": "Bearer"})
            user, via, csrf = check.user, "token", None
        else:
            cookie = request.cookies.get(SESSION_COOKIE)
            found = auth.session_user(s, cookie) if cookie else None
            if found is None:
                raise Problem(401, "sign in first" if not cookie else
                              "your session has expired: sign in again")
            user, row = found
            via, csrf = "session", row.csrf_token
        who = Principal(user.id, user.organisation_id, user.role, user.superadmin,
                        user.email, via, csrf)
    if via == "session" and request.method not in _SAFE:
        sent = request.headers.get("x-csrf-token", "")
        if not csrf or not secrets.compare_digest(sent, csrf):
            raise Problem(403, "missing or wrong X-CSRF-Token header (reload the page)")
    return who


def admin(request: Request) -> Principal:
    who = principal(request)
    if not who.admin:
        raise Problem(403, "only an organisation admin may do this")
    return who
