"""``multibackup server`` as a user runs it: first start, restart after a kill in the middle
of a run, PostgreSQL instead of SQLite, and no secret in its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from servers_control import ADMIN_PASSWORD, ControlServer, start_control_server

pytest.importorskip("fastapi")

SECRET = "sftp-password-never-logged-3k"


class Api:
    """A signed-in client over plain HTTP (the way a script would use the server)."""

    def __init__(self, server: ControlServer) -> None:
        self.base = server.url + "/api/v1"
        self.token = ""
        doc = self.call("POST", "/auth/login", {"email": server.email,
                                                "password": server.password})
        self.csrf = doc["csrf_token"]
        tok = self.call("POST", "/tokens", {"name": "test", "expires_days": 1})
        self.token = tok["token"]

    def call(self, method: str, path: str, body: Any = None, ok: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        else:
            req.add_header("Cookie", getattr(self, "_cookie", ""))
            req.add_header("X-CSRF-Token", getattr(self, "csrf", ""))
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                cookie = resp.headers.get("Set-Cookie")
                if cookie:
                    self._cookie = cookie.split(";", 1)[0]
                raw = resp.read()
                return json.loads(raw) if raw and resp.headers.get_content_type().endswith(
                    "json") else raw.decode()
        except urllib.error.HTTPError as exc:
            if ok:
                raise AssertionError(f"{method} {path}: {exc.code} {exc.read()!r}") from None
            return {"status": exc.code, **json.loads(exc.read() or b"{}")}

    def wait(self, run_id: int, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/runs/{run_id}")
            if run["status"] not in ("queued", "running"):
                return run
            time.sleep(0.3)
        raise AssertionError(f"run {run_id} did not end: {run}")


def _plan(api: Api, tmp: Path, hooks: dict[str, Any] | None = None) -> dict[str, Any]:
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "a.txt").write_text("alpha\n")
    (site / "b.bin").write_bytes(bytes(range(256)) * 1000)
    api.call("POST", "/destinations", {"name": "disk", "config": {"location": str(tmp / "repo")}})
    body = {"name": "site", "sources": [str(site)], "destinations": ["disk"],
            "password": "repo-password-xyz"}
    if hooks:
        body["hooks"] = hooks
    return api.call("POST", "/plans", body)


def test_first_start_prints_the_password_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = start_control_server(state, env={"MULTIBACKUP_ADMIN_PASSWORD": ""})
    try:
        out = server.output()
        assert "created the administrator admin@example.test with password" in out
        password = out.split("with password ", 1)[1].split()[0]
        server.password = password
        Api(server)  # the printed password signs in
    finally:
        server.stop()
    again = start_control_server(state, port=server.port, env={"MULTIBACKUP_ADMIN_PASSWORD": ""})
    try:
        assert again.output().count("created the administrator") == 1
    finally:
        again.stop()


def test_database_password_is_refused_on_the_command_line(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "multibackup", "server", "--state-dir",
                        str(tmp_path), "--database", f"postgresql://u:{SECRET}@127.0.0.1/db"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.startswith("error: --database must not contain a password")
    assert SECRET not in p.stderr + p.stdout


def test_killed_mid_run_restart_marks_interrupted_and_retries(tmp_path: Path) -> None:
    server = start_control_server(tmp_path / "state")
    api = Api(server)
    plan = _plan(api, tmp_path, hooks={"before": ["sleep 3"]})
    run = api.call("POST", f"/plans/{plan['id']}/run")
    deadline = time.monotonic() + 20
    while api.call("GET", f"/runs/{run['id']}")["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.stop(kill=True)  # SIGKILL while the run is in its before hook
    again = start_control_server(tmp_path / "state", port=server.port)
    try:
        api = Api(again)
        first = api.call("GET", f"/runs/{run['id']}")
        assert first["status"] == "interrupted"
        runs = api.call("GET", f"/runs?plan_id={plan['id']}")
        retry = [r for r in runs if r["trigger"] == "retry"]
        assert len(retry) == 1 and retry[0]["attempt"] == 2
        done = api.wait(retry[0]["id"])
        assert done["status"] == "ok", done
        snaps = api.call("GET", f"/plans/{plan['id']}/snapshots")
        assert [s["id"] for s in snaps] == [done["snapshot"]]
    finally:
        again.stop()
    assert ADMIN_PASSWORD not in server.output()


def test_postgresql_database(tmp_path: Path) -> None:
    from servers_postgres import start_pg_server

    pg = start_pg_server()
    try:
        pg.psql("CREATE DATABASE mbserver")
        env = {"PGPASSWORD": pg.password}
        server = start_control_server(tmp_path / "state", env=env,
                                      args=("--database", pg.url("mbserver")))
        try:
            api = Api(server)
            plan = _plan(api, tmp_path)
            api.call("POST", "/sources", {"name": "box", "config": {
                "url": "sftp://backup@127.0.0.1:1/var/www", "password": SECRET}})
            done = api.wait(api.call("POST", f"/plans/{plan['id']}/run")["id"])
            assert done["status"] == "ok", done
        finally:
            server.stop()
        assert pg.psql("SELECT version_num FROM alembic_version", "mbserver") == "0002"
        assert pg.psql("SELECT count(*) FROM runs WHERE status = 'ok'", "mbserver") == "1"
        sealed = pg.psql("SELECT encode(secrets, 'escape') FROM sources", "mbserver")
        assert SECRET not in sealed
        # a restart on the same database keeps everything
        server = start_control_server(tmp_path / "state", port=server.port, env=env,
                                      args=("--database", pg.url("mbserver")))
        try:
            api = Api(server)
            assert [p["name"] for p in api.call("GET", "/plans")] == ["site"]
            assert api.call("GET", "/sources")[0]["secrets"] == ["password"]
        finally:
            server.stop()
        assert SECRET not in server.output() and pg.password not in server.output()
    finally:
        pg.destroy()


def _start_worker(server: ControlServer, region: str, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "multibackup", "worker", "--region", region,
         "--database", f"sqlite:///{server.state_dir / 'server.sqlite'}",
         "--state-dir", str(server.state_dir)],
        stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "MULTIBACKUP_STATE_DIR": str(server.state_dir / "worker-engine")})


def test_a_regional_worker_takes_its_regions_runs(tmp_path: Path) -> None:
    """Plans placed in a region run on that region's worker, the others on the server; a
    worker that dies mid-run is noticed by its missing heartbeat, and the retry waits for
    a worker of that region."""
    server = start_control_server(tmp_path / "state", args=("--worker-timeout", "6"))
    worker = _start_worker(server, "eu-west", tmp_path / "worker.log")
    try:
        api = Api(server)
        home = _plan(api, tmp_path)
        site = tmp_path / "site"
        eu = api.call("POST", "/plans", {
            "name": "eu-site", "sources": [str(site)], "destinations": ["disk"],
            "password": "repo-password-xyz", "region": "eu-west"})
        assert eu["region"] == "eu-west"
        bad = api.call("POST", "/plans", {"name": "x", "sources": [str(site)],
                                          "destinations": ["disk"], "password": "p" * 12,
                                          "region": "EU West"}, ok=False)
        assert bad["status"] == 422 and bad["errors"][0]["field"] == "region"
        done_home = api.wait(api.call("POST", f"/plans/{home['id']}/run")["id"])
        done_eu = api.wait(api.call("POST", f"/plans/{eu['id']}/run")["id"])
        assert done_home["status"] == "ok" and done_home["worker"].startswith("server:")
        assert done_eu["status"] == "ok", done_eu
        assert done_eu["worker"].startswith("worker:eu-west:")
        assert done_eu["region"] == "eu-west"

        # the worker is killed in the middle of a run (its before hook sleeps)
        api.call("PUT", f"/plans/{eu['id']}", {
            "name": "eu-site", "sources": [str(site)], "destinations": ["disk"],
            "region": "eu-west", "hooks": {"before": ["sleep 30"]}})
        cut = api.call("POST", f"/plans/{eu['id']}/run")
        deadline = time.monotonic() + 30
        while api.call("GET", f"/runs/{cut['id']}")["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        worker.kill()
        worker.wait(10)
        deadline = time.monotonic() + 60
        while api.call("GET", f"/runs/{cut['id']}")["status"] == "running":
            assert time.monotonic() < deadline, "the dead worker's run was never given up"
            time.sleep(0.5)
        gone = api.call("GET", f"/runs/{cut['id']}")
        assert gone["status"] == "interrupted"
        assert any("stopped answering" in e for e in gone["errors"])
        retry = [r for r in api.call("GET", f"/runs?plan_id={eu['id']}")
                 if r["trigger"] == "retry"]
        assert len(retry) == 1
        time.sleep(3)  # the server does not take a run of another region
        assert api.call("GET", f"/runs/{retry[0]['id']}")["status"] == "queued"
        api.call("PUT", f"/plans/{eu['id']}", {
            "name": "eu-site", "sources": [str(site)], "destinations": ["disk"],
            "region": "eu-west"})
        worker = _start_worker(server, "eu-west", tmp_path / "worker.log")
        assert api.wait(retry[0]["id"])["status"] == "ok"
    finally:
        worker.kill()
        server.stop()
    assert ADMIN_PASSWORD not in (tmp_path / "worker.log").read_text()
