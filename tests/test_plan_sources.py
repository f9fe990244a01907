"""Plans with URL sources and hooks: config checks, one snapshot per source, hooks in order."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import CLI, PASSWORD, make_tree
from servers_postgres import PGServer, pg_server  # noqa: F401 - the fixture

from multibackup.config.loader import load_config
from multibackup.errors import UsageError


def _db(path: Path, rows: int) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t(v) VALUES (?)", ((f"row {i}",) for i in range(rows)))
    con.commit()
    con.close()
    return path


def _config(tmp_path: Path, sources: str, hooks: str = "", extra: str = "") -> Path:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    cfg = tmp_path / "multibackup.toml"
    cfg.write_text(f"""
[defaults]
password_file = "{tmp_path / 'pw'}"

[destinations.disk]
location = "{tmp_path / 'disk'}"

[destinations.spare]
location = "{tmp_path / 'spare'}"

{extra}

[plans.shop]
sources = {sources}
destinations = ["disk", "spare"]
{hooks}
""")
    return cfg


def _cli(tmp_path: Path, cfg: Path) -> CLI:
    cli = CLI("", env={"MULTIBACKUP_CONFIG": str(cfg),
                       "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    for var in ("MULTIBACKUP_REPOSITORY", "MULTIBACKUP_PASSWORD"):
        cli.env.pop(var, None)
    return cli


def test_plan_backs_up_each_source_into_its_own_snapshot_with_hooks(tmp_path: Path) -> None:
    site = make_tree(tmp_path / "site", big=False)
    orders = _db(tmp_path / "orders.db", 5000)
    users = _db(tmp_path / "users.db", 300)
    log = tmp_path / "hooks.log"
    cfg = _config(
        tmp_path, f'["{site}", "orders", "sqlite://{users}"]',
        hooks=f"""
[plans.shop.hooks]
before = ["echo before $MULTIBACKUP_PLAN >> {log}; echo maintenance on"]
after = [["/bin/sh", "-c", "echo after $MULTIBACKUP_STATUS >> {log}"]]
failure = ["echo failure >> {log}"]
finally = ["echo finally $MULTIBACKUP_STATUS >> {log}"]
""",
        extra=f'[sources.orders]\nurl = "sqlite://{orders}"\n')
    cli = _cli(tmp_path, cfg)
    listing = cli("plan", "list").out
    assert f"sources:      {site}, orders (sqlite://{orders}), sqlite://{users}" in listing
    assert "hooks before:" in listing

    run = cli("plan", "run", "shop", "--json").json()
    assert run["status"] == "ok", run["errors"]
    assert log.read_text().split("\n")[:3] == ["before shop", "after ok", "finally ok"]
    assert run["hooks"][0]["output"] == "maintenance on\n"
    assert [s["name"] for s in run["sources"]] == ["orders", f"sqlite://{users}"]
    assert all(s["ok"] for s in run["sources"])

    # three snapshots on each destination: the paths, and one per database
    for dest in ("disk", "spare"):
        repo = CLI(str(tmp_path / dest))
        paths = sorted(s["paths"][0] for s in repo("snapshots", "--json").json())
        assert paths == sorted([str(site), f"sqlite://{orders}", f"sqlite://{users}"])
    repo = CLI(str(tmp_path / "spare"))
    snap = next(s for s in repo("snapshots", "--json").json()
                if s["paths"] == [f"sqlite://{orders}"])
    repo("restore", snap["id"], "--target", f"sqlite://{tmp_path / 'out' / 'orders.db'}")
    con = sqlite3.connect(tmp_path / "out" / "orders.db")
    assert con.execute("SELECT COUNT(*), MAX(v) FROM t").fetchone() == (5000, "row 999")
    con.close()


def test_failing_source_fails_the_run_but_not_the_others(tmp_path: Path) -> None:
    site = make_tree(tmp_path / "site", big=False)
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path, f'["{site}", "sqlite://{tmp_path / "gone.db"}"]',
                  hooks=f"""
[plans.shop.hooks]
after = ["echo after >> {log}"]
failure = ["echo failure $MULTIBACKUP_STATUS >> {log}"]
finally = ["echo finally >> {log}"]
""")
    cli = _cli(tmp_path, cfg)
    r = cli("plan", "run", "shop", ok=False)
    assert r.code == 1
    assert "gone.db: No such file or directory" in r.err
    assert log.read_text() == "failure failed\nfinally\n"
    snaps = CLI(str(tmp_path / "disk"))("snapshots", "--json").json()
    assert [s["paths"] for s in snaps] == [[str(site)]]  # no snapshot for the missing db
    status = cli("plan", "status", "shop", "--json").json()
    assert status["last_run"]["status"] == "failed"


def test_failing_before_hook_skips_the_backup_and_still_runs_finally(tmp_path: Path) -> None:
    site = make_tree(tmp_path / "site", big=False)
    log = tmp_path / "hooks.log"
    cfg = _config(tmp_path, f'["{site}"]', hooks=f"""
[plans.shop.hooks]
before = ["echo before >> {log}", "echo cannot enter maintenance >&2; exit 7",
          "echo never >> {log}"]
after = ["echo after >> {log}"]
failure = ["echo failure >> {log}"]
finally = ["echo finally >> {log}"]
timeout = 20
""")
    cli = _cli(tmp_path, cfg)
    r = cli("plan", "run", "shop", "--json", ok=False)
    assert r.code == 1
    doc = r.json()
    assert doc["status"] == "failed" and doc["snapshot"] is None
    assert any("exited with status 7" in e and "did not run" in e for e in doc["errors"])
    assert doc["hooks"][1]["output"] == "cannot enter maintenance\n"
    assert log.read_text() == "before\nfailure\nfinally\n"
    assert not (tmp_path / "disk").exists()  # nothing was written anywhere


def test_hook_timeout_kills_the_command(tmp_path: Path) -> None:
    site = make_tree(tmp_path / "site", big=False)
    cfg = _config(tmp_path, f'["{site}"]', hooks="""
[plans.shop.hooks]
before = ["sleep 30"]
timeout = 1
""")
    r = _cli(tmp_path, cfg)("plan", "run", "shop", "--json", ok=False)
    doc = json.loads(r.out)
    assert doc["hooks"][0]["error"] == "timed out after 1 s and was killed"
    assert doc["hooks"][0]["duration"] < 10


@pytest.mark.parametrize(("body", "message"), [
    ('[plans.p]\nsources = ["orderz"]\ndestinations = ["d"]\n[sources.orders]\n'
     'url = "sqlite:///a.db"\n',
     "plans.p.sources: 'orderz' is neither an absolute path, a URL nor a source in [sources] "
     "(did you mean 'orders'?)"),
    ('[sources.db]\nurl = "mysql://root:s3cret@host/shop"\n',
     "sources.db.url: a password must not be written in the URL"),
    ('[sources.db]\nurl = "mysql://root@host/shop"\npassword = "s3cret"\n',
     "sources.db.password:"),
    ('[plans.p]\nsources = ["/a"]\ndestinations = ["d"]\n[plans.p.hooks]\nbefore = "x"\n',
     "plans.p.hooks.before: expected a list of commands, got a string"),
    ('[plans.p]\nsources = ["/a"]\ndestinations = ["d"]\n[plans.p.hooks]\nbefor = ["x"]\n',
     "plans.p.hooks.befor:"),
    ('[sources.b]\nurl = "nosuch://x/y"\n', "sources.b.url:"),
])
def test_config_errors_for_sources_and_hooks(tmp_path: Path, body: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[destinations.d]\nlocation = "/tmp/d"\n' + body)
    with pytest.raises(UsageError) as err:
        load_config(cfg)
    assert message in str(err.value)
    assert "s3cret" not in str(err.value)


def test_plan_reads_a_database_password_from_the_config_never_printing_it(
        tmp_path: Path, pg_server: PGServer) -> None:  # noqa: F811 - the imported fixture
    secret = "plan-db-pw-7c1e"
    pg_server.psql(f"CREATE ROLE planner LOGIN SUPERUSER PASSWORD '{secret}'")
    pg_server.psql("CREATE DATABASE plandb")
    pg_server.psql("CREATE TABLE items(id int PRIMARY KEY, name text); "
                   "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g",
                   database="plandb")
    cfg = _config(tmp_path, '["db"]', extra=f"""
[sources.db]
url = "{pg_server.url('plandb', user='planner')}"
password = {{ env = "PLAN_DB_PASSWORD" }}
""")
    cli = _cli(tmp_path, cfg)
    cli.env.pop("MULTIBACKUP_SOURCE_PASSWORD", None)
    wrong = cli("plan", "run", "shop", ok=False, env={"PLAN_DB_PASSWORD": "wrong-pw-3b"})
    assert wrong.code == 1 and "source db:" in wrong.err
    assert "wrong-pw-3b" not in wrong.out + wrong.err
    r = cli("plan", "run", "shop", "--json", env={"PLAN_DB_PASSWORD": secret})
    assert secret not in r.out + r.err
    doc = r.json()
    assert doc["status"] == "ok" and doc["sources"][0]["ok"]
    repo = CLI(str(tmp_path / "disk"))
    snaps = repo("snapshots", "--json").json()
    assert len(snaps) == 1  # the failed run left none
    ls = repo("ls", snaps[0]["id"]).out
    assert "/plandb.dump" in ls and "/globals.sql" in ls
    repo("restore", "latest", "--include", "/plandb.dump", "--target",
         pg_server.url("plancopy"), env={"MULTIBACKUP_SOURCE_PASSWORD": pg_server.password})
    assert pg_server.psql("SELECT count(*), max(name) FROM items", database="plancopy") == \
        "5000|item 999"
