"""The server's queue and executor against a real SQLite database, real local-directory
destinations and real files: backup, restore, migrate, cancel, failures, health, alerts."""

from __future__ import annotations

import filecmp
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, PASSWORD
from servers_mail import WebhookReceiver, webhook_receiver  # noqa: F401 - the fixture
from servers_postgres import PGServer, pg_server  # noqa: F401 - the fixture
from sqlalchemy import select

from multibackup.server import models as m
from multibackup.server import service
from multibackup.server.db import Database
from multibackup.server.executor import LocalExecutor
from multibackup.server.keyring import Keyring
from multibackup.server.metrics import Metrics
from multibackup.server.queue import Busy, enqueue_run, run_json
from multibackup.server.settings import ServerSettings

MiB = 1024 * 1024


class Server:
    """A database, a key and a LocalExecutor, as the server holds them, and helpers that
    store rows the way the API does."""

    def __init__(self, tmp: Path, workers: int = 1, url: str | None = None,
                 **settings: Any) -> None:
        self.tmp = tmp
        self.db = Database(url or f"sqlite:///{tmp / 'server.sqlite'}")
        self.db.upgrade()
        self.keyring = Keyring(os.urandom(32))
        self.settings = ServerSettings(state_dir=str(tmp / "server"), workers=workers,
                                       **settings)
        self.metrics = Metrics()
        self.executor = LocalExecutor(self.db, self.keyring, self.settings, self.metrics)
        with self.db.session() as s:
            org = m.Organisation(name="acme")
            s.add(org)
            s.flush()
            self.org = org.id

    def destination(self, name: str, path: Path) -> int:
        with self.db.session() as s:
            row = m.Destination(organisation_id=self.org, name=name)
            service.store_config(row, self.keyring, {"location": str(path)}, {})
            s.add(row)
            s.flush()
            return row.id

    def plan(self, name: str, sources: list[str], destinations: list[str], **cols: Any) -> int:
        with self.db.session() as s:
            row = m.Plan(organisation_id=self.org, name=name,
                         config={"sources": sources, "destinations": destinations},
                         secrets=self.keyring.seal({"password": PASSWORD}), **cols)
            s.add(row)
            s.flush()
            return row.id

    def migration(self, name: str, source: str, destination: str, **cols: Any) -> int:
        with self.db.session() as s:
            row = m.Migration(organisation_id=self.org, name=name,
                              config={"source": source, "destination": destination},
                              **cols)
            s.add(row)
            s.flush()
            return row.id

    def enqueue(self, kind: str = "backup", plan_id: int | None = None,
                migration_id: int | None = None, **kw: Any) -> int:
        with self.db.session() as s:
            plan = s.get(m.Plan, plan_id) if plan_id is not None else None
            migration = s.get(m.Migration, migration_id) if migration_id is not None else None
            run = enqueue_run(s, kind=kind, organisation_id=self.org, plan=plan,
                              migration=migration, **kw)
            return run.id

    def start(self, kind: str = "backup", plan_id: int | None = None,
              migration_id: int | None = None, **kw: Any) -> int:
        run_id = self.enqueue(kind, plan_id, migration_id, **kw)
        self.executor.submit(run_id)
        return run_id

    def run(self, run_id: int) -> dict[str, Any]:
        with self.db.session() as s:
            run = s.get(m.Run, run_id)
            assert run is not None
            return {**run_json(run), "log": run.log, "result": run.result}

    def wait(self, run_id: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.run(run_id)
            if doc["status"] not in ("queued", "running"):
                return doc
            assert time.monotonic() < deadline, f"run {run_id} still {doc['status']}"
            time.sleep(0.05)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.db.close()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("MULTIBACKUP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MULTIBACKUP_CONFIG", raising=False)
    srv = Server(tmp_path)
    yield srv
    srv.close()


def make_tree(root: Path, seed: int = 1) -> Path:
    rng = random.Random(seed)
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(6):
        (root / f"file{i}.bin").write_bytes(rng.randbytes(rng.randint(0, 300_000)))
    (root / "sub" / "notes.txt").write_text("hello from the server\n" * 50)
    (root / "sub" / "deeper" / "big.bin").write_bytes(rng.randbytes(3 * MiB + 17))
    (root / "sub" / "empty").write_bytes(b"")
    return root


def cli(repo: Path) -> CLI:
    return CLI(str(repo))


def same_tree(a: Path, b: Path) -> None:
    """Every file under ``a`` is under ``b`` with exactly the same bytes, and nothing else."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_backup_then_restore_exact_bytes_and_health(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    server.destination("disk", tmp_path / "repo")
    plan_id = server.plan("web", [str(src)], ["disk"])

    run_id = server.start(plan_id=plan_id)
    doc = server.wait(run_id)
    assert doc["status"] == "ok", doc
    assert doc["exit_code"] == 0 and doc["snapshot"] and doc["files"] == 9
    assert doc["bytes_added"] > 3 * MiB and doc["stored_bytes"] > 3 * MiB
    assert doc["destinations"] == [{"name": "disk", "ok": True, "error": None}]
    assert "started backup of plan 'web'" in doc["log"] and "finished: ok" in doc["log"]
    assert PASSWORD not in json.dumps(doc)

    # the engine (through the CLI) sees the snapshot the server made
    snaps = cli(tmp_path / "repo")("snapshots", "--json").json()
    assert [s["id"] for s in snaps] == [doc["snapshot"]]

    with server.db.session() as s:
        dest = s.scalars(select(m.Destination)).one()
        assert dest.stored_bytes and dest.stored_bytes > 3 * MiB and dest.objects
        assert dest.last_success is not None and dest.last_failure is None
        assert not dest.lagging
    metrics = server.metrics.render()[0].decode()
    assert 'multibackup_runs_total{kind="backup",organisation="acme",plan="web",status="ok"}' \
        in metrics

    # restore everything to a server path: the same bytes
    target = tmp_path / "restored"
    restore_id = server.start("restore", plan_id=plan_id,
                              params={"snapshot": doc["snapshot"][:8], "paths": [],
                                      "target": str(target), "overwrite": False})
    rdoc = server.wait(restore_id)
    assert rdoc["status"] == "ok", rdoc
    assert rdoc["kind"] == "restore" and rdoc["params"]["target"] == str(target)
    same_tree(src, target / str(src).lstrip("/"))

    # one folder of the latest snapshot
    part = tmp_path / "part"
    rid = server.start("restore", plan_id=plan_id,
                       params={"snapshot": "latest", "paths": [str(src / "sub")],
                               "target": str(part)})
    assert server.wait(rid)["status"] == "ok"
    same_tree(src / "sub", part / str(src / "sub").lstrip("/"))

    # a relative target is refused, as one line
    rid = server.start("restore", plan_id=plan_id,
                       params={"snapshot": "latest", "target": "relative/dir"})
    bad = server.wait(rid)
    assert bad["status"] == "failed" and "not an absolute path" in bad["errors"][0]


def test_second_enqueue_of_a_busy_plan_is_refused(server: Server, tmp_path: Path) -> None:
    server.destination("disk", tmp_path / "repo")
    plan_id = server.plan("web", [str(tmp_path)], ["disk"])
    first = server.enqueue(plan_id=plan_id)
    with pytest.raises(Busy, match=r"plan 'web' already has a queued run \(run \d+\)"):
        server.enqueue(plan_id=plan_id)
    with server.db.session() as s:
        s.get(m.Run, first).status = "running"
    with pytest.raises(Busy, match=rf"plan 'web' is already running \(run {first}\)"):
        server.enqueue(plan_id=plan_id, trigger="schedule")
    # a restore of the same plan is not the plan running
    server.enqueue("restore", plan_id=plan_id, params={"target": str(tmp_path / "r")})
    with server.db.session() as s:
        s.get(m.Run, first).status = "ok"

    # requests racing to start the plan: exactly one gets it
    outcomes = _race(server, plan_id)
    won = [o for o in outcomes if isinstance(o, int)]
    assert len(won) == 1 and won[0] > first
    assert all(f"(run {won[0]})" in o for o in outcomes if isinstance(o, str))


def _race(server: Server, plan_id: int, n: int = 8) -> list[int | str]:
    """``n`` threads start the plan at the same moment; what each got."""
    barrier = threading.Barrier(n)
    outcomes: list[int | str] = []

    def race() -> None:
        barrier.wait()
        try:
            outcomes.append(server.enqueue(plan_id=plan_id))
        except Busy as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=race) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_postgres_queue_run_and_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         pg_server: PGServer) -> None:  # noqa: F811
    """The same queue on PostgreSQL: racing starts (row lock), a run, a scheduler tick."""
    from multibackup.server.scheduler import Scheduler

    monkeypatch.setenv("MULTIBACKUP_STATE_DIR", str(tmp_path / "state"))
    name = f"mb_server_{os.getpid()}_{random.randrange(10**6)}"
    pg_server.psql(f"CREATE DATABASE {name}")
    url = (f"postgresql+psycopg://{pg_server.user}:{pg_server.password}@{pg_server.host}:"
           f"{pg_server.port}/{name}")
    server = Server(tmp_path, url=url)
    try:
        src = make_tree(tmp_path / "src")
        server.destination("disk", tmp_path / "repo")
        plan_id = server.plan("web", [str(src)], ["disk"], schedule="daily 02:30")
        outcomes = _race(server, plan_id)
        won = [o for o in outcomes if isinstance(o, int)]
        assert len(won) == 1, outcomes
        server.executor.submit(won[0])
        doc = server.wait(won[0])
        assert doc["status"] == "ok" and doc["stored_bytes"], doc
        sched = Scheduler(server.db, server.executor, server.settings)
        now = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
        assert sched.tick(now) == []
        fired = sched.tick(now.replace(hour=2, minute=30))
        assert len(fired) == 1 and server.wait(fired[0])["trigger"] == "schedule"
    finally:
        server.close()
        pg_server.psql(f"DROP DATABASE {name} WITH (FORCE)")


def test_cancel_a_running_backup_then_back_up_and_check(server: Server,
                                                         tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"random{i}.bin").write_bytes(os.urandom(50 * MiB))
    server.destination("disk", tmp_path / "repo")
    plan_id = server.plan("web", [str(src)], ["disk"])

    # a queued run is cancelled at once
    queued = server.enqueue(plan_id=plan_id)
    assert server.executor.cancel(queued)
    assert server.run(queued)["status"] == "cancelled"

    run_id = server.start(plan_id=plan_id)
    deadline = time.monotonic() + 20
    while server.run(run_id)["status"] != "running" or "backing up" not in \
            server.run(run_id)["log"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # mid-data: the first of about 19 packs is stored (not a fixed sleep, which a fast
    # machine's backup of the 300 MiB can outrun)
    while not any(p.is_file() for p in (tmp_path / "repo" / "data").rglob("*")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    assert server.executor.cancel(run_id)
    doc = server.wait(run_id, timeout=30)
    assert time.monotonic() - started < 10
    assert doc["status"] == "cancelled", doc
    assert doc["snapshot"] is None and "cancel requested" in doc["log"]
    assert not server.executor.cancel(run_id)  # over: nothing to cancel
    with server.db.session() as s:  # a cancel says nothing about the destination
        assert s.scalars(select(m.Destination)).one().last_failure is None

    again = server.wait(server.start(plan_id=plan_id), timeout=60)
    assert again["status"] == "ok", again
    repo = cli(tmp_path / "repo")
    assert [s["id"] for s in repo("snapshots", "--json").json()] == [again["snapshot"]]
    repo("check")


def test_deleted_destination_gives_a_failed_run(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    dest_id = server.destination("disk", tmp_path / "repo")
    plan_id = server.plan("web", [str(src)], ["disk"])
    with server.db.session() as s:
        s.delete(s.get(m.Destination, dest_id))
    doc = server.wait(server.start(plan_id=plan_id))
    assert doc["status"] == "failed" and doc["exit_code"] == 2  # a settings error, as the CLI
    assert len(doc["errors"]) == 1
    assert "the saved settings no longer hold together" in doc["errors"][0]
    assert "disk" in doc["errors"][0] and "\n" not in doc["errors"][0]
    assert doc["errors"][0] in doc["log"]
    assert not (tmp_path / "repo").exists()


def test_failed_run_posts_to_the_webhook(server: Server, tmp_path: Path,
                                          webhook_receiver: WebhookReceiver,  # noqa: F811
                                          ) -> None:
    url = webhook_receiver.url()
    with server.db.session() as s:
        s.add(m.AlertChannel(organisation_id=server.org, name="hook",
                             url_sealed=server.keyring.seal({"url": url}),
                             url_masked=url, on_failure=True, on_success=False))
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the repository should be")
    server.destination("disk", blocked)
    plan_id = server.plan("nightly-db", [str(tmp_path)], ["disk"])
    doc = server.wait(server.start(plan_id=plan_id))
    assert doc["status"] == "failed"
    got = webhook_receiver.wait(1)
    assert len(got) == 1
    text = json.dumps(got[0].body)
    assert "nightly-db" in text and "failed" in text
    deadline = time.monotonic() + 5  # recorded on the channel just after the delivery
    while True:
        with server.db.session() as s:
            channel = s.scalars(select(m.AlertChannel)).one()
        if channel.last_sent_at is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert channel.last_sent_at is not None and channel.last_error is None
    with server.db.session() as s:
        dest = s.scalars(select(m.Destination)).one()
        assert dest.last_failure is not None and dest.last_error and dest.last_success is None

    # on_success is off: an ok run posts nothing
    good = tmp_path / "src"
    make_tree(good)
    server.destination("ok-disk", tmp_path / "repo")
    ok_plan = server.plan("fine", [str(good)], ["ok-disk"])
    assert server.wait(server.start(plan_id=ok_plan))["status"] == "ok"
    time.sleep(0.3)
    assert len(webhook_receiver.requests) == 1


def test_migrate_job_copies_a_folder(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "from")
    server.destination("old", src)
    server.destination("new", tmp_path / "to")
    mig_id = server.migration("move", "old", "new")
    doc = server.wait(server.start("migrate", migration_id=mig_id))
    assert doc["status"] == "ok", doc
    assert doc["kind"] == "migrate" and doc["migration"] == "move" and doc["plan"] is None
    assert doc["files"] == 9 and doc["bytes_added"] > 3 * MiB
    assert "9 copied" in doc["notes"][0]
    assert doc["result"]["counts"] == {"copied": 9}
    same_tree(src, tmp_path / "to")
    with pytest.raises(Busy):
        server.enqueue("migrate", migration_id=mig_id)
        server.enqueue("migrate", migration_id=mig_id)
    # a second run finds nothing to copy
    with server.db.session() as s:
        for run in s.scalars(select(m.Run).where(m.Run.status == "queued")):
            run.status = "cancelled"
    again = server.wait(server.start("migrate", migration_id=mig_id))
    assert again["status"] == "ok" and again["result"]["counts"] == {"skipped": 9}


def test_migrate_job_from_an_ftp_source(server: Server, tmp_path: Path) -> None:
    """A saved migration may start at an FTP source; its sealed password is the one used."""
    from servers_ftp import FTP_PASSWORD, start_ftp_server

    ftpd = start_ftp_server(tmp_path / "ftpd")
    try:
        src = make_tree(ftpd.root / "site")
        with server.db.session() as s:
            row = m.Source(organisation_id=server.org, name="oldhost")
            service.store_config(row, server.keyring, {"url": ftpd.url("site")},
                                 {"password": FTP_PASSWORD})
            s.add(row)
        server.destination("new", tmp_path / "to")
        with server.db.session() as s:
            checked = service.check_migration(s, server.org, "off-ftp",
                                              {"source": "oldhost", "destination": "new"})
            assert (checked.source, checked.destination) == ("oldhost", "new")
        mig_id = server.migration("off-ftp", "oldhost", "new")
        doc = server.wait(server.start("migrate", migration_id=mig_id))
        assert doc["status"] == "ok", doc
        assert doc["result"]["counts"] == {"copied": 9}
        same_tree(src, tmp_path / "to")
        with server.db.session() as s:  # renaming or deleting it is refused while in use
            assert service.users_of(s, server.org, "source", "oldhost") == \
                ["migration 'off-ftp'"]
    finally:
        ftpd.stop()
