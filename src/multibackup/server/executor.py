"""Who carries out queued runs: the RunExecutor interface and the in-process LocalExecutor.

The API and the scheduler only insert queued rows and call ``submit``; the executor claims
a row (queued → running in one conditional UPDATE, so two workers never take the same
run), runs the job in a bounded thread pool, keeps the run's log in the database as it
goes (the dashboard shows it live), and writes the outcome, the destinations' health,
metrics and alerts at the end. Another implementation (worker processes, other regions)
only has to do the same with the same rows.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import false, func, or_, select, update

from multibackup.errors import MultibackupError
from multibackup.server import models as m
from multibackup.server.db import Database
from multibackup.server.jobs import (
    CancellableProgress,
    DestinationHealth,
    JobContext,
    Outcome,
    run_job,
)
from multibackup.server.keyring import Keyring
from multibackup.server.queue import duration, run_json
from multibackup.server.settings import ServerSettings

if TYPE_CHECKING:
    from multibackup.server.metrics import Metrics

log = logging.getLogger("multibackup.server.executor")

#: statuses an alert channel's on_failure covers
ALERT_FAILURE = ("failed", "partial", "interrupted")
_WATCH_SECONDS = 2.0  # how often running jobs' logs are saved and cancel flags re-read
_PROGRESS_SECONDS = 30.0  # how often a long job's progress is written to its log
_HOOK_LINES = 40  # last lines of each hook's output kept in the log


class RunExecutor(Protocol):
    """Carries out queued runs; the API and the scheduler talk to it only through this."""

    def submit(self, run_id: int) -> None:
        """Take the queued run with this id (after its row is committed)."""

    def cancel(self, run_id: int) -> bool:
        """Cancel a queued run now or ask a running one to stop; False if it has ended."""

    def shutdown(self, wait: bool = True) -> None:
        """Take no more runs; with ``wait``, let the running ones finish."""


def stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")


class RunLog:
    """A run's log lines, saved to ``Run.log`` on every step (and by the watcher)."""

    def __init__(self, db: Database, run_id: int, initial: str = "") -> None:
        self.db = db
        self.run_id = run_id
        self._lines: list[str] = [initial.rstrip("\n")] if initial.strip() else []
        self._lock = threading.Lock()
        self._dirty = False

    def line(self, text: str, flush: bool = True) -> None:
        with self._lock:
            self._lines.append(f"{stamp()} {text}")
            self._dirty = True
        if flush:
            self.flush()

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines) + ("\n" if self._lines else "")

    def flush(self) -> None:
        """Write the log to the row; a database hiccup never stops the job."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            body = "\n".join(self._lines) + "\n"
        try:
            with self.db.session() as s:
                s.execute(update(m.Run).where(m.Run.id == self.run_id).values(log=body))
        except Exception as exc:  # noqa: BLE001 - logged; the final write retries
            self._dirty = True
            log.warning("run %s: cannot save the log: %s", self.run_id, exc)


class LocalExecutor:
    """Runs jobs in this process, at most ``settings.workers`` at once."""

    def __init__(self, db: Database, keyring: Keyring, settings: ServerSettings,
                 metrics: Metrics | None = None) -> None:
        self.db = db
        self.keyring = keyring
        self.settings = settings
        self.metrics = metrics
        place = f"{settings.role}:{settings.region}" if settings.region else settings.role
        self.name = f"{place}:{socket.gethostname()}:{os.getpid()}"
        self._pool = ThreadPoolExecutor(max(1, settings.workers), thread_name_prefix="run")
        self._lock = threading.Lock()
        self._cancels: dict[int, threading.Event] = {}
        self._logs: dict[int, RunLog] = {}
        self._progress: dict[int, tuple[CancellableProgress, list[float]]] = {}
        self._futures: dict[int, Future[None]] = {}
        self._closed = False
        #: look for queued runs in the database too (a regional worker must; the server's
        #: own runs are handed over by submit, but a region it serves may be queued by
        #: another server process)
        self.polling = True
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="run-watcher", daemon=True)
        self._watcher.start()

    # -- interface ---------------------------------------------------------------------

    def submit(self, run_id: int) -> None:
        with self._lock:
            if self._closed or run_id in self._futures:
                return
            future = self._pool.submit(self._execute, run_id)
            self._futures[run_id] = future
        future.add_done_callback(lambda _f: self._forget(run_id))
        self.update_gauges()

    def cancel(self, run_id: int) -> bool:
        now = datetime.now(UTC)
        with self.db.session() as s:
            dropped = s.execute(
                update(m.Run).where(m.Run.id == run_id, m.Run.status == "queued")
                .values(status="cancelled", finished_at=now, cancel_requested=True,
                        log=m.Run.log + f"{stamp(now)} cancelled before it started\n")
            ).rowcount
            asked = 0 if dropped else s.execute(
                update(m.Run).where(m.Run.id == run_id, m.Run.status == "running")
                .values(cancel_requested=True)).rowcount
        with self._lock:
            event = self._cancels.get(run_id)
            run_log = self._logs.get(run_id)
        if asked and event is not None:
            event.set()
            if run_log is not None:
                run_log.line("cancel requested: stopping")
        self.update_gauges()
        return bool(dropped or asked)

    def shutdown(self, wait: bool = True) -> None:
        """Queued runs not yet started stay queued in the database (the next start takes
        them); running ones finish when ``wait``, else the next start finds them
        interrupted."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self._stop.set()
        if wait:
            self._watcher.join(timeout=10)

    def running(self) -> list[int]:
        """Ids of the runs this executor is carrying out now."""
        with self._lock:
            return sorted(self._cancels)

    # -- work --------------------------------------------------------------------------

    def _forget(self, run_id: int) -> None:
        with self._lock:
            self._futures.pop(run_id, None)

    def serves(self) -> Any:
        """The SQL condition for runs this executor may take: its region's, and for the
        server the runs of plans placed in no region."""
        mine = m.Run.region == self.settings.region if self.settings.region else None
        unplaced = m.Run.region.is_(None) if self.settings.serves_unplaced else None
        if mine is not None and unplaced is not None:
            return or_(mine, unplaced)
        if mine is not None:
            return mine
        return unplaced if unplaced is not None else false()

    def poll(self) -> list[int]:
        """Submit the queued runs this executor serves (others, e.g. the server, queue
        them in the shared database); returns their ids."""
        with self.db.session() as s:
            ids = list(s.scalars(select(m.Run.id).where(m.Run.status == "queued", self.serves())
                                 .order_by(m.Run.id).limit(100)))
        for run_id in ids:
            self.submit(run_id)
        return ids

    def _claim(self, run_id: int) -> m.Run | None:
        """Move the run from queued to running; None if someone else took or cancelled it,
        or it belongs to another region."""
        worker = f"{self.name}:{threading.current_thread().name}"
        now = datetime.now(UTC)
        with self.db.session() as s:
            taken = s.execute(
                update(m.Run).where(m.Run.id == run_id, m.Run.status == "queued",
                                    self.serves())
                .values(status="running", started_at=now, heartbeat_at=now, worker=worker)
            ).rowcount
            if not taken:
                return None
            run = s.get(m.Run, run_id)
            assert run is not None
            s.expunge(run)
            return run

    def _execute(self, run_id: int) -> None:
        try:
            run = self._claim(run_id)
        except Exception:  # noqa: BLE001 - the database went away: the row stays queued
            log.exception("run %s: cannot claim it", run_id)
            return
        if run is None:
            return
        event = threading.Event()
        run_log = RunLog(self.db, run_id, run.log or "")
        with self._lock:
            self._cancels[run_id] = event
            self._logs[run_id] = run_log
        self.update_gauges()
        what = f"{run.kind} of {'migration' if run.kind == 'migrate' else 'plan'} {run.name!r}"
        run_log.line(f"started {what} (trigger {run.trigger}, attempt {run.attempt}) "
                     f"on {self.name}")
        progress = CancellableProgress(event)
        with self._lock:
            self._progress[run_id] = (progress, [time.monotonic(), 0.0])
        ctx = JobContext(self.db, self.keyring, run_id, run.kind, run.organisation_id,
                         run.plan_id, run.migration_id, dict(run.params or {}),
                         progress, run_log.line)
        try:
            outcome = run_job(ctx)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the run "running"
            # type and where it happened, never the trace's text (it may quote a secret);
            # MULTIBACKUP_DEBUG=1 adds the error message (as on the command line)
            where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error("run %s failed with an internal error: %s at %s", run_id,
                      type(exc).__name__,
                      f"{where.filename}:{where.lineno}" if where else "?",
                      exc_info=bool(os.environ.get("MULTIBACKUP_DEBUG")))
            outcome = Outcome.failed(f"internal error: {type(exc).__name__}: "
                                     + " ".join(str(exc).split())[:300])
        try:
            self._finish(run_id, outcome, event.is_set(), run_log)
        except Exception:  # noqa: BLE001
            log.exception("run %s: cannot record its outcome", run_id)
        finally:
            with self._lock:
                self._cancels.pop(run_id, None)
                self._logs.pop(run_id, None)
                self._progress.pop(run_id, None)
            self.update_gauges()

    def _finish(self, run_id: int, outcome: Outcome, cancelled: bool, run_log: RunLog) -> None:
        status = outcome.status
        result = outcome.result
        notes = [str(n) for n in result.get("notes") or []]
        errors = [str(e) for e in result.get("errors") or []]
        if cancelled:
            if status == "ok":
                notes.append("the cancel came too late: the run had already finished")
            else:
                status = "cancelled"
        for hook in result.get("hooks") or []:
            run_log.line(f"{hook.get('stage')} hook {hook.get('command')!r}: "
                         + (hook.get("error") or f"exit {hook.get('exit_code')}"), flush=False)
            output = str(hook.get("output") or "").splitlines()
            for text in output[-_HOOK_LINES:]:
                run_log.line(f"  | {text}", flush=False)
        for note in notes:
            run_log.line(f"note: {note}", flush=False)
        for error in errors:
            run_log.line(f"error: {error}", flush=False)
        now = datetime.now(UTC)
        with self.db.session() as s:
            run = s.get(m.Run, run_id)
            if run is None:
                return
            run_log.line(f"finished: {status} (exit {outcome.exit_code}) in "
                         f"{(now - run.started_at).total_seconds() if run.started_at else 0:.1f}"
                         " s", flush=False)
            result = {**result, "notes": notes, "errors": errors}
            run.status = status
            run.finished_at = now
            run.exit_code = outcome.exit_code
            run.result = result
            run.snapshot = outcome.snapshot
            run.bytes_added = outcome.bytes_added
            run.files = outcome.files
            run.stored_bytes = outcome.stored_bytes
            run.log = run_log.text()
            org = s.get(m.Organisation, run.organisation_id)
            org_name = org.name if org is not None else str(run.organisation_id)
            doc = run_json(run)
            seconds = duration(run) or 0.0
            kind, name = run.kind, run.name
            healths = self._record_health(s, run.organisation_id, outcome.destinations, now)
        if self.metrics is not None:
            try:
                self.metrics.observe_run(org_name, name, kind, status, seconds,
                                         outcome.bytes_added or 0)
                for h, row in healths:
                    success = row["last_success"]
                    self.metrics.set_destination(
                        org_name, h.name, row["stored_bytes"] or 0,
                        success.timestamp() if success is not None else None, row["lagging"])
            except Exception:  # noqa: BLE001 - metrics never fail a run
                log.exception("run %s: metrics", run_id)
        notify_run(self.db, self.keyring, run_id, doc)

    def _record_health(self, s: Any, org: int, healths: list[DestinationHealth],
                       now: datetime) -> list[tuple[DestinationHealth, dict[str, Any]]]:
        """Update the plan's destination rows from the run; returns what was written."""
        out = []
        for h in healths:
            row = s.scalar(select(m.Destination).where(m.Destination.organisation_id == org,
                                                       m.Destination.name == h.name))
            if row is None:
                continue
            if h.ok:
                row.last_success = now
                if h.stored_bytes is not None:
                    row.stored_bytes = h.stored_bytes
                    row.objects = h.objects
            else:
                row.last_failure = now
                row.last_error = h.error
            row.lagging = h.lagging
            out.append((h, {"stored_bytes": row.stored_bytes, "last_success": row.last_success,
                            "lagging": row.lagging}))
        return out

    # -- background --------------------------------------------------------------------

    def _watch(self) -> None:
        """Save running jobs' logs and pick up cancels asked through the database (by
        another process of the server)."""
        while not self._stop.wait(_WATCH_SECONDS):
            with self._lock:
                events = dict(self._cancels)
                logs = dict(self._logs)
                progress = dict(self._progress)
            now = time.monotonic()
            for run_id, (counters, marks) in progress.items():
                run_log = logs.get(run_id)
                if run_log is not None and now - marks[0] >= _PROGRESS_SECONDS \
                        and counters.done_bytes + counters.done_items != marks[1]:
                    marks[0], marks[1] = now, counters.done_bytes + counters.done_items
                    run_log.line(progress_line(counters), flush=False)
            for run_log in logs.values():
                run_log.flush()
            if self.polling:
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - the database is away: try next time
                    log.warning("cannot look for queued runs", exc_info=True)
            if not events:
                continue
            try:
                with self.db.session() as s:
                    s.execute(update(m.Run).where(m.Run.id.in_(list(events)),
                                                  m.Run.status == "running")
                              .values(heartbeat_at=datetime.now(UTC))
                              .execution_options(synchronize_session=False))
            except Exception:  # noqa: BLE001
                log.warning("cannot record the runs' heartbeat", exc_info=True)
            try:
                with self.db.session() as s:
                    asked = s.scalars(select(m.Run.id).where(
                        m.Run.id.in_(list(events)), m.Run.cancel_requested.is_(True))).all()
            except Exception:  # noqa: BLE001
                continue
            for run_id in asked:
                if not events[run_id].is_set():
                    events[run_id].set()

    def update_gauges(self) -> None:
        """Set the running and queued gauges from the database (all processes' runs)."""
        if self.metrics is None:
            return
        try:
            with self.db.session() as s:
                counts = dict(s.execute(select(m.Run.status, func.count()).where(
                    m.Run.status.in_(("queued", "running"))).group_by(m.Run.status)).all())
            self.metrics.set_running(counts.get("running", 0))
            self.metrics.set_queued(counts.get("queued", 0))
        except Exception:  # noqa: BLE001 - metrics never fail a run
            log.exception("metrics gauges")


def progress_line(p: Any) -> str:
    """'progress: 1.2 GiB of 3.0 GiB, 120 of 400 items, now at /x' (totals when known)."""
    def size(n: int) -> str:
        value, unit = float(n), "B"
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if value < 1024 or unit == "TiB":
                break
            value /= 1024
        return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"

    text = f"progress: {size(p.done_bytes)}"
    if p.total_bytes:
        text += f" of {size(p.total_bytes)}"
    text += f", {p.done_items}" + (f" of {p.total_items}" if p.total_items else "") + " items"
    return text + (f", now at {p.current}" if p.current else "")


def channels_for(status: str, channel: m.AlertChannel) -> bool:
    """Does this channel want to hear about a run that ended with ``status``?"""
    if status == "ok":
        return bool(channel.on_success)
    return bool(channel.on_failure) and status in ALERT_FAILURE


def notify_run(db: Database, keyring: Keyring, run_id: int,
               doc: dict[str, Any] | None = None) -> None:
    """Send the run's alert to the organisation's channels that want it; a failing channel
    is recorded on the channel and never changes the run."""
    try:
        with db.session() as s:
            run = s.get(m.Run, run_id)
            if run is None:
                return
            doc = doc or run_json(run)
            targets = [(c.id, c.url_sealed) for c in s.scalars(select(m.AlertChannel).where(
                m.AlertChannel.organisation_id == run.organisation_id))
                if channels_for(run.status, c)]
    except Exception:  # noqa: BLE001
        log.exception("run %s: cannot read the alert channels", run_id)
        return
    if not targets:
        return
    from multibackup.server import alerts  # Apprise is loaded only when a channel wants it

    title, body = alerts.run_message(doc)
    for channel_id, sealed in targets:
        try:
            url = keyring.open(sealed)["url"]
            answers = alerts.send([url], title, body)
            error = next((a.get("error") or "not delivered" for a in answers if not a["ok"]),
                         None)
        except MultibackupError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - an alert library error is one line
            error = " ".join(str(exc).split())[:300] or type(exc).__name__
        try:
            with db.session() as s:
                channel = s.get(m.AlertChannel, channel_id)
                if channel is not None:
                    channel.last_error = error
                    if error is None:
                        channel.last_sent_at = datetime.now(UTC)
        except Exception:  # noqa: BLE001
            log.exception("alert channel %s", channel_id)
