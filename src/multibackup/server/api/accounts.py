"""Signing in and out, API tokens, organisations and their users."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from multibackup.server import auth
from multibackup.server import models as m
from multibackup.server.api.confine import folder_for
from multibackup.server.api.context import (
    SESSION_COOKIE,
    Id,
    Principal,
    admin,
    ctx,
    principal,
    session,
)
from multibackup.server.api.problems import Problem, not_found

router = APIRouter(tags=["accounts"])


class Login(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    expires_days: int | None = Field(default=90, ge=1, le=3650)


class NewOrganisation(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class NewUser(BaseModel):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(default="", max_length=200)
    password: str = Field(max_length=1000)
    role: Literal["admin", "member"] = "member"
    organisation_id: int | None = None  # superadmins only: create in another organisation


def user_json(user: m.User, org: m.Organisation | None) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "role": user.role,
            "superadmin": user.superadmin,
            "organisation": {"id": org.id, "name": org.name} if org else None}


def _server_folder(request: Request, user: m.User) -> str | None:
    """The only place on the server this user may use (None: anywhere, the administrator)."""
    return folder_for(ctx(request).settings, user.superadmin, user.organisation_id)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


@router.post("/auth/login")
def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    c = ctx(request)
    address, email = _client(request), body.email.strip().lower()
    wait = c.throttle.retry_after(address, email)
    if wait:
        raise Problem(429, f"too many failed sign-ins: try again in {wait} s",
                      headers={"Retry-After": str(wait)})
    with session(request) as s:
        user = s.scalar(select(m.User).where(m.User.email == email))
        if user is None:
            auth.burn_time(body.password)
        if user is None or not auth.verify_password(user, body.password):
            c.throttle.failed(address, email)
            raise Problem(401, "wrong email or password")
        c.throttle.succeeded(address, email)
        token, row = auth.new_session(s, user, c.settings.session_hours)
        out = {"user": {**user_json(user, s.get(m.Organisation, user.organisation_id)),
                        "server_folder": _server_folder(request, user)},
               "csrf_token": row.csrf_token}
    response.set_cookie(SESSION_COOKIE, token, max_age=c.settings.session_hours * 3600,
                        httponly=True, samesite="strict", secure=c.settings.secure_cookies,
                        path="/")
    return out


@router.post("/auth/logout", status_code=204)
def logout(request: Request, response: Response,
           who: Principal = Depends(principal)) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with session(request) as s:
            row = s.scalar(select(m.WebSession).where(
                m.WebSession.token_hash == auth.digest(cookie)))
            if row is not None:
                s.delete(row)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.status_code = 204
    return response


@router.get("/auth/me")
def me(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        user = s.get(m.User, who.user_id)
        org = s.get(m.Organisation, who.organisation_id)
        assert user is not None
        return {**user_json(user, org), "csrf_token": who.csrf,
                "server_folder": _server_folder(request, user)}


def _token_json(row: m.ApiToken) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None}


@router.get("/tokens")
def list_tokens(request: Request, who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    with session(request) as s:
        rows = s.scalars(select(m.ApiToken).where(m.ApiToken.user_id == who.user_id)
                         .order_by(m.ApiToken.id))
        return [_token_json(r) for r in rows]


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, request: Request,
                 who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        user = s.get(m.User, who.user_id)
        assert user is not None
        token, row = auth.new_token(s, user, body.name, body.expires_days)
        return {**_token_json(row), "token": token}


@router.delete("/tokens/{token_id}", status_code=204)
def delete_token(token_id: Id, request: Request,
                 who: Principal = Depends(principal)) -> Response:
    with session(request) as s:
        row = s.get(m.ApiToken, token_id)
        if row is None or row.user_id != who.user_id:
            raise not_found("token")
        s.delete(row)
    return Response(status_code=204)


@router.get("/organisations")
def list_organisations(request: Request,
                       who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    with session(request) as s:
        query = select(m.Organisation).order_by(m.Organisation.id)
        if not who.superadmin:
            query = query.where(m.Organisation.id == who.organisation_id)
        return [{"id": o.id, "name": o.name, "created_at": o.created_at.isoformat()}
                for o in s.scalars(query)]


@router.post("/organisations", status_code=201)
def create_organisation(body: NewOrganisation, request: Request,
                        who: Principal = Depends(principal)) -> dict[str, Any]:
    if not who.superadmin:
        raise Problem(403, "only the server's administrator may create organisations")
    try:
        with session(request) as s:
            org = m.Organisation(name=body.name.strip())
            s.add(org)
            s.flush()
            return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}
    except IntegrityError:
        raise Problem(409, f"an organisation named {body.name!r} exists",
                      field="name") from None


@router.get("/users")
def list_users(request: Request, who: Principal = Depends(admin)) -> list[dict[str, Any]]:
    with session(request) as s:
        org = s.get(m.Organisation, who.organisation_id)
        rows = s.scalars(select(m.User).where(m.User.organisation_id == who.organisation_id)
                         .order_by(m.User.id))
        return [user_json(u, org) for u in rows]


@router.post("/users", status_code=201)
def create_user(body: NewUser, request: Request,
                who: Principal = Depends(admin)) -> dict[str, Any]:
    org_id = who.organisation_id
    if body.organisation_id is not None and body.organisation_id != org_id:
        if not who.superadmin:
            raise not_found("organisation")
        org_id = body.organisation_id
    why = auth.password_problem(body.password)
    if why:
        raise Problem(422, f"password: {why}", field="password")
    try:
        with session(request) as s:
            org = s.get(m.Organisation, org_id)
            if org is None:
                raise not_found("organisation")
            user = m.User(organisation_id=org_id, email=body.email.strip().lower(),
                          name=body.name, role=body.role,
                          password_hash=auth.hash_password(body.password))
            s.add(user)
            s.flush()
            return user_json(user, org)
    except IntegrityError:
        raise Problem(409, f"a user with email {body.email!r} exists", field="email") from None


@router.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: Id, request: Request, who: Principal = Depends(admin)) -> Response:
    if user_id == who.user_id:
        raise Problem(409, "you cannot delete your own account")
    with session(request) as s:
        user = s.get(m.User, user_id)
        if user is None or (user.organisation_id != who.organisation_id
                            and not who.superadmin):
            raise not_found("user")
        s.delete(user)
    return Response(status_code=204)
