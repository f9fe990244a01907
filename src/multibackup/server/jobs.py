"""The three kinds of run a worker carries out: back up a plan, restore, migrate.

Each job reads what it needs from the database in a short session (the settings as a
Config with secrets unsealed, in memory only), then works without holding a session open,
and hands back an :class:`Outcome` that the executor writes to the run row. A job never
prints: what it has to say goes to the run's log through ``JobContext.step``.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from multibackup.config.model import Config
from multibackup.engine.migrate import PROBLEMS
from multibackup.engine.progress import Progress
from multibackup.engine.restore import Restorer
from multibackup.engine.source_restore import TargetRestorer
from multibackup.errors import MultibackupError, UsageError
from multibackup.plans.migration import run_migration
from multibackup.plans.runner import RunRecord, plan_repository, run_plan
from multibackup.repository.cache import default_cache_dir
from multibackup.server import models as m
from multibackup.server import service
from multibackup.server.db import Database
from multibackup.server.keyring import Keyring
from multibackup.sources.url import is_url, open_target, redacted
from multibackup.store.lag import LagRecord

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 3
_MAX_PROBLEMS = 100  # bad objects of a migration kept in the run's result


class Cancelled(MultibackupError):
    """Raised inside the engine by the progress counter once a cancel was asked for."""

    exit_code = 130


class CancellableProgress(Progress):
    """A Progress whose every update raises Cancelled once ``cancel`` is set.

    The engine updates progress all the time from every worker thread, so this stops a
    backup, restore or migration within one chunk or object, through the engine's own
    error paths: a backup ends as a failed record without a snapshot, and the packs it
    already wrote are indexed (or pruned) by the next run.
    """

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self.cancel = cancel

    def add(self, nbytes: int = 0, items: int = 0, current: str | None = None) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled on request")
        super().add(nbytes, items, current)


@dataclass
class JobContext:
    """What a job gets from the executor."""

    db: Database
    keyring: Keyring
    run_id: int
    kind: str
    organisation_id: int
    plan_id: int | None
    migration_id: int | None
    params: dict[str, Any]
    progress: CancellableProgress
    step: Callable[[str], None]


@dataclass
class DestinationHealth:
    """How one of the plan's destinations fared, for its row's health columns."""

    name: str
    ok: bool
    error: str | None = None
    lagging: bool = False
    stored_bytes: int | None = None
    objects: int | None = None


@dataclass
class Outcome:
    """A finished job, as the run row will store it."""

    status: str  # ok | partial | failed (the executor turns a cancelled one into cancelled)
    exit_code: int
    result: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None
    bytes_added: int | None = None
    files: int | None = None
    stored_bytes: int | None = None
    destinations: list[DestinationHealth] = field(default_factory=list)

    @classmethod
    def failed(cls, error: str, exit_code: int = EXIT_FATAL) -> Outcome:
        return cls("failed", exit_code, {"errors": [error], "notes": []})


def _status(exit_code: int) -> str:
    return {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(exit_code, "failed")


def run_job(ctx: JobContext) -> Outcome:
    """Carry out the run; engine errors become a failed Outcome, never an exception."""
    job = {"backup": backup_job, "restore": restore_job, "migrate": migrate_job}.get(ctx.kind)
    if job is None:
        return Outcome.failed(f"unknown run kind {ctx.kind!r}")
    try:
        return job(ctx)
    except MultibackupError as exc:
        return Outcome.failed(str(exc), exc.exit_code or EXIT_FATAL)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return Outcome.failed(f"{where}{exc.strerror or exc}")


def _plan_config(ctx: JobContext) -> tuple[Config, str]:
    with ctx.db.session() as s:
        plan = s.get(m.Plan, ctx.plan_id) if ctx.plan_id is not None else None
        if plan is None:
            raise UsageError("the plan of this run was deleted")
        return service.build_config(s, ctx.keyring, ctx.organisation_id, plan=plan), plan.name


# -- backup ------------------------------------------------------------------------------


def backup_job(ctx: JobContext) -> Outcome:
    """run_plan once, then measure each healthy destination's repository."""
    config, name = _plan_config(ctx)
    record = run_plan(config, name, ctx.progress, ctx.step)
    summary = record.summary or {}
    # a cancelled run says nothing about its destinations
    cancelled = ctx.progress.cancel.is_set() and record.status != "ok"
    health = [] if cancelled else _destination_health(config, name, record)
    for h in health:
        if h.ok:
            h.stored_bytes, h.objects = _measure(config, h.name)
    stored = next((h.stored_bytes for h in health if h.ok and h.stored_bytes is not None), None)
    result = record.to_json()
    result["destination_status"] = [{"name": h.name, "ok": h.ok, "error": h.error}
                                    for h in health]
    return Outcome(record.status, record.exit_code, result, snapshot=record.snapshot,
                   bytes_added=summary.get("data_added"),
                   files=summary.get("total_files"), stored_bytes=stored,
                   destinations=health)


def _destination_health(config: Config, name: str, record: RunRecord,
                        ) -> list[DestinationHealth]:
    """Per destination: did this run reach it, and is it behind the others?

    A mirrored run reports each destination itself; a single destination is healthy when
    the run made a snapshot or did not fail, and is not blamed when a before hook stopped
    the run before it was opened.
    """
    plan = config.plan(name)
    if record.destinations:
        lagging: set[str] = set()
        if record.repository:
            lagging = set(LagRecord(record.repository).lagging)
        return [DestinationHealth(d["name"], bool(d.get("ok")), d.get("error"),
                                  d.get("destination") in lagging or not d.get("ok"))
                for d in record.destinations]
    if not plan.destinations:
        return []
    dest = plan.destinations[0]
    if record.snapshot is not None or record.status != "failed":
        return [DestinationHealth(dest, True)]
    if record.repository is None and any(e.endswith("the backup did not run")
                                         for e in record.errors):
        return []
    return [DestinationHealth(dest, False, record.errors[0] if record.errors else "failed")]


def _measure(config: Config, name: str) -> tuple[int | None, int | None]:
    """(bytes, objects) stored at a destination: one listing, cheap for a pack repository."""
    try:
        store = config.destination(name).open_store()
    except MultibackupError:
        return None, None
    try:
        size = count = 0
        for info in store.list():
            size += info.size
            count += 1
        return size, count
    except (MultibackupError, OSError):
        return None, None
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


# -- restore -----------------------------------------------------------------------------


def restore_job(ctx: JobContext) -> Outcome:
    """Restore a snapshot of the plan's repository to a server path or a URL target."""
    params = ctx.params
    target = params.get("target")
    if not isinstance(target, str) or not target:
        raise UsageError("a restore needs a target: an absolute path or a URL")
    url = is_url(target)
    if not url and not os.path.isabs(target):
        raise UsageError(f"restore target {target!r} is not an absolute path")
    snapshot = str(params.get("snapshot") or "latest")
    paths = [str(p) for p in params.get("paths") or []]
    overwrite = bool(params.get("overwrite"))
    config, name = _plan_config(ctx)
    shown = redacted(target) if url else target
    saved = params.get("target_source")
    cache_dir = config.defaults.cache_dir or default_cache_dir()
    with plan_repository(config, name, cache_dir) as repo, repo.lock(command="restore"):
        repo.load_index()
        snap = repo.find_snapshot(snapshot)
        ctx.step(f"restoring snapshot {snap.short_id} of plan {name!r} to {shown}")
        if url:
            dest = (config.sources[saved].open_target() if saved in config.sources
                    else open_target(target))
            try:
                if overwrite and hasattr(dest, "overwrite"):
                    dest.overwrite = True
                summary = TargetRestorer(repo, snap, dest, includes=paths,
                                         progress=ctx.progress).run()
            finally:
                dest.close()
        else:
            summary = Restorer(repo, snap, target, includes=paths, overwrite=overwrite,
                               progress=ctx.progress).run()
    result: dict[str, Any] = {**summary.to_json(), "snapshot": snap.id, "target": shown,
                              "notes": [f"restored {summary.files} files, {summary.dirs} "
                                        f"dirs, {summary.bytes} bytes"]}
    if not summary.errors:
        code = EXIT_OK
    else:
        code = EXIT_PARTIAL if summary.files or summary.dirs else EXIT_FATAL
    return Outcome(_status(code), code, result, snapshot=snap.id,
                   files=summary.files, bytes_added=summary.bytes)


# -- migrate -----------------------------------------------------------------------------


def migrate_job(ctx: JobContext) -> Outcome:
    """Run the saved migration; the result keeps its counts and the objects that failed."""
    with ctx.db.session() as s:
        row = s.get(m.Migration, ctx.migration_id) if ctx.migration_id is not None else None
        if row is None:
            raise UsageError("the migration of this run was deleted")
        config = service.build_config(s, ctx.keyring, ctx.organisation_id, migration=row)
        name = row.name
    saved = config.migration(name)
    ctx.step(f"migrating {saved.source} -> {saved.destination} "
             f"({saved.options.get('mode', 'copy')})")
    report = run_migration(config, name, ctx.progress, dry_run=bool(ctx.params.get("dry_run")))
    # the run's counts and its first problems; every object's result stays out of memory
    doc = report.head()
    counts = ", ".join(f"{n} {status}" for status, n in doc["counts"].items()) or "no objects"
    bad = [{"key": o.key, "status": o.status, "size": o.size, "reason": o.reason,
            "server_side": o.server_side}
           for o in itertools.islice(report.problems(), _MAX_PROBLEMS)]
    n_bad = sum(n for status, n in doc["counts"].items() if status in PROBLEMS)
    n_objects = sum(doc["counts"].values())
    ok = doc["ok"]
    report.close()
    doc["problems"] = bad
    doc["errors"] = list(report.errors) + [
        f"{o['key']}: {o['status']}" + (f": {o['reason']}" if o["reason"] else "")
        for o in bad[:20]]
    if n_bad > 20:
        doc["errors"].append(f"... and {n_bad - 20} more objects")
    doc["notes"] = [f"{report.mode}{' (dry run)' if report.dry_run else ''} "
                    f"{report.source} -> {report.destination}: {counts}; "
                    f"{report.bytes_transferred} bytes transferred in {report.elapsed:.1f}s"]
    if ok:
        code = EXIT_OK
    elif report.errors or n_bad == n_objects:
        code = EXIT_FATAL
    else:
        code = EXIT_PARTIAL
    copied = doc["counts"].get("copied", 0)
    return Outcome(_status(code), code, doc, bytes_added=report.bytes_transferred,
                   files=copied)
