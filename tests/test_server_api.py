"""The REST API through its real app: sign-in, CSRF, tokens, organisations kept apart,
destinations whose secrets never come back, plans with bad input, runs, snapshots,
downloads and restores that return the bytes backed up."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import _free_port
from servers_mail import SMTP_PASSWORD, smtp_server  # noqa: F401

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from multibackup.server import models as m  # noqa: E402
from multibackup.server.app import create_app  # noqa: E402
from multibackup.server.settings import ServerSettings  # noqa: E402

ADMIN = "root@example.test"
ADMIN_PW = "first-admin-password-93"
SECRET = "s3cr3t-key-never-shown-0x5f"


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, ServerSettings]]:
    monkeypatch.setenv("MULTIBACKUP_ADMIN_EMAIL", ADMIN)
    monkeypatch.setenv("MULTIBACKUP_ADMIN_PASSWORD", ADMIN_PW)
    monkeypatch.setenv("MULTIBACKUP_STATE_DIR", str(tmp_path / "engine"))
    settings = ServerSettings(state_dir=str(tmp_path / "state"))
    app = create_app(settings, background=False, announce=lambda _t: None)
    yield app, settings


@pytest.fixture
def client(app_env: tuple[Any, ServerSettings]) -> Iterator[TestClient]:
    with TestClient(app_env[0]) as c:
        yield c


def sign_in(client: TestClient, email: str = ADMIN, password: str = ADMIN_PW) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def wait_run(client: TestClient, run_id: int, headers: dict[str, str] | None = None,
             timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}", headers=headers or {}).json()
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run['status']}")


def make_site(root: Path) -> dict[str, bytes]:
    files = {"index.html": b"<h1>hello</h1>\n", "css/site.css": b"body{margin:0}\n",
             "img/logo.bin": os.urandom(300_000), "docs/deep/readme.txt": b"x" * 5000}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def site_plan(client: TestClient, csrf: dict[str, str], tmp_path: Path, name: str,
              password: str, site: str = "site", repo: str = "repo",
              **extra: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A made site, a folder destination "disk" and a plan backing the one up to the
    other; returns the plan's JSON and the site's files."""
    files = make_site(tmp_path / site)
    client.post("/api/v1/destinations", headers=csrf,
                json={"name": "disk", "config": {"location": str(tmp_path / repo)}})
    plan = client.post("/api/v1/plans", headers=csrf, json={
        "name": name, "sources": [str(tmp_path / site)], "destinations": ["disk"],
        "password": password, **extra}).json()
    return plan, files


def test_sign_in_errors_and_rate_limit(client: TestClient) -> None:
    r = client.post("/api/v1/auth/login", json={"email": ADMIN, "password": "wrong"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"] == "wrong email or password"
    assert client.get("/api/v1/plans").status_code == 401
    for _ in range(4):
        client.post("/api/v1/auth/login", json={"email": ADMIN, "password": "wrong"})
    r = client.post("/api/v1/auth/login", json={"email": ADMIN, "password": ADMIN_PW})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert "too many failed sign-ins" in r.json()["detail"]


def test_csrf_tokens_and_expiry(client: TestClient, app_env: tuple[Any, ServerSettings]) -> None:
    csrf = sign_in(client)
    me = client.get("/api/v1/auth/me").json()
    assert me["email"] == ADMIN and me["superadmin"] and me["csrf_token"] == csrf["X-CSRF-Token"]
    body = {"name": "local", "config": {"location": "/tmp/nowhere-x"}}
    r = client.post("/api/v1/destinations", json=body)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = client.post("/api/v1/tokens", json={"name": "ci", "expires_days": 1}, headers=csrf)
    assert r.status_code == 201
    token, token_id = r.json()["token"], r.json()["id"]
    assert token.startswith("mbt_")
    assert all("token" not in t for t in client.get("/api/v1/tokens").json())
    bearer = TestClient(app_env[0])
    r = bearer.post("/api/v1/destinations", json=body,
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text  # no CSRF needed with a token
    db = app_env[0].state.ctx.db
    with db.session() as s:
        s.get(m.ApiToken, token_id).expires_at = datetime.now(UTC) - timedelta(minutes=1)
    r = bearer.get("/api/v1/plans", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["detail"] == "token expired"
    r = bearer.get("/api/v1/plans", headers={"Authorization": "Bearer mbt_made-up"})
    assert r.status_code == 401
    assert client.post("/api/v1/auth/logout", headers=csrf).status_code == 204
    assert client.get("/api/v1/plans").status_code == 401


def test_destination_secrets_are_sealed(client: TestClient, app_env: tuple[Any, ServerSettings],
                                        tmp_path: Path) -> None:
    csrf = sign_in(client)
    port = _free_port()  # nothing listens there
    body = {"name": "cloud", "config": {"location": "s3://bucket/prefix",
                                        "endpoint": f"http://127.0.0.1:{port}",
                                        "access_key_id": "AKIDEXAMPLE",
                                        "secret_access_key": SECRET}}
    r = client.post("/api/v1/destinations", json=body, headers=csrf)
    assert r.status_code == 201, r.text
    dest = r.json()
    assert dest["secrets"] == ["secret_access_key"]
    assert SECRET not in r.text and "secret_access_key" not in dest["config"]
    assert SECRET not in client.get("/api/v1/destinations").text
    db_file = Path(app_env[1].state_dir) / "server.sqlite"
    with sqlite3.connect(db_file) as conn:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    raw = db_file.read_bytes() + (db_file.with_name("server.sqlite-wal").read_bytes()
                                  if db_file.with_name("server.sqlite-wal").exists() else b"")
    assert SECRET.encode() not in raw
    # an update without the secret keeps it; the connection test reaches a dead port
    body["config"].pop("secret_access_key")
    body["config"]["region"] = "eu-west-1"
    r = client.put(f"/api/v1/destinations/{dest['id']}", json=body, headers=csrf)
    assert r.status_code == 200 and r.json()["secrets"] == ["secret_access_key"]
    started = time.monotonic()
    probe = client.post(f"/api/v1/destinations/{dest['id']}/test", headers=csrf).json()
    assert probe["ok"] is False and probe["error"] and "\n" not in probe["error"]
    assert SECRET not in probe["error"]
    assert time.monotonic() - started < 25
    ok = client.post("/api/v1/destinations/test", headers=csrf,
                     json={"config": {"location": str(tmp_path)}}).json()
    assert ok["ok"] is True and ok["latency_ms"] >= 0
    # bad input: a relative path, a secret written in a location
    r = client.post("/api/v1/destinations", headers=csrf,
                    json={"name": "bad", "config": {"location": "relative/dir"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "location"
    r = client.post("/api/v1/destinations", headers=csrf,
                    json={"name": "bad two", "config": {"location": str(tmp_path)}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"


def test_plan_run_browse_download_restore(client: TestClient,
                                          app_env: tuple[Any, ServerSettings],
                                          tmp_path: Path) -> None:
    csrf = sign_in(client)
    site = tmp_path / "site"
    files = make_site(site)
    repo = tmp_path / "repo"
    d = client.post("/api/v1/destinations", headers=csrf,
                    json={"name": "disk", "config": {"location": str(repo)}}).json()
    plan = {"name": "web", "sources": [str(site)], "destinations": ["disk"],
            "schedule": "daily 25:00", "timezone": "Europe/Berlin",
            "retention": {"keep_daily": 7}, "password": "repo-password-123"}
    r = client.post("/api/v1/plans", json=plan, headers=csrf)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "schedule"
    assert "25:00" in r.json()["detail"]
    plan["schedule"] = "0 3 * * mon-fri"
    plan["timezone"] = "Mars/Olympus"
    r = client.post("/api/v1/plans", json=plan, headers=csrf)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "timezone"
    plan["timezone"] = "Europe/Berlin"
    plan["destinations"] = ["dsik"]
    r = client.post("/api/v1/plans", json=plan, headers=csrf)
    assert r.status_code == 422 and "did you mean 'disk'" in r.json()["detail"]
    plan["destinations"] = ["disk"]
    r = client.post("/api/v1/plans", json=plan, headers=csrf)
    assert r.status_code == 201, r.text
    p = r.json()
    assert "password" not in p and p["schedule_cron"] == "0 3 * * mon-fri"
    run = client.post(f"/api/v1/plans/{p['id']}/run", headers=csrf)
    assert run.status_code == 202
    done = wait_run(client, run.json()["id"])
    assert done["status"] == "ok", done
    assert done["snapshot"] and done["bytes_added"] > 0
    assert "backing up" in client.get(f"/api/v1/runs/{done['id']}/log").text
    # the destination cannot be deleted while the plan uses it; nothing is lost
    r = client.delete(f"/api/v1/destinations/{d['id']}", headers=csrf)
    assert r.status_code == 409 and "plan 'web'" in r.json()["detail"]
    snaps = client.get(f"/api/v1/plans/{p['id']}/snapshots").json()
    assert len(snaps) == 1 and snaps[0]["id"] == done["snapshot"]
    sid = snaps[0]["short_id"]
    root = client.get(f"/api/v1/plans/{p['id']}/snapshots/{sid}/tree",
                      params={"path": str(site)}).json()
    assert {e["name"] for e in root} == {"index.html", "css", "img", "docs"}
    assert [e["type"] for e in root][:3] == ["dir", "dir", "dir"]
    logo = client.get(f"/api/v1/plans/{p['id']}/snapshots/{sid}/download",
                      params={"path": f"{site}/img/logo.bin"})
    assert logo.status_code == 200 and logo.content == files["img/logo.bin"]
    r = client.get(f"/api/v1/plans/{p['id']}/snapshots/{sid}/tree",
                   params={"path": f"{site}/../etc"})
    assert r.status_code == 422
    target = tmp_path / "restored"
    r = client.post(f"/api/v1/plans/{p['id']}/snapshots/{sid}/restore", headers=csrf,
                    json={"paths": [f"{site}/docs"], "target": str(target)})
    assert r.status_code == 202, r.text
    restored = wait_run(client, r.json()["id"])
    assert restored["status"] == "ok", restored
    got = (target / str(site).lstrip("/") / "docs/deep/readme.txt").read_bytes()
    assert got == files["docs/deep/readme.txt"]
    assert not (target / str(site).lstrip("/") / "index.html").exists()
    hist = client.get(f"/api/v1/plans/{p['id']}/history").json()
    assert [h["run_id"] for h in hist] == [done["id"]] and hist[0]["duration"] >= 0
    health = client.get(f"/api/v1/destinations/{d['id']}").json()["health"]
    assert health["stored_bytes"] and health["last_success"]
    overview = client.get("/api/v1/overview").json()
    assert overview["counts"]["ok_24h"] >= 1 and overview["plans"][0]["last_run"]["status"] == "ok"
    metrics = client.get("/metrics").text
    assert 'multibackup_runs_total{' in metrics and 'plan="web"' in metrics


def test_organisations_are_isolated(client: TestClient, tmp_path: Path) -> None:
    csrf = sign_in(client)
    plan, _ = site_plan(client, csrf, tmp_path, "a-plan", "repo-password-a", site="a-site",
                        repo="repo-a")
    run = wait_run(client, client.post(f"/api/v1/plans/{plan['id']}/run",
                                       headers=csrf).json()["id"])
    assert run["status"] == "ok"
    dest_a = client.get("/api/v1/destinations").json()[0]["id"]
    org = client.post("/api/v1/organisations", json={"name": "other"}, headers=csrf).json()
    r = client.post("/api/v1/users", headers=csrf, json={
        "email": "bob@other.test", "password": "bob-password-77", "role": "admin",
        "organisation_id": org["id"]})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/users", headers=csrf, json={
        "email": "short@other.test", "password": "short", "organisation_id": org["id"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "password"
    with TestClient(client.app) as bob:
        bcsrf = sign_in(bob, "bob@other.test", "bob-password-77")
        assert bob.get("/api/v1/plans").json() == []
        assert bob.get("/api/v1/destinations").json() == []
        assert bob.get("/api/v1/runs").json() == []
        for method, url in (("get", f"/api/v1/plans/{plan['id']}"),
                            ("put", f"/api/v1/plans/{plan['id']}"),
                            ("delete", f"/api/v1/plans/{plan['id']}"),
                            ("post", f"/api/v1/plans/{plan['id']}/run"),
                            ("get", f"/api/v1/plans/{plan['id']}/snapshots"),
                            ("get", f"/api/v1/runs/{run['id']}"),
                            ("get", f"/api/v1/runs/{run['id']}/log"),
                            ("get", f"/api/v1/destinations/{dest_a}"),
                            ("delete", f"/api/v1/destinations/{dest_a}"),
                            ("post", f"/api/v1/destinations/{dest_a}/test")):
            kwargs: dict[str, Any] = {"headers": bcsrf}
            if method == "put":
                kwargs["json"] = {"name": "x", "sources": ["/tmp"], "destinations": ["disk"]}
            r = getattr(bob, method)(url, **kwargs)
            assert r.status_code == 404, (method, url, r.status_code, r.text)
        # the server's own files are out of reach: only the organisation's folder
        folder = Path(bob.get("/api/v1/auth/me").json()["server_folder"])
        assert folder == Path(client.app.state.ctx.settings.organisations_root) / str(org["id"])
        r = bob.post("/api/v1/destinations", headers=bcsrf,
                     json={"name": "disk", "config": {"location": str(tmp_path / "repo-a")}})
        assert r.status_code == 403 and r.json()["errors"][0]["field"] == "location"
        r = bob.post("/api/v1/destinations", headers=bcsrf, json={"name": "box", "config": {
            "location": "sftp://u@127.0.0.1:22/x", "key_file": "/root/.ssh/id_ed25519"}})
        assert r.status_code == 403 and r.json()["errors"][0]["field"] == "key_file"
        r = bob.post("/api/v1/sources", headers=bcsrf,
                     json={"name": "db", "config": {"url": "sqlite:///etc/app.db"}})
        assert r.status_code == 403
        # the same names are free in another organisation
        r = bob.post("/api/v1/destinations", headers=bcsrf,
                     json={"name": "disk", "config": {"location": str(folder / "repo")}})
        assert r.status_code == 201, r.text
        for plan_body, field in (({"sources": ["/etc"]}, "sources"),
                                 ({"sources": [str(folder)], "hooks": {"before": ["id"]}},
                                  "hooks")):
            r = bob.post("/api/v1/plans", headers=bcsrf, json={
                "name": "p", "destinations": ["disk"], "password": "pw-1234567890",
                **plan_body})
            assert r.status_code == 403 and r.json()["errors"][0]["field"] == field, r.text
        (folder / "site").mkdir(parents=True)
        (folder / "site" / "f.txt").write_text("bob's file")
        bplan = bob.post("/api/v1/plans", headers=bcsrf, json={
            "name": "p", "sources": [str(folder / "site")], "destinations": ["disk"],
            "password": "pw-1234567890"}).json()
        brun = wait_run(bob, bob.post(f"/api/v1/plans/{bplan['id']}/run",
                                      headers=bcsrf).json()["id"])
        assert brun["status"] == "ok", brun
        r = bob.post(f"/api/v1/plans/{bplan['id']}/snapshots/{brun['snapshot']}/restore",
                     headers=bcsrf, json={"target": str(tmp_path / "outside")})
        assert r.status_code == 403 and r.json()["errors"][0]["field"] == "target"
        r = bob.post(f"/api/v1/plans/{bplan['id']}/snapshots/{brun['snapshot']}/restore",
                     headers=bcsrf, json={"target": str(folder / "back")})
        assert wait_run(bob, r.json()["id"])["status"] == "ok"
        assert list((folder / "back").rglob("f.txt"))[0].read_text() == "bob's file"
        assert bob.post("/api/v1/organisations", json={"name": "x"},
                        headers=bcsrf).status_code == 403
    assert client.get(f"/api/v1/plans/{plan['id']}").status_code == 200
    assert len(client.get("/api/v1/destinations").json()) == 1


def test_openapi_and_health(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    for path in ("/api/v1/plans", "/api/v1/runs/{run_id}", "/api/v1/destinations/test",
                 "/api/v1/plans/{plan_id}/snapshots/{snapshot_id}/restore"):
        assert path in spec["paths"], path
    assert client.get("/healthz").json() == {"status": "ok"}
    sign_in(client)
    # ids beyond what the database holds are input errors, not server errors (schemathesis)
    r = client.get(f"/api/v1/plans/{2**70}")
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem")
    assert client.get("/api/v1/runs", params={"plan_id": 2**70}).status_code == 422
    assert client.get("/api/docs").status_code == 200


def test_failure_alert_by_email_and_restore_to_a_saved_source(
        client: TestClient, smtp_server: Any, sftp_server: Any,  # noqa: F811
        tmp_path: Path) -> None:
    csrf = sign_in(client)
    url = smtp_server.url(to="ops@example.com")
    r = client.post("/api/v1/alerts", headers=csrf,
                    json={"name": "ops-mail", "url": url, "on_failure": True})
    assert r.status_code == 201, r.text
    alert = r.json()
    assert SMTP_PASSWORD not in r.text and SMTP_PASSWORD not in client.get("/api/v1/alerts").text
    assert client.post(f"/api/v1/alerts/{alert['id']}/test", headers=csrf).json()["ok"] is True
    smtp_server.wait(1)
    # a plan whose before hook fails: the run fails and the alert says which plan
    plan, files = site_plan(client, csrf, tmp_path, "shop", "repo-password-1",
                            hooks={"before": ["exit 3"]})
    site = tmp_path / "site"
    failed = wait_run(client, client.post(f"/api/v1/plans/{plan['id']}/run",
                                          headers=csrf).json()["id"])
    assert failed["status"] == "failed" and any("before" in e for e in failed["errors"])
    mails = smtp_server.wait(2)
    assert "shop" in mails[-1].text() and "failed" in mails[-1].text()
    # fixed plan; restore into a saved source given by name
    body = {k: plan[k] for k in ("name", "sources", "destinations")}
    r = client.put(f"/api/v1/plans/{plan['id']}", headers=csrf, json=body)
    assert r.status_code == 200, r.text
    ok = wait_run(client, client.post(f"/api/v1/plans/{plan['id']}/run",
                                      headers=csrf).json()["id"])
    assert ok["status"] == "ok", ok
    remote = sftp_server.remote_path()
    r = client.post("/api/v1/sources", headers=csrf, json={"name": "web-host", "config": {
        "url": f"sftp://{sftp_server.user}@{sftp_server.host}:{sftp_server.port}{remote}",
        "key_file": sftp_server.key_file, "known_hosts": sftp_server.known_hosts}})
    assert r.status_code == 201, r.text
    r = client.post(f"/api/v1/plans/{plan['id']}/snapshots/{ok['snapshot']}/restore",
                    headers=csrf, json={"target": "web-host", "paths": [f"{site}/css"]})
    assert r.status_code == 202, r.text
    restored = wait_run(client, r.json()["id"])
    assert restored["status"] == "ok", restored
    got = list(Path(remote).rglob("site.css"))
    assert len(got) == 1 and got[0].read_bytes() == files["css/site.css"]
    r = client.post(f"/api/v1/plans/{plan['id']}/snapshots/{ok['snapshot']}/restore",
                    headers=csrf, json={"target": "sftp://u:pw@127.0.0.1/x"})
    assert r.status_code == 422 and "password must not be written" in r.json()["detail"]


def test_names_are_unique_within_an_organisation(client: TestClient, tmp_path: Path) -> None:
    csrf = sign_in(client)
    for name in ("a", "b"):
        r = client.post("/api/v1/alerts", headers=csrf,
                        json={"name": name, "url": f"json://127.0.0.1:9/{name}"})
        assert r.status_code == 201
        r = client.post("/api/v1/destinations", headers=csrf,
                        json={"name": name, "config": {"location": str(tmp_path / name)}})
        assert r.status_code == 201
    b_alert = next(a for a in client.get("/api/v1/alerts").json() if a["name"] == "b")
    r = client.put(f"/api/v1/alerts/{b_alert['id']}", headers=csrf, json={"name": "a"})
    assert r.status_code == 409 and r.json()["detail"] == "an alert channel named 'a' exists"
    b_dest = next(d for d in client.get("/api/v1/destinations").json() if d["name"] == "b")
    r = client.put(f"/api/v1/destinations/{b_dest['id']}", headers=csrf,
                   json={"name": "a", "config": {"location": str(tmp_path / "b")}})
    assert r.status_code == 409 and "named 'a' exists" in r.json()["detail"]
    r = client.post("/api/v1/destinations", headers=csrf,
                    json={"name": "a", "config": {"location": str(tmp_path / "c")}})
    assert r.status_code == 409
    assert sorted(a["name"] for a in client.get("/api/v1/alerts").json()) == ["a", "b"]


def test_the_migrations_build_exactly_the_models_schema(tmp_path: Path) -> None:
    """Alembic's revisions and the ORM models must agree: a column added to a model
    without a revision (or the reverse) shows here, not on a user's upgraded server."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from multibackup.server.db import Database

    db = Database(f"sqlite:///{tmp_path / 'schema.sqlite'}")
    db.upgrade()
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), m.Base.metadata) == []
    db.close()


def test_snapshot_pages_see_new_backups_and_edits(client: TestClient, tmp_path: Path) -> None:
    """The browser's repositories are kept open between requests: a backup made since,
    and a destination moved elsewhere, must still show at once."""
    csrf = sign_in(client)
    plan, _ = site_plan(client, csrf, tmp_path, "web", "repo-password-123")
    site = tmp_path / "site"

    def backup() -> str:
        run = wait_run(client, client.post(f"/api/v1/plans/{plan['id']}/run",
                                           headers=csrf).json()["id"])
        assert run["status"] == "ok", run
        return run["snapshot"]

    first = backup()
    names = {e["name"] for e in client.get(
        f"/api/v1/plans/{plan['id']}/snapshots/{first}/tree", params={"path": str(site)}).json()}
    assert "new.txt" not in names
    (site / "new.txt").write_text("added later")
    second = backup()
    assert [s["id"] for s in client.get(f"/api/v1/plans/{plan['id']}/snapshots").json()] == [
        second, first]
    names = {e["name"] for e in client.get(
        f"/api/v1/plans/{plan['id']}/snapshots/{second}/tree",
        params={"path": str(site)}).json()}
    assert "new.txt" in names  # the index was reloaded for the new snapshot's trees
    # the destination now points at an empty folder: the pages read that one
    dest = client.get("/api/v1/destinations").json()[0]
    (tmp_path / "empty").mkdir()
    r = client.put(f"/api/v1/destinations/{dest['id']}", headers=csrf,
                   json={"name": "disk", "config": {"location": str(tmp_path / "empty")}})
    assert r.status_code == 200
    r = client.get(f"/api/v1/plans/{plan['id']}/snapshots")
    assert r.status_code >= 400 and "repository" in r.json()["detail"].lower()
