"""The scheduler with its clock driven by the test: fires, catch-up, recovery, summaries.

Runs go through the real LocalExecutor into real local-directory destinations; only the
scheduler's notion of "now" is given explicitly (tick(now), recover(now)).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from servers_mail import WebhookReceiver, webhook_receiver  # noqa: F401 - the fixture
from sqlalchemy import func, select
from test_server_jobs import Server, make_tree

from multibackup.server import models as m
from multibackup.server.scheduler import SUMMARY_KEY, Scheduler

T0 = datetime(2026, 3, 2, 10, 20, tzinfo=UTC)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("MULTIBACKUP_STATE_DIR", str(tmp_path / "state"))
    srv = Server(tmp_path, summary_hour=7)
    srv.destination("disk", tmp_path / "repo")
    make_tree(tmp_path / "src")
    yield srv
    srv.close()


def plan(server: Server, name: str, **cols: Any) -> int:
    cols.setdefault("schedule", "hourly")
    return server.plan(name, [str(server.tmp / "src")], ["disk"], **cols)


def row(server: Server, plan_id: int) -> m.Plan:
    with server.db.session() as s:
        found = s.get(m.Plan, plan_id)
        assert found is not None
        return found


def runs_of(server: Server, plan_id: int) -> list[dict[str, Any]]:
    with server.db.session() as s:
        ids = s.scalars(select(m.Run.id).where(m.Run.plan_id == plan_id)
                        .order_by(m.Run.id)).all()
    return [server.run(i) for i in ids]


def test_scheduled_plan_fires_once_when_due_and_moves_on(server: Server) -> None:
    plan_id = plan(server, "web")
    sched = Scheduler(server.db, server.executor, server.settings)

    assert sched.tick(T0) == []  # first sight: the next fire is computed, nothing runs
    assert row(server, plan_id).next_run_at == datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    assert sched.tick(T0.replace(minute=59, second=59)) == []

    due = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    fired = sched.tick(due)
    assert len(fired) == 1
    assert row(server, plan_id).next_run_at == due + timedelta(hours=1)
    assert sched.tick(due + timedelta(seconds=5)) == []
    doc = server.wait(fired[0])
    assert doc["status"] == "ok" and doc["trigger"] == "schedule" and doc["plan"] == "web"

    # after a long pause: one run, and the next fire is after now (no burst)
    late = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    fired = sched.tick(late)
    assert len(fired) == 1
    assert row(server, plan_id).next_run_at == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
    server.wait(fired[0])

    # the plan is still busy with a run: this fire is skipped, the schedule moves on
    server.enqueue(plan_id=plan_id)
    assert sched.tick(datetime(2026, 3, 2, 16, 0, tzinfo=UTC)) == []
    assert row(server, plan_id).next_run_at == datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    assert len(runs_of(server, plan_id)) == 3

    # a changed schedule (the API clears next_run_at) is computed afresh, without firing
    with server.db.session() as s:
        p = s.get(m.Plan, plan_id)
        p.schedule, p.timezone, p.next_run_at = "daily 02:30", "Europe/Berlin", None
    assert sched.tick(datetime(2026, 3, 2, 16, 10, tzinfo=UTC)) == []
    assert row(server, plan_id).next_run_at == datetime(2026, 3, 3, 1, 30, tzinfo=UTC)

    # disabled: no next run shown, nothing fires
    with server.db.session() as s:
        s.get(m.Plan, plan_id).enabled = False
    assert sched.tick(datetime(2026, 3, 3, 1, 30, tzinfo=UTC)) == []
    assert row(server, plan_id).next_run_at is None


def test_missed_fires_run_once_at_start_unless_catch_up_is_off(server: Server) -> None:
    missed = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    keen = plan(server, "keen", next_run_at=missed)
    lazy = plan(server, "lazy", next_run_at=missed, catch_up=False)
    now = missed + timedelta(hours=5, minutes=30)  # five fires missed while down
    just_late = plan(server, "just-late", next_run_at=now - timedelta(seconds=20),
                     catch_up=False)
    sched = Scheduler(server.db, server.executor, server.settings)

    sched.recover(now)
    caught = runs_of(server, keen)
    assert [r["trigger"] for r in caught] == ["catch-up"]
    assert runs_of(server, lazy) == []
    for plan_id in (keen, lazy):
        assert row(server, plan_id).next_run_at == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
    # a fire passed by seconds (a quick restart) is not a missed run: the tick takes it
    assert runs_of(server, just_late) == []
    fired = sched.tick(now)
    assert [server.run(i)["plan"] for i in fired] == ["just-late"]
    assert server.wait(caught[0]["id"])["status"] == "ok"
    assert sched.tick(now + timedelta(minutes=1)) == []
    assert len(runs_of(server, keen)) == 1

    # the server-wide switch turns catch-up off for every plan
    server.settings.catch_up_missed = False
    with server.db.session() as s:
        s.get(m.Plan, keen).next_run_at = missed
    Scheduler(server.db, server.executor, server.settings).recover(now)
    assert len(runs_of(server, keen)) == 1
    assert row(server, keen).next_run_at == datetime(2026, 3, 2, 16, 0, tzinfo=UTC)


def test_recover_interrupts_running_runs_retries_once_and_resubmits_queued(
        server: Server, webhook_receiver: WebhookReceiver) -> None:  # noqa: F811
    url = webhook_receiver.url()
    with server.db.session() as s:
        s.add(m.AlertChannel(organisation_id=server.org, name="hook",
                             url_sealed=server.keyring.seal({"url": url}), url_masked=url))
    web = plan(server, "web", schedule=None)
    other = plan(server, "other", schedule=None)
    cut = server.enqueue(plan_id=web)
    with server.db.session() as s:  # as a stopped server leaves it
        run = s.get(m.Run, cut)
        run.status, run.started_at, run.log = "running", T0, "2026-03-02 10:20:00 backing up\n"
    left = server.enqueue(plan_id=other)  # queued, never taken

    Scheduler(server.db, server.executor, server.settings).recover(T0 + timedelta(hours=1))
    doc = server.run(cut)
    assert doc["status"] == "interrupted"
    assert "interrupted: the server stopped" in doc["log"] and "retried as run" in doc["log"]
    retry = [r for r in runs_of(server, web) if r["id"] != cut]
    assert [(r["trigger"], r["attempt"]) for r in retry] == [("retry", 2)]
    assert server.wait(retry[0]["id"])["status"] == "ok"
    assert server.wait(left)["status"] == "ok"
    got = webhook_receiver.wait(1)
    assert any("web" in json.dumps(r.body) and "interrupted" in json.dumps(r.body)
               for r in got)

    # the retry cut off too: interrupted, and not retried a second time
    with server.db.session() as s:
        s.get(m.Run, retry[0]["id"]).status = "running"
    Scheduler(server.db, server.executor, server.settings).recover(T0 + timedelta(hours=2))
    assert server.run(retry[0]["id"])["status"] == "interrupted"
    assert len(runs_of(server, web)) == 2


def test_daily_summary_once_a_day(server: Server,
                                  webhook_receiver: WebhookReceiver) -> None:  # noqa: F811
    url = webhook_receiver.url()
    with server.db.session() as s:
        s.add(m.AlertChannel(organisation_id=server.org, name="daily",
                             url_sealed=server.keyring.seal({"url": url}), url_masked=url,
                             on_failure=False, daily_summary=True))
    web = plan(server, "summarised-plan", schedule=None)
    run_id = server.start(plan_id=web)
    assert server.wait(run_id)["status"] == "ok"
    at = datetime(2026, 3, 3, 7, 5, tzinfo=UTC)
    with server.db.session() as s:
        s.get(m.Run, run_id).finished_at = at - timedelta(hours=2)
    sched = Scheduler(server.db, server.executor, server.settings)

    assert not sched.daily_summary(at - timedelta(hours=2))  # before the hour
    sched.tick(at)
    got = webhook_receiver.wait(1)
    assert len(got) == 1 and "summarised-plan" in json.dumps(got[0].body)
    sched.tick(at + timedelta(hours=3))
    assert not sched.daily_summary(at + timedelta(hours=10))
    with server.db.session() as s:
        assert s.get(m.ServerState, SUMMARY_KEY).value == "2026-03-03"
        assert s.scalars(select(m.AlertChannel)).one().last_sent_at is not None
    assert sched.daily_summary(at + timedelta(days=1))
    assert len(webhook_receiver.wait(2)) == 2
    time.sleep(0.2)
    assert len(webhook_receiver.requests) == 2
    with server.db.session() as s:  # the summary posted nothing per run (on_failure off)
        assert s.scalar(select(func.count()).select_from(m.Run)) == 1


def test_scheduled_migration_fires_in_its_time_zone(server: Server) -> None:
    server.destination("copy", server.tmp / "copy")
    server.destination("src-dir", server.tmp / "src")
    mig_id = server.migration("mirror", "src-dir", "copy", schedule="weekly mon 03:00",
                              timezone="America/New_York")
    sched = Scheduler(server.db, server.executor, server.settings)
    # Monday 2 March 10:20 UTC: next Monday 03:00 in New York, on summer time (EDT, UTC-4)
    # since 8 March, so 07:00 UTC and not the winter 08:00
    assert sched.tick(T0) == []
    with server.db.session() as s:
        due = s.get(m.Migration, mig_id).next_run_at
    assert due == datetime(2026, 3, 9, 7, 0, tzinfo=UTC)
    fired = sched.tick(due)
    assert len(fired) == 1
    doc = server.wait(fired[0])
    assert doc["status"] == "ok" and doc["kind"] == "migrate" and doc["trigger"] == "schedule"
    with server.db.session() as s:
        assert s.get(m.Migration, mig_id).next_run_at == datetime(2026, 3, 16, 7, 0,
                                                                  tzinfo=UTC)
