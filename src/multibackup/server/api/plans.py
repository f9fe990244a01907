"""Plans: what to back up, where to, when and what to keep — plus run-now and history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from multibackup.config.schedule import ScheduleError, parse_schedule
from multibackup.server import models as m
from multibackup.server import service
from multibackup.server.api import confine
from multibackup.server.api.context import Id, Principal, ctx, principal, session
from multibackup.server.api.owned import REGION, refuse_taken, run_now, save_schedule
from multibackup.server.api.problems import Problem, not_found
from multibackup.server.queue import active_run


class PlanBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    sources: list[str] = Field(min_length=1)
    destinations: list[str] = Field(min_length=1)
    schedule: str | None = None
    timezone: str = "UTC"
    retention: dict[str, Any] | None = None
    retention_per_destination: dict[str, dict[str, Any]] | None = None
    hooks: dict[str, Any] | None = None
    exclude: list[str] = []
    tags: list[str] = []
    host: str | None = None
    compression: int | None = Field(default=None, ge=0, le=22)
    password: str | None = Field(default=None, max_length=1000)
    enabled: bool = True
    region: str | None = Field(default=None, pattern=REGION)  # None: the server's worker
    catch_up: bool = True


router = APIRouter(tags=["plans"])


def get_plan(s: Any, who: Principal, plan_id: int) -> m.Plan:
    row = s.get(m.Plan, plan_id)
    if row is None or row.organisation_id != who.organisation_id:
        raise not_found("plan")
    return row


def plan_json(s: Any, row: m.Plan) -> dict[str, Any]:
    cfg = row.config or {}
    last = s.scalar(select(m.Run).where(m.Run.plan_id == row.id, m.Run.kind == "backup",
                                        m.Run.finished_at.is_not(None))
                    .order_by(m.Run.id.desc()).limit(1))
    active = active_run(s, plan_id=row.id)
    running = active.id if active is not None else None
    cron = None
    if row.schedule:
        try:
            cron = parse_schedule(row.schedule).cron
        except ScheduleError:
            cron = None
    return {"id": row.id, "name": row.name,
            **{k: cfg.get(k) for k in service.PLAN_KEYS},
            "exclude": cfg.get("exclude") or [], "tags": cfg.get("tags") or [],
            "schedule": row.schedule, "schedule_cron": cron, "timezone": row.timezone,
            "enabled": row.enabled, "catch_up": row.catch_up, "region": row.region,
            "next_run": (row.next_run_at.isoformat() if row.next_run_at and row.enabled
                         and row.schedule else None),
            "last_run": ({"id": last.id, "status": last.status,
                          "finished_at": last.finished_at.isoformat() if last.finished_at
                          else None} if last else None),
            "running": running is not None, "running_run_id": running,
            "created_at": row.created_at.isoformat()}


def _table(body: PlanBody) -> dict[str, Any]:
    table: dict[str, Any] = {"sources": body.sources, "destinations": body.destinations,
                             "exclude": body.exclude, "tags": body.tags}
    for key in ("retention", "retention_per_destination", "hooks", "host", "compression"):
        value = getattr(body, key)
        if value:
            table[key] = value
    return table


def _check(request: Request, s: Any, who: Principal, body: PlanBody,
           password: str) -> dict[str, Any]:
    from multibackup.server.timing import check_timezone

    name = service.check_name(body.name, "plan")
    try:
        check_timezone(body.timezone)
    except ValueError as exc:
        raise Problem(422, str(exc), field="timezone") from None
    table = _table(body)
    confine.check_plan(ctx(request), who, body.sources, body.hooks)
    service.check_plan(s, who.organisation_id, name,
                       {**table, "password": password,
                        **({"schedule": body.schedule} if body.schedule else {})})
    return table


def _save(row: m.Plan, body: PlanBody, table: dict[str, Any]) -> None:
    row.name, row.config = body.name, table
    save_schedule(row, body.schedule, body.timezone, body.enabled, body.catch_up,
                  body.region)


@router.get("/plans")
def list_plans(request: Request, who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    with session(request) as s:
        rows = s.scalars(select(m.Plan).where(m.Plan.organisation_id == who.organisation_id)
                         .order_by(m.Plan.name))
        return [plan_json(s, r) for r in rows]


@router.post("/plans", status_code=201)
def create_plan(body: PlanBody, request: Request,
                who: Principal = Depends(principal)) -> dict[str, Any]:
    if not body.password:
        raise Problem(422, "password: the repository password is required", field="password")
    with session(request) as s:
        refuse_taken(s, m.Plan, who, body.name, "plan")
        table = _check(request, s, who, body, body.password)
        row = m.Plan(organisation_id=who.organisation_id)
        _save(row, body, table)
        row.secrets = ctx(request).keyring.seal({"password": body.password})
        s.add(row)
        s.flush()
        return plan_json(s, row)


@router.get("/plans/{plan_id}")
def get_plan_json(plan_id: Id, request: Request,
                  who: Principal = Depends(principal)) -> dict[str, Any]:
    with session(request) as s:
        return plan_json(s, get_plan(s, who, plan_id))


@router.put("/plans/{plan_id}")
def update_plan(plan_id: Id, body: PlanBody, request: Request,
                who: Principal = Depends(principal)) -> dict[str, Any]:
    keyring = ctx(request).keyring
    with session(request) as s:
        row = get_plan(s, who, plan_id)
        refuse_taken(s, m.Plan, who, body.name, "plan", row)
        password = body.password or keyring.open(row.secrets).get("password", "")
        table = _check(request, s, who, body, password)
        _save(row, body, table)
        if body.password:
            row.secrets = keyring.seal({"password": body.password})
        s.flush()
        return plan_json(s, row)


@router.delete("/plans/{plan_id}", status_code=204)
def delete_plan(plan_id: Id, request: Request, who: Principal = Depends(principal)) -> Response:
    with session(request) as s:
        row = get_plan(s, who, plan_id)
        if s.scalar(select(m.Run.id).where(m.Run.plan_id == row.id,
                                           m.Run.status.in_(("queued", "running")))):
            raise Problem(409, f"plan {row.name!r} is running: cancel the run first")
        s.delete(row)  # its runs stay in the history, under the plan's name
    return Response(status_code=204)


@router.post("/plans/{plan_id}/run", status_code=202)
def run_plan_now(plan_id: Id, request: Request,
                 who: Principal = Depends(principal)) -> dict[str, Any]:
    return run_now(request, who, "backup", lambda s: {"plan": get_plan(s, who, plan_id)})


@router.get("/plans/{plan_id}/history")
def plan_history(plan_id: Id, request: Request, limit: int = 100,
                 who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    with session(request) as s:
        row = get_plan(s, who, plan_id)
        runs = s.scalars(select(m.Run).where(m.Run.plan_id == row.id, m.Run.kind == "backup",
                                             m.Run.finished_at.is_not(None))
                         .order_by(m.Run.id.desc()).limit(max(1, min(limit, 1000)))).all()
        out = []
        for r in reversed(runs):
            duration = ((r.finished_at - r.started_at).total_seconds()
                        if r.finished_at and r.started_at else None)
            out.append({"run_id": r.id, "started_at": r.started_at.isoformat()
                        if r.started_at else None, "finished_at": r.finished_at.isoformat()
                        if r.finished_at else None, "status": r.status, "duration": duration,
                        "bytes_added": r.bytes_added, "stored_bytes": r.stored_bytes})
        return out
