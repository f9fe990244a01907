"""What every organisation-owned resource shares: unique names, schedules, run-now."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from multibackup.server.api.context import Principal, ctx, session
from multibackup.server.api.problems import Problem


def refuse_taken(s: Session, model: type[Any], who: Principal, name: str, what: str,
                 row: Any = None) -> None:
    """409 when another row of this organisation already has the name."""
    other = s.scalar(select(model).where(model.organisation_id == who.organisation_id,
                                         model.name == name))
    if other is not None and other is not row:
        article = "an" if what[0] in "aeiou" else "a"
        raise Problem(409, f"{article} {what} named {name!r} exists", field="name")


REGION = r"^[a-z0-9][a-z0-9-]{0,63}$"  # as `multibackup worker --region` takes it


def save_schedule(row: Any, schedule: str | None, timezone: str, enabled: bool,
                  catch_up: bool, region: str | None) -> None:
    """Store when and where a plan or migration runs; a changed schedule is computed
    afresh by the scheduler (next_run_at cleared), so saving never fires a run at once."""
    if row.schedule != (schedule or None) or row.timezone != timezone:
        row.next_run_at = None
    row.schedule, row.timezone = schedule or None, timezone
    row.enabled, row.catch_up = enabled, catch_up
    row.region = region or None


def run_now(request: Request, who: Principal, kind: str,
            target: Callable[[Session], dict[str, Any]]) -> dict[str, Any]:
    """Queue a run of a plan or migration (409 if it is already going) and hand it over;
    ``target`` loads ``{"plan": row}`` or ``{"migration": row}`` in the queue's session."""
    from multibackup.server.queue import Busy, enqueue_run, run_json

    with session(request) as s:
        rows = target(s)
        try:
            run = enqueue_run(s, kind=kind, organisation_id=who.organisation_id,
                              trigger="manual", **rows)
        except Busy as exc:
            raise Problem(409, str(exc)) from None
        s.flush()
        out = run_json(run)
    ctx(request).executor.submit(out["id"])
    return out
