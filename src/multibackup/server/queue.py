"""The work queue: runs are rows, and a plan (or migration) never runs twice at once.

A run is inserted ``queued``; a worker claims it by moving it to ``running``. Before a
backup or migrate run is queued, the plan's (or migration's) row is locked for the rest of
the transaction (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite a no-op write, which
takes the database's single write lock), so two requests racing to start the same plan
see each other and the second is refused with :class:`Busy`. Restores don't count as the
plan running: the repository lock keeps them apart from a backup writing to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from multibackup.errors import UsageError
from multibackup.server import models as m
from multibackup.sources.url import is_url, redacted

#: a run in one of these holds its plan
ACTIVE = ("queued", "running")
#: where a run ends
FINISHED = ("ok", "partial", "failed", "cancelled", "interrupted")
KINDS = ("backup", "restore", "migrate")
TRIGGERS = ("manual", "schedule", "catch-up", "retry")


class Busy(UsageError):
    """The plan or migration already has a queued or running run."""

    def __init__(self, what: str, name: str, run_id: int, status: str = "running") -> None:
        verb = "is already running" if status == "running" else "already has a queued run"
        super().__init__(f"{what} {name!r} {verb} (run {run_id})")
        self.run_id = run_id


def _lock_row(db: Session, table: str, row_id: int) -> None:
    """Hold the row (and on SQLite the write lock) until the transaction ends."""
    if db.get_bind().dialect.name == "sqlite":
        db.execute(text(f"UPDATE {table} SET id = id WHERE id = :id"), {"id": row_id})
    else:
        db.execute(text(f"SELECT id FROM {table} WHERE id = :id FOR UPDATE"), {"id": row_id})


def active_run(db: Session, *, plan_id: int | None = None,
               migration_id: int | None = None) -> m.Run | None:
    """The queued or running backup of a plan (or run of a migration), if any."""
    query = select(m.Run).where(m.Run.status.in_(ACTIVE))
    if plan_id is not None:
        query = query.where(m.Run.plan_id == plan_id, m.Run.kind == "backup")
    else:
        query = query.where(m.Run.migration_id == migration_id, m.Run.kind == "migrate")
    return db.scalars(query.order_by(m.Run.id).limit(1)).first()


def enqueue_run(db: Session, *, kind: str, organisation_id: int, plan: m.Plan | None = None,
                migration: m.Migration | None = None, trigger: str = "manual",
                params: dict[str, Any] | None = None, attempt: int = 1) -> m.Run:
    """Insert a queued run (flushed, so it has an id); Busy if its plan is taken.

    The caller's transaction commits it; the executor is told after the commit.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown run kind {kind!r}")
    if trigger not in TRIGGERS:
        raise UsageError(f"unknown run trigger {trigger!r}")
    if kind == "migrate":
        if migration is None:
            raise UsageError("a migrate run needs a migration")
        _lock_row(db, "migrations", migration.id)
        busy = active_run(db, migration_id=migration.id)
        if busy is not None:
            raise Busy("migration", migration.name, busy.id, busy.status)
        name = migration.name
    else:
        if plan is None:
            raise UsageError(f"a {kind} run needs a plan")
        if kind == "backup":
            _lock_row(db, "plans", plan.id)
            busy = active_run(db, plan_id=plan.id)
            if busy is not None:
                raise Busy("plan", plan.name, busy.id, busy.status)
        name = plan.name
    owner = migration if kind == "migrate" else plan
    run = m.Run(organisation_id=organisation_id, kind=kind,
                region=getattr(owner, "region", None),
                plan_id=plan.id if plan is not None and kind != "migrate" else None,
                migration_id=migration.id if migration is not None and kind == "migrate"
                else None,
                name=name, trigger=trigger, status="queued", attempt=attempt,
                params=dict(params or {}), queued_at=datetime.now(UTC), result={}, log="")
    db.add(run)
    db.flush()
    return run


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def duration(run: m.Run, now: datetime | None = None) -> float | None:
    """Seconds the run took (so far, while it runs)."""
    if run.started_at is None:
        return None
    end = run.finished_at or (now or datetime.now(UTC) if run.status == "running" else None)
    if end is None:
        return None
    return round((end - run.started_at).total_seconds(), 3)


def destinations_of(run: m.Run) -> list[dict[str, Any]]:
    """[{name, ok, error}] per destination the run wrote to, as the executor recorded."""
    result = run.result or {}
    out = []
    for d in result.get("destination_status") or result.get("destinations") or []:
        if isinstance(d, dict) and d.get("name"):
            out.append({"name": d["name"], "ok": bool(d.get("ok")), "error": d.get("error")})
    return out


def _public_params(run: m.Run) -> dict[str, Any]:
    params = dict(run.params or {})
    target = params.get("target")
    if isinstance(target, str) and is_url(target):
        params["target"] = redacted(target)
    return {k: params[k] for k in ("snapshot", "paths", "target", "overwrite", "dry_run")
            if k in params}


def run_json(run: m.Run) -> dict[str, Any]:
    """The API's Run object; never holds a secret (URL passwords are masked)."""
    result = run.result or {}
    return {
        "id": run.id, "kind": run.kind, "plan_id": run.plan_id,
        "plan": run.name if run.kind != "migrate" else None,
        "migration_id": run.migration_id,
        "migration": run.name if run.kind == "migrate" else None,
        "name": run.name, "trigger": run.trigger, "status": run.status,
        "attempt": run.attempt, "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
        "duration": duration(run), "exit_code": run.exit_code, "bytes_added": run.bytes_added,
        "files": run.files, "snapshot": run.snapshot, "stored_bytes": run.stored_bytes,
        "destinations": destinations_of(run),
        "errors": [str(e) for e in result.get("errors") or []],
        "notes": [str(n) for n in result.get("notes") or []],
        "params": _public_params(run), "cancel_requested": bool(run.cancel_requested),
        "region": run.region, "worker": run.worker,
    }
