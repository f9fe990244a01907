"""One run of a plan: catch up, back up once to every destination, apply retention.

This is the unit of work the CLI runs now and the server's workers will run later, so it
takes a loaded config and a plan name and returns a record; it prints nothing. Steps:

1. open every destination (one that cannot be opened is a failed destination, not a
   failed run) and the repository on them, creating it on the first run;
2. catch up destinations recorded as lagging, or given only keys and config now;
3. back up the plan's sources once, written to every destination at once: the local paths
   into one snapshot, each URL source (a database, a remote host, a bucket) into its own;
   a source that fails fails the run, and never leaves a snapshot claiming it is complete;
4. forget by the plan's retention on each destination (a destination may have its own
   policy), then prune through the mirror: a pack is deleted only when no snapshot kept on
   any destination uses it, so per-destination retention never removes data a kept
   snapshot needs.

Hooks wrap all of it: ``before`` commands first (a failure there means no backup),
``after`` on success, ``failure`` on failure, ``finally`` always; their output goes into
the record.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from multibackup.backends.base import ObjectStore
from multibackup.config.model import Config, Plan, Source
from multibackup.engine.backup import Archiver, find_parent
from multibackup.engine.forget import apply_policy
from multibackup.engine.mirrored import (
    bootstrap_empty,
    catch_up,
    incomplete_copies,
    open_repository,
)
from multibackup.engine.progress import Progress
from multibackup.engine.prune import prune
from multibackup.engine.source_backup import SourceArchiver, find_source_parent
from multibackup.errors import (
    MultibackupError,
    RepositoryNotFound,
    SourceError,
    StoreError,
    UsageError,
)
from multibackup.plans.hooks import run_stage
from multibackup.repository.cache import default_cache_dir
from multibackup.repository.repository import DEFAULT_PACK_SIZE, SNAPSHOTS, Repository
from multibackup.sources.fs import Excludes
from multibackup.store.lag import LagRecord
from multibackup.store.mirror import MirrorStore, UnavailableStore

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 3


@dataclass
class RunRecord:
    """What a plan run did; kept in the plan's history and shown by ``plan status``."""

    plan: str
    started: str
    finished: str = ""
    status: str = "running"  # ok | partial | failed
    exit_code: int = 0
    repository: str | None = None
    created: bool = False
    snapshot: str | None = None  # of the local paths, else of the first source
    summary: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)  # per URL source
    hooks: list[dict[str, Any]] = field(default_factory=list)
    destinations: list[dict[str, Any]] = field(default_factory=list)
    caught_up: dict[str, int] = field(default_factory=dict)  # destination -> objects copied
    forgotten: dict[str, list[str]] = field(default_factory=dict)  # destination -> snapshots
    pruned: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def open_plan_store(config: Config, plan: Plan) -> tuple[ObjectStore, dict[str, str]]:
    """The plan's store (a mirror if it names several destinations) and name by description."""
    stores: list[ObjectStore] = []
    names: dict[str, str] = {}
    for dest in config.destinations_of(plan):
        try:
            store: ObjectStore = dest.open_store()
        except MultibackupError as exc:  # unreachable or misconfigured: the others go on
            store = UnavailableStore(dest.describe(), StoreError(str(exc)))
        stores.append(store)
        names[store.description] = dest.name
    if len(stores) == 1:
        return stores[0], names
    return MirrorStore(stores), names


@contextmanager
def plan_repository(config: Config, name: str, cache_dir: str | None = None,
                    ) -> Iterator[Repository]:
    """The repository a plan writes to, opened for reading (browse, restore); the plan's
    stores are closed when the block ends."""
    plan = config.plan(name)
    store, _names = open_plan_store(config, plan)
    try:
        with open_repository(store, plan.password(),
                             None if store.is_local else cache_dir) as repo:
            yield repo
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def _open_or_create(store: ObjectStore, plan: Plan, password: str, cache_dir: str | None,
                    record: RunRecord) -> Repository:
    try:
        return open_repository(store, password, cache_dir)
    except RepositoryNotFound:
        if isinstance(store, MirrorStore) and store.failures:
            # the repository may exist on the destination we cannot reach: never fork it
            raise
    Repository.init(store, password, compression=plan.compression or 3,
                    pack_size=DEFAULT_PACK_SIZE).close()
    record.created = True
    record.notes.append(f"created the repository on {store.description}")
    return open_repository(store, password, cache_dir)


def run_plan(config: Config, name: str, progress: Progress | None = None,
             on_step: Callable[[str], None] | None = None) -> RunRecord:
    """Run a plan once; errors end up in the record (status 'failed'), never raised."""
    plan = config.plan(name)
    record = RunRecord(plan.name, datetime.now(UTC).isoformat())
    step = on_step or (lambda _text: None)
    hooks = plan.hooks
    blocked = None
    if hooks.before:
        step("running before hooks")
        blocked = run_stage(hooks.before, stage="before", plan=plan.name,
                            timeout=hooks.timeout, log=record.hooks)
    if blocked is not None:
        record.errors.append(f"{blocked}: the backup did not run")
        record.exit_code = EXIT_FATAL
    else:
        _backup_run(config, plan, record, progress, step)
    _settle(record)
    env = {"MULTIBACKUP_STATUS": record.status}
    late: list[str | None] = []
    if record.status != "failed" and hooks.after:
        step("running after hooks")
        late.append(run_stage(hooks.after, stage="after", plan=plan.name, env=env,
                              timeout=hooks.timeout, log=record.hooks))
    if record.status == "failed" and hooks.failure:
        late.append(run_stage(hooks.failure, stage="failure", plan=plan.name, env=env,
                              timeout=hooks.timeout, log=record.hooks, stop_on_error=False))
    if hooks.finally_:
        late.append(run_stage(hooks.finally_, stage="finally", plan=plan.name, env=env,
                              timeout=hooks.timeout, log=record.hooks, stop_on_error=False))
    record.errors += [msg for msg in late if msg is not None]
    _settle(record)
    record.finished = datetime.now(UTC).isoformat()
    return record


def _settle(record: RunRecord) -> None:
    """Exit code and status from what happened so far."""
    if record.exit_code == EXIT_OK and (record.errors or any(
            not d["ok"] for d in record.destinations)):
        record.exit_code = EXIT_PARTIAL
    record.status = {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(record.exit_code, "failed")


def _backup_run(config: Config, plan: Plan, record: RunRecord, progress: Progress | None,
                step: Callable[[str], None]) -> None:
    store: ObjectStore | None = None
    names: dict[str, str] = {}
    try:
        store, names = open_plan_store(config, plan)
        password = plan.password()
        cache_dir = None if store.is_local else (config.defaults.cache_dir
                                                 or default_cache_dir())
        repo = _open_or_create(store, plan, password, cache_dir, record)
        record.repository = repo.config.id
        with repo:
            _run(repo, plan, names, record, progress or Progress(), step)
    except MultibackupError as exc:
        record.errors.append(str(exc))
        record.exit_code = exc.exit_code if exc.exit_code != EXIT_OK else EXIT_FATAL
    except OSError as exc:
        record.errors.append(f"{exc.filename + ': ' if exc.filename else ''}"
                             f"{exc.strerror or exc}")
        record.exit_code = EXIT_FATAL
    finally:
        if isinstance(store, MirrorStore):
            _finish_mirror(store, names, record)
            store.close()
    if any(not s["ok"] for s in record.sources) and record.exit_code == EXIT_OK:
        record.exit_code = EXIT_FATAL  # a database that was not backed up is a failed run


def _run(repo: Repository, plan: Plan, names: dict[str, str], record: RunRecord,
         progress: Progress, step: Callable[[str], None]) -> None:
    mirror = repo.store if isinstance(repo.store, MirrorStore) else None
    lag = LagRecord(repo.config.id)
    bootstrapped: list[str] = []
    if mirror is not None:
        bootstrapped = bootstrap_empty(mirror, repo.cipher)
        for desc in bootstrapped:
            record.notes.append(f"{names.get(desc, desc)} was empty: it got the repository's "
                                "keys and config")
    hostname = plan.host or socket.gethostname()
    with repo.lock(command=f"plan {plan.name}"):
        if mirror is not None and (bootstrapped or any(
                d.description in lag.lagging for d in mirror.live)):
            step("catching up lagging destinations")
            survey = catch_up(repo, lag, also=bootstrapped, progress=progress)
            for c in survey.copies if survey is not None else []:
                if c.copied or c.deleted:
                    record.caught_up[names.get(c.description, c.description)] = c.copied
        step("backing up")
        report = repo.load_index()
        if report.recovered_packs:
            record.notes.append(f"indexed {len(report.recovered_packs)} pack(s) left by an "
                                "interrupted run")
        if plan.sources:
            parent = find_parent(repo, plan.sources, hostname)
            archiver = Archiver(repo, Excludes(tuple(plan.exclude)), progress=progress)
            snap = archiver.run(plan.sources, parent=parent, tags=plan.tags, hostname=hostname)
            record.snapshot = snap.id
            record.summary = archiver.summary.to_json()
            record.errors += [f"source: {e}" for e in archiver.summary.errors]
        for src in plan.remote:
            step(f"backing up {src.name}")
            record.sources.append(_back_up_source(repo, plan, src, hostname, progress, record))
    if plan.retention is None and not plan.retention_per_destination:
        return
    step("applying retention")
    with repo.lock(exclusive=True, command=f"plan {plan.name} retention"):
        removed = _forget(repo, plan, names, lag, record)
        # a prune computed from some copies' snapshots would delete packs that snapshots
        # only a destination that is down or behind holds still need (its own retention
        # keeps more, or it has a backup the others missed)
        incomplete = [names.get(d, d) for d in incomplete_copies(repo, lag)]
        if removed and incomplete:
            record.notes.append(f"prune skipped: {', '.join(incomplete)} "
                                f"{'is' if len(incomplete) == 1 else 'are'} down or behind; "
                                "it runs once every copy is present")
        elif removed:
            record.pruned = prune(repo, progress=progress).to_json()
        if mirror is not None and not mirror.failures:
            # (with a copy down, the listing lacks the snapshots only it holds)
            lag.forget_gone({i.key for i in mirror.list(SNAPSHOTS)})
    lag.save()


def _back_up_source(repo: Repository, plan: Plan, src: Source, hostname: str,
                    progress: Progress, record: RunRecord) -> dict[str, Any]:
    """One URL source into its own snapshot; its failure is recorded, not raised."""
    result: dict[str, Any] = {"name": src.name, "url": src.url, "ok": False, "snapshot": None}
    try:
        source = src.open()
        result["url"] = source.describe()
        try:
            parent = find_source_parent(repo, source.describe(), hostname)
            archiver = SourceArchiver(repo, source, Excludes(tuple(plan.exclude)),
                                      progress=progress)
            snap = archiver.run(parent=parent, tags=plan.tags, hostname=hostname)
        finally:
            source.close()
    except (SourceError, UsageError) as exc:
        result["error"] = str(exc)
        record.errors.append(f"source {src.name}: {exc}")
        return result
    result.update(ok=True, snapshot=snap.id, summary=archiver.summary.to_json())
    record.errors += [f"source {src.name}: {e}" for e in archiver.summary.errors]
    if record.snapshot is None:
        record.snapshot = snap.id
        record.summary = archiver.summary.to_json()
    return result


def _forget(repo: Repository, plan: Plan, names: dict[str, str], lag: LagRecord,
            record: RunRecord) -> int:
    """Apply each destination's policy to the snapshots that destination holds."""
    snaps = {s.id: s for s in repo.snapshots(strict=True)}
    mirror = repo.store if isinstance(repo.store, MirrorStore) else None
    if mirror is None:
        name = next(iter(names.values()), "")
        policy = plan.retention_for(name)
        if policy is None:
            return 0
        gone = [s for d in apply_policy(list(snaps.values()), policy).values() for s in d.remove]
        for s in gone:
            repo.remove_snapshot(s.id)
        record.forgotten[name] = [s.id for s in gone]
        return len(gone)
    total = 0
    for dest in mirror.live:
        name = names.get(dest.description, dest.description)
        policy = plan.retention_for(name)
        if policy is None:
            continue
        try:
            held = [snaps[i.key[len(SNAPSHOTS):]] for i in dest.store.list(SNAPSHOTS)
                    if i.key[len(SNAPSHOTS):] in snaps]
            gone = [s for d in apply_policy(held, policy).values() for s in d.remove]
            for s in gone:
                dest.store.delete(SNAPSHOTS + s.id)
        except StoreError as exc:
            mirror.mark_failed(dest, exc)
            continue
        lag.mark_absent(dest.description, [SNAPSHOTS + s.id for s in gone])
        record.forgotten[name] = [s.id for s in gone]
        total += len(gone)
    return total


def _finish_mirror(mirror: MirrorStore, names: dict[str, str], record: RunRecord) -> None:
    record.destinations = [{**d.to_json(), "name": names.get(d.description, d.description)}
                           for d in mirror.destinations]
    if record.repository and mirror.failures:
        lag = LagRecord(record.repository)
        lag.note_run(mirror)
        lag.save()
        for d in mirror.failures:
            record.notes.append(f"{names.get(d.description, d.description)} failed and is "
                                f"behind the others: {d.failed}")


def elapsed(record: RunRecord) -> float:
    """Seconds the run took."""
    try:
        return (datetime.fromisoformat(record.finished)
                - datetime.fromisoformat(record.started)).total_seconds()
    except ValueError:
        return 0.0
