"""Fires schedules, catches up what a stopped server missed, recovers cut-off runs.

Each scheduled plan or migration keeps its next fire time in its row (``next_run_at``,
computed in the row's time zone), so a restart, a second server process reading the same
database, or the dashboard all see the same answer. When the clock passes it the run is
queued and the next fire is computed from *now*: a server that was paused for a week
fires once, not once per missed day. A schedule change clears ``next_run_at`` (the API
does that) and the next tick computes it afresh, so editing a schedule never fires at once.

At start, :meth:`Scheduler.recover` marks runs a stopped server left ``running`` as
``interrupted`` (and retries each once), hands the ``queued`` ones to the executor again,
and gives each plan whose fire time passed while the server was down one catch-up run.
The clock is a parameter of :meth:`tick` and :meth:`recover` so tests drive it.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from multibackup.config.schedule import parse_schedule
from multibackup.errors import MultibackupError
from multibackup.server import models as m
from multibackup.server.db import Database
from multibackup.server.executor import RunExecutor, notify_run, stamp
from multibackup.server.keyring import Keyring
from multibackup.server.queue import Busy, enqueue_run, run_json
from multibackup.server.settings import ServerSettings
from multibackup.server.timing import next_fire

log = logging.getLogger("multibackup.server.scheduler")

SUMMARY_KEY = "daily_summary_date"
#: a fire missed by less than this at start is a late tick, not a missed run: it runs as
#: scheduled even when catch-up is off (a quick restart must not skip a backup)
_GRACE = timedelta(seconds=60)
_SCHEDULED: tuple[tuple[type[Any], str], ...] = ((m.Plan, "backup"), (m.Migration, "migrate"))


def _cron(row: Any) -> str:
    return parse_schedule(row.schedule).cron


def _set_next(s: Session, model: type[Any], row_id: int, when: datetime | None) -> None:
    """Store a fire time without touching the row's updated_at (it is not a user edit)."""
    s.execute(update(model).where(model.id == row_id)
              .values(next_run_at=when, updated_at=model.updated_at)
              .execution_options(synchronize_session=False))


def _enqueue(s: Session, row: Any, kind: str, trigger: str) -> int | None:
    """Queue a scheduled run of the row; None (logged) if its previous run still holds it."""
    target = {"migration": row} if kind == "migrate" else {"plan": row}
    try:  # Busy is raised before anything is written: the session goes on
        run = enqueue_run(s, kind=kind, organisation_id=row.organisation_id,
                          trigger=trigger, **target)
    except Busy as exc:
        log.info("skipping the %s fire of %s: %s", trigger, row.name, exc)
        return None
    return run.id


class Scheduler:
    """The clock of the server: see the module's description."""

    def __init__(self, db: Database, executor: RunExecutor, settings: ServerSettings, *,
                 keyring: Keyring | None = None) -> None:
        self.db = db
        self.executor = executor
        self.settings = settings
        #: opens alert URLs (daily summary, interrupted runs); the executor's by default
        self.keyring: Keyring | None = keyring or getattr(executor, "keyring", None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Recover, then tick every ``settings.tick_seconds`` in a daemon thread."""
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the clock
                log.exception("scheduler tick failed")
            if self._stop.wait(self.settings.tick_seconds):
                return

    # -- start -------------------------------------------------------------------------

    def recover(self, now: datetime | None = None) -> None:
        """Settle what a stopped server left behind (see the module's description)."""
        now = now or datetime.now(UTC)
        interrupted = self._interrupt_abandoned(now, at_start=True)
        with self.db.session() as s:
            for model, kind in _SCHEDULED:
                rows = s.scalars(select(model).where(
                    model.enabled.is_(True), model.schedule.is_not(None),
                    model.next_run_at.is_not(None), model.next_run_at <= now)).all()
                for row in rows:
                    late = now - row.next_run_at
                    if late <= _GRACE:
                        continue  # the first tick fires it as scheduled
                    if row.catch_up and self.settings.catch_up_missed:
                        if _enqueue(s, row, kind, "catch-up") is not None:
                            log.info("%s %s missed its run at %s: catching up", kind, row.name,
                                     row.next_run_at.isoformat())
                    else:
                        log.info("%s %s missed its run at %s (catch-up is off)", kind,
                                 row.name, row.next_run_at.isoformat())
                    self._reschedule(s, model, row, now)
        self._submit_queued()
        self._alert(interrupted)

    def _interrupt_abandoned(self, now: datetime, at_start: bool) -> list[int]:
        """Mark ``interrupted`` (and retry once) the runs nobody is carrying out any more:
        at the server's start, those its previous process was running; at any time, those
        whose worker stopped sending heartbeats (a regional worker killed or cut off)."""
        interrupted: list[int] = []
        limit = now - timedelta(seconds=self.settings.worker_timeout)
        with self.db.session() as s:
            for run in s.scalars(select(m.Run).where(m.Run.status == "running")).all():
                ours = not run.worker or run.worker.startswith(f"{self.settings.role}:")
                stale = run.heartbeat_at is None or run.heartbeat_at < limit
                if at_start and ours:
                    message = "interrupted: the server stopped while this run was running"
                elif stale:
                    message = (f"interrupted: its worker ({run.worker or 'unknown'}) stopped "
                               "answering")
                else:
                    continue
                interrupted.append(run.id)
                run.status = "interrupted"
                run.finished_at = now
                run.log = (run.log or "") + f"{stamp(now)} {message}\n"
                run.result = {**(run.result or {}),
                              "errors": [*(run.result or {}).get("errors", []), message]}
                self._retry(s, run)
        return interrupted

    def _alert(self, interrupted: list[int]) -> None:
        if interrupted and self.keyring is not None:
            keyring = self.keyring
            threading.Thread(target=lambda: [notify_run(self.db, keyring, i)
                                             for i in interrupted],
                             name="alerts", daemon=True).start()

    def _retry(self, s: Session, run: m.Run) -> None:
        """Queue an interrupted backup or migration once more (attempt 2)."""
        if not self.settings.retry_interrupted or run.attempt != 1 or run.kind == "restore":
            return
        plan = s.get(m.Plan, run.plan_id) if run.plan_id is not None else None
        migration = (s.get(m.Migration, run.migration_id) if run.migration_id is not None
                     else None)
        if plan is None and migration is None:
            return
        try:
            new = enqueue_run(s, kind=run.kind, organisation_id=run.organisation_id,
                              plan=plan, migration=migration, trigger="retry",
                              params=dict(run.params or {}), attempt=run.attempt + 1)
        except Busy as exc:
            log.info("not retrying run %s: %s", run.id, exc)
            return
        run.log += f"{stamp()} retried as run {new.id}\n"

    def _submit_queued(self) -> None:
        with self.db.session() as s:
            queued = s.scalars(select(m.Run.id).where(m.Run.status == "queued")
                               .order_by(m.Run.id)).all()
        for run_id in queued:
            self.executor.submit(run_id)

    def _reschedule(self, s: Session, model: type[Any], row: Any, now: datetime) -> None:
        try:
            when: datetime | None = next_fire(_cron(row), row.timezone or "UTC", now)
        except ValueError as exc:
            log.warning("%s %s: %s", model.__tablename__, row.name, exc)
            when = None
        _set_next(s, model, row.id, when)

    # -- every tick --------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> list[int]:
        """Queue the runs due at ``now``; returns their ids (already submitted)."""
        now = now or datetime.now(UTC)
        fired: list[int] = []
        with self.db.session() as s:
            for model, kind in _SCHEDULED:
                # a plan without a schedule (or disabled) shows no next run
                s.execute(update(model).where(
                    (model.enabled.is_(False)) | (model.schedule.is_(None)),
                    model.next_run_at.is_not(None))
                    .values(next_run_at=None, updated_at=model.updated_at)
                    .execution_options(synchronize_session=False))
                rows = s.scalars(select(model).where(model.enabled.is_(True),
                                                     model.schedule.is_not(None))).all()
                for row in rows:
                    if row.next_run_at is not None and now >= row.next_run_at:
                        run_id = _enqueue(s, row, kind, "schedule")
                        if run_id is not None:
                            fired.append(run_id)
                    if row.next_run_at is None or now >= row.next_run_at:
                        self._reschedule(s, model, row, now)
        for run_id in fired:
            self.executor.submit(run_id)
        try:
            self._alert(self._interrupt_abandoned(now, at_start=False))
        except Exception:  # noqa: BLE001 - the database is away: the next tick tries again
            log.exception("looking for abandoned runs")
        try:
            self.daily_summary(now)
        except Exception:  # noqa: BLE001 - a summary problem never stops the schedules
            log.exception("daily summary")
        return fired

    # -- daily summary -----------------------------------------------------------------

    def daily_summary(self, now: datetime | None = None) -> bool:
        """Send the day's summary once a day from ``settings.summary_hour`` UTC on; True
        if it was due (and sent to whichever channels want it)."""
        now = now or datetime.now(UTC)
        if now.hour < self.settings.summary_hour or self.keyring is None:
            return False
        today = now.date().isoformat()
        since = now - timedelta(hours=24)
        with self.db.session() as s:
            state = s.get(m.ServerState, SUMMARY_KEY)
            if state is not None and state.value >= today:
                return False
            if state is None:
                s.add(m.ServerState(key=SUMMARY_KEY, value=today))
            else:
                state.value = today
            by_org: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
            for channel in s.scalars(select(m.AlertChannel).where(
                    m.AlertChannel.daily_summary.is_(True))):
                by_org[channel.organisation_id].append((channel.id, channel.url_sealed))
            runs = {org: [run_json(r) for r in s.scalars(
                select(m.Run).where(m.Run.organisation_id == org, m.Run.finished_at >= since)
                .order_by(m.Run.finished_at))] for org in by_org}
        if not by_org:
            return True
        from multibackup.server import alerts  # Apprise only when a channel wants it

        for org, channels in by_org.items():
            title, body = alerts.summary_message(runs[org], since)
            for channel_id, sealed in channels:
                self._send(channel_id, sealed, title, body, alerts)
        return True

    def _send(self, channel_id: int, sealed: bytes, title: str, body: str,
              alerts: Any) -> None:
        assert self.keyring is not None
        try:
            answers = alerts.send([self.keyring.open(sealed)["url"]], title, body)
            error = next((a.get("error") or "not delivered" for a in answers if not a["ok"]),
                         None)
        except MultibackupError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one line, never a trace
            error = " ".join(str(exc).split())[:300] or type(exc).__name__
        with self.db.session() as s:
            channel = s.get(m.AlertChannel, channel_id)
            if channel is not None:
                channel.last_error = error
                if error is None:
                    channel.last_sent_at = datetime.now(UTC)
