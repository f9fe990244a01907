"""The dashboard's first page in one request: plans, destinations, recent runs, counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select

from multibackup.server import models as m
from multibackup.server.api.configured import destination_json
from multibackup.server.api.context import Principal, principal, session
from multibackup.server.api.plans import plan_json

router = APIRouter(tags=["overview"])


@router.get("/overview")
def overview(request: Request, who: Principal = Depends(principal)) -> dict[str, Any]:
    from multibackup.server.queue import run_json

    org = who.organisation_id
    since = datetime.now(UTC) - timedelta(hours=24)
    with session(request) as s:
        plans = [plan_json(s, p) for p in s.scalars(
            select(m.Plan).where(m.Plan.organisation_id == org).order_by(m.Plan.name))]
        dests = [destination_json(d) for d in s.scalars(
            select(m.Destination).where(m.Destination.organisation_id == org)
            .order_by(m.Destination.name))]
        recent = [run_json(r) for r in s.scalars(
            select(m.Run).where(m.Run.organisation_id == org).order_by(m.Run.id.desc())
            .limit(10))]

        def count(*where: Any) -> int:
            return s.scalar(select(func.count(m.Run.id)).where(
                m.Run.organisation_id == org, *where)) or 0

        counts = {"plans": len(plans),
                  "ok_24h": count(m.Run.status == "ok", m.Run.finished_at >= since),
                  "failed_24h": count(m.Run.status.in_(("failed", "partial", "interrupted")),
                                      m.Run.finished_at >= since),
                  "running": count(m.Run.status.in_(("queued", "running")))}
    return {"plans": plans, "destinations": dests, "recent_runs": recent, "counts": counts}
