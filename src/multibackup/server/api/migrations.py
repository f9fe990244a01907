"""Saved migrations between two destinations (or FTP sources): CRUD, schedule, run now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from multibackup.server import models as m
from multibackup.server import service
from multibackup.server.api.context import Id, Principal, principal, session
from multibackup.server.api.owned import REGION, refuse_taken, run_now, save_schedule
from multibackup.server.api.problems import Problem, not_found

router = APIRouter(tags=["migrations"])


class MigrationBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    source: str = Field(min_length=1, description="a destination's name, or an FTP/FTPS "
                                                  "source's")
    destination: str = Field(min_length=1, description="a destination's name, or an "
                                                       "FTP/FTPS source's")
    options: dict[str, Any] = {}
    schedule: str | None = None
    timezone: str = "UTC"
    enabled: bool = True
    region: str | None = Field(default=None, pattern=REGION)  # None: the server's worker
    catch_up: bool = False


def migration_json(s: Any, row: m.Migration) -> dict[str, Any]:
    cfg = dict(row.config or {})
    last = s.scalar(select(m.Run).where(m.Run.migration_id == row.id,
                                        m.Run.finished_at.is_not(None))
                    .order_by(m.Run.id.desc()).limit(1))
    return {"id": row.id, "name": row.name, "source": cfg.pop("source", None),
            "destination": cfg.pop("destination", None), "options": cfg,
            "schedule": row.schedule, "timezone": row.timezone, "enabled": row.enabled,
            "catch_up": row.catch_up, "region": row.region,
            "next_run": row.next_run_at.isoformat() if row.next_run_at and row.schedule
            and row.enabled else None,
            "last_run": {"id": last.id, "status": last.status} if last else None}


def _get(s: Any, who: Principal, item_id: int) -> m.Migration:
    row = s.get(m.Migration, item_id)
    if row is None or row.organisation_id != who.organisation_id:
        raise not_found("migration")
    return row


def _check(s: Any, who: Principal, body: MigrationBody) -> dict[str, Any]:
    from multibackup.config.schedule import ScheduleError, parse_schedule
    from multibackup.server.timing import check_timezone

    name = service.check_name(body.name, "migration")
    table = {**body.options, "source": body.source, "destination": body.destination}
    service.check_migration(s, who.organisation_id, name, table)
    if body.schedule:
        try:
            parse_schedule(body.schedule)
        except ScheduleError as exc:
            raise Problem(422, f"schedule: {exc}", field="schedule") from None
    try:
        check_timezone(body.timezone)
    except ValueError as exc:
        raise Problem(422, str(exc), field="timezone") from None
    return table


def _save(row: m.Migration, body: MigrationBody, table: dict[str, Any]) -> None:
    row.name, row.config = body.name, table
    save_schedule(row, body.schedule, body.timezone, body.enabled, body.catch_up,
                  body.region)


@router.get("/migrations")
def list_migrations(request: Request,
                    who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    with session(request) as s:
        rows = s.scalars(select(m.Migration).where(
            m.Migration.organisation_id == who.organisation_id).order_by(m.Migration.name))
        return [migration_json(s, r) for r in rows]


@router.post("/migrations", status_code=201)
def create_migration(body: MigrationBody, request: Request,
                     who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        refuse_taken(s, m.Migration, who, body.name, "migration")
        table = _check(s, who, body)
        row = m.Migration(organisation_id=who.organisation_id)
        _save(row, body, table)
        s.add(row)
        s.flush()
        return migration_json(s, row)


@router.get("/migrations/{item_id}")
def get_migration(item_id: Id, request: Request,
                  who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        return migration_json(s, _get(s, who, item_id))


@router.put("/migrations/{item_id}")
def update_migration(item_id: Id, body: MigrationBody, request: Request,
                     who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        row = _get(s, who, item_id)
        refuse_taken(s, m.Migration, who, body.name, "migration", row)
        table = _check(s, who, body)
        _save(row, body, table)
        s.flush()
        return migration_json(s, row)


@router.delete("/migrations/{item_id}", status_code=204)
def delete_migration(item_id: Id, request: Request,
                     who: Principal = Depends(principal)) -> Response:
    with session(request) as s:
        s.delete(_get(s, who, item_id))
    return Response(status_code=204)


@router.post("/migrations/{item_id}/run", status_code=202)
def run_migration_now(item_id: Id, request: Request,
                      who: Principal = Depends(principal)) -> dict[str, Any]:
    return run_now(request, who, "migrate",
                   lambda s: {"migration": _get(s, who, item_id)})
