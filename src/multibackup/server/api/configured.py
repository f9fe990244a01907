"""Destinations and sources: the same life cycle, so one router factory serves both.

The body is the config file's table (``location``, ``endpoint``, ``access_key_id``,
``secret_access_key``...); secret keys are sealed on save, listed by name in ``secrets``
and never returned. On update an omitted (or empty) secret keeps its stored value.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from multibackup.server import models as m
from multibackup.server import service
from multibackup.server.api.confine import check_config
from multibackup.server.api.context import Id, Principal, ctx, principal, session
from multibackup.server.api.owned import refuse_taken
from multibackup.server.api.problems import Problem, not_found


class Configured(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    config: dict[str, Any]


class Unsaved(BaseModel):
    name: str = Field(default="test", max_length=100)
    config: dict[str, Any]


def destination_json(row: m.Destination) -> dict[str, Any]:
    out = _json(row)
    out["location"] = row.config.get("location") or "{}://{}".format(
        row.config.get("provider", "?"), row.config.get("bucket", "?"))
    out["health"] = {
        "stored_bytes": row.stored_bytes, "objects": row.objects,
        "last_success": row.last_success.isoformat() if row.last_success else None,
        "last_failure": row.last_failure.isoformat() if row.last_failure else None,
        "lagging": row.lagging, "error": row.last_error}
    return out


def source_json(row: m.Source) -> dict[str, Any]:
    out = _json(row)
    out["url"] = row.config.get("url")
    return out


def _json(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "config": service.public_config(row),
            "secrets": list((row.config or {}).get("__secret_keys__", [])),
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat() if row.updated_at else None}


def make_router(kind: str, model: type[Any], check: Any, probe: Any,
                to_json: Any) -> APIRouter:
    """CRUD + test-connection endpoints under /{kind}s."""
    plural = f"/{kind}s"
    router = APIRouter(tags=[f"{kind}s"])

    def _get(s: Any, who: Principal, item_id: int) -> Any:
        row = s.get(model, item_id)
        if row is None or row.organisation_id != who.organisation_id:
            raise not_found(kind)
        return row

    @router.get(plural, name=f"list_{kind}s")
    def list_items(request: Request,
                   who: Principal = Depends(principal)) -> list[dict[str, Any]]:
        with session(request) as s:
            rows = s.scalars(select(model).where(model.organisation_id == who.organisation_id)
                             .order_by(model.name))
            return [to_json(r) for r in rows]

    @router.post(plural, status_code=201, name=f"create_{kind}")
    def create(body: Configured, request: Request,
               who: Principal = Depends(principal)) -> dict[str, Any]:
        name = service.check_name(body.name, kind)
        public, secrets = service.split_secrets(body.config)
        check(name, public, secrets)
        check_config(ctx(request), who, public)
        with session(request) as s:
            refuse_taken(s, model, who, name, kind)
            row = model(organisation_id=who.organisation_id, name=name)
            service.store_config(row, ctx(request).keyring, public, secrets)
            s.add(row)
            s.flush()
            return to_json(row)

    @router.get(plural + "/{item_id}", name=f"get_{kind}")
    def get(item_id: Id, request: Request,
            who: Principal = Depends(principal)) -> dict[str, Any]:
        with session(request) as s:
            return to_json(_get(s, who, item_id))

    @router.put(plural + "/{item_id}", name=f"update_{kind}")
    def update(item_id: Id, body: Configured, request: Request,
               who: Principal = Depends(principal)) -> dict[str, Any]:
        keyring = ctx(request).keyring
        with session(request) as s:
            row = _get(s, who, item_id)
            name = service.check_name(body.name, kind)
            if name != row.name:
                users = service.users_of(s, who.organisation_id, kind, row.name)
                if users:
                    raise Problem(409, f"{kind} {row.name!r} cannot be renamed while "
                                       f"{', '.join(users)} use it", field="name")
                refuse_taken(s, model, who, name, kind)
            public, secrets = service.split_secrets(body.config)
            kept = {k: v for k, v in keyring.open(row.secrets).items()
                    if k not in secrets and body.config.get(k) is None}
            secrets = {**kept, **secrets}
            check(name, public, secrets)
            check_config(ctx(request), who, public)
            row.name = name
            service.store_config(row, keyring, public, secrets)
            s.flush()
            return to_json(row)

    @router.delete(plural + "/{item_id}", status_code=204, name=f"delete_{kind}")
    def delete(item_id: Id, request: Request, who: Principal = Depends(principal)) -> Response:
        with session(request) as s:
            row = _get(s, who, item_id)
            users = service.users_of(s, who.organisation_id, kind, row.name)
            if users:
                raise Problem(409, f"{kind} {row.name!r} is used by {', '.join(users)}: "
                                   "remove it from them first")
            s.delete(row)
        return Response(status_code=204)

    @router.post(plural + "/test", name=f"test_unsaved_{kind}")
    def test_unsaved(body: Unsaved, request: Request,
                     who: Principal = Depends(principal)) -> dict[str, Any]:
        public, secrets = service.split_secrets(body.config)
        name = body.name if service.NAME.match(body.name or "") else "test"
        item = check(name, public, secrets)
        check_config(ctx(request), who, public)
        return probe(item).to_json()

    @router.post(plural + "/{item_id}/test", name=f"test_{kind}")
    def test_saved(item_id: Id, request: Request,
                   who: Principal = Depends(principal)) -> dict[str, Any]:
        keyring = ctx(request).keyring
        with session(request) as s:
            row = _get(s, who, item_id)
            item = check(row.name, service.public_config(row), keyring.open(row.secrets))
        return probe(item).to_json()

    return router


destinations = make_router("destination", m.Destination, service.check_destination,
                           service.probe_destination, destination_json)
sources = make_router("source", m.Source, service.check_source, service.probe_source,
                      source_json)
