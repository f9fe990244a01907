"""Runs: the history of every backup, restore and migration, their logs, and cancelling."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from multibackup.server import models as m
from multibackup.server.api.context import Id, OptionalId, Principal, ctx, principal, session
from multibackup.server.api.problems import Problem, not_found

router = APIRouter(tags=["runs"])
STATUSES = ("queued", "running", "ok", "partial", "failed", "cancelled", "interrupted")


def get_run(s: Any, who: Principal, run_id: int) -> m.Run:
    run = s.get(m.Run, run_id)
    if run is None or run.organisation_id != who.organisation_id:
        raise not_found("run")
    return run


@router.get("/runs")
def list_runs(request: Request, plan_id: OptionalId = None, migration_id: OptionalId = None,
              status: str | None = None, kind: str | None = None, limit: int = 50,
              who: Principal = Depends(principal)) -> list[dict[str, Any]]:
    from multibackup.server.queue import run_json

    if status is not None and status not in STATUSES:
        raise Problem(422, f"status: use one of {', '.join(STATUSES)}", field="status")
    with session(request) as s:
        query = select(m.Run).where(m.Run.organisation_id == who.organisation_id)
        if plan_id is not None:
            query = query.where(m.Run.plan_id == plan_id)
        if migration_id is not None:
            query = query.where(m.Run.migration_id == migration_id)
        if status is not None:
            query = query.where(m.Run.status == status)
        if kind is not None:
            query = query.where(m.Run.kind == kind)
        rows = s.scalars(query.order_by(m.Run.id.desc()).limit(max(1, min(limit, 500))))
        return [run_json(r) for r in rows]


@router.get("/runs/{run_id}")
def get_run_json(run_id: Id, request: Request,
                 who: Principal = Depends(principal)) -> dict[str, Any]:
    from multibackup.server.queue import run_json

    with session(request) as s:
        return run_json(get_run(s, who, run_id))


@router.get("/runs/{run_id}/log", response_class=PlainTextResponse)
def run_log(run_id: Id, request: Request, who: Principal = Depends(principal)) -> str:
    with session(request) as s:
        return get_run(s, who, run_id).log or ""


@router.post("/runs/{run_id}/cancel", status_code=202)
def cancel_run(run_id: Id, request: Request,
               who: Principal = Depends(principal)) -> dict[str, Any]:
    from multibackup.server.queue import run_json

    with session(request) as s:
        run = get_run(s, who, run_id)
        if run.status not in ("queued", "running"):
            raise Problem(409, f"run {run_id} has already ended ({run.status})")
    ctx(request).executor.cancel(run_id)
    with session(request) as s:
        return run_json(get_run(s, who, run_id))
