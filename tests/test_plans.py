"""Plans from a TOML config, run by the CLI against real destinations."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import CLI, PASSWORD, S3_KEY, S3_SECRET, make_tree, snapshot_of_tree, start_weed


def _write_config(tmp_path: Path, s3_endpoint: str, bucket: str, retention: str = "") -> Path:
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    cfg = tmp_path / "multibackup.toml"
    cfg.write_text(f"""
[defaults]
password_file = "{tmp_path / 'pw'}"

[destinations.disk]
location = "{tmp_path / 'disk'}"

[destinations.cloud]
location = "s3://{bucket}/site"
endpoint = "{s3_endpoint}"
access_key_id = {{ env = "PLAN_S3_KEY" }}
secret_access_key = {{ env = "PLAN_S3_SECRET" }}

[destinations.spare]
location = "{tmp_path / 'spare'}"

[plans.site]
sources = ["{tmp_path / 'src'}"]
destinations = ["disk", "cloud", "spare"]
schedule = "daily 02:30"
tags = ["web"]
{retention}
""")
    return cfg


def _cli(tmp_path: Path, cfg: Path) -> CLI:
    cli = CLI("", env={"PLAN_S3_KEY": S3_KEY, "PLAN_S3_SECRET": S3_SECRET,
                       "MULTIBACKUP_CONFIG": str(cfg),
                       "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    for var in ("MULTIBACKUP_REPOSITORY", "MULTIBACKUP_PASSWORD", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY"):
        cli.env.pop(var, None)
    return cli


def test_plan_runs_to_every_destination_and_reports(tmp_path: Path) -> None:
    weed = start_weed(tmp_path / "weed")
    try:
        weed.client().create_bucket(Bucket="plans")
        cfg = _write_config(tmp_path, weed.endpoint, "plans")
        src = make_tree(tmp_path / "src", big=False)
        cli = _cli(tmp_path, cfg)

        listing = cli("plan", "list", "--json").json()
        assert [d["name"] for d in listing[0]["destinations"]] == ["disk", "cloud", "spare"]
        assert cli("plan", "status", "site", "--json").json()["last_run"] is None

        r = cli("plan", "run", "site", "--json")
        run = r.json()
        assert run["status"] == "ok" and run["created"]
        assert {d["name"]: d["ok"] for d in run["destinations"]} == {
            "disk": True, "cloud": True, "spare": True}
        assert S3_SECRET not in r.out + r.err

        # the cloud goes down: the run completes on the other two and says so
        weed.stop(kill=True)
        (src / "new.txt").write_text("written while the cloud was down\n")
        r = cli("plan", "run", "site", "--json", ok=False)
        assert r.code == 3
        run = r.json()
        assert run["status"] == "partial"
        assert {d["name"]: d["ok"] for d in run["destinations"]} == {
            "disk": True, "cloud": False, "spare": True}
        status = cli("plan", "status", "site", "--json").json()
        states = {d["name"]: d["state"] for d in status["destinations"]}
        assert states == {"disk": "ok", "cloud": "lagging", "spare": "ok"}
        text = cli("plan", "status", "site").out
        assert "cloud" in text and "lagging" in text

        # back up: the next run catches the cloud up by itself, then backs up
        weed = weed.restart()
        r = cli("plan", "run", "site", "--json")
        run = r.json()
        assert run["status"] == "ok"
        assert run["caught_up"].get("cloud", 0) > 0
        status = cli("plan", "status", "site", "--json").json()
        assert {d["state"] for d in status["destinations"]} == {"ok"}
        assert [x["status"] for x in status["recent"]] == ["ok", "partial", "ok"]

        # the cloud copy alone is complete and restores the latest state exactly
        env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "MULTIBACKUP_PASSWORD": PASSWORD}
        one = CLI(f"s3:{weed.endpoint}/plans/site", env=env)
        one("check", "--read-data")
        snaps = one("snapshots", "--json").json()
        assert len(snaps) == 3 and snaps[-1]["tags"] == ["web"]
        one("restore", "latest", "-t", str(tmp_path / "out"))
        assert snapshot_of_tree(tmp_path / "out" / str(src).lstrip("/")) == snapshot_of_tree(src)
    finally:
        weed.stop(kill=True)


def test_per_destination_retention_keeps_what_each_needs(tmp_path: Path) -> None:
    weed = start_weed(tmp_path / "weed")
    try:
        weed.client().create_bucket(Bucket="keep")
        cfg = _write_config(tmp_path, weed.endpoint, "keep", retention="""
[plans.site.retention]
keep_last = 1
[plans.site.retention_per_destination.cloud]
keep_last = 3
""")
        src = make_tree(tmp_path / "src", big=False)
        cli = _cli(tmp_path, cfg)
        for i in range(4):
            (src / f"run{i}.txt").write_text(f"run {i}\n" * (i + 1))
            cli("plan", "run", "site")
        env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "MULTIBACKUP_PASSWORD": PASSWORD}
        held = {}
        for name, loc in (("disk", str(tmp_path / "disk")),
                          ("cloud", f"s3:{weed.endpoint}/keep/site"),
                          ("spare", str(tmp_path / "spare"))):
            one = CLI(loc, env=env)
            held[name] = [s["id"] for s in one("snapshots", "--json").json()]
            # every snapshot a destination keeps restores from it alone
            one("check", "--read-data")
        assert len(held["disk"]) == 1 and len(held["spare"]) == 1 and len(held["cloud"]) == 3
        assert held["disk"][0] == held["cloud"][-1]
        oldest = CLI(f"s3:{weed.endpoint}/keep/site", env=env)
        oldest("restore", held["cloud"][0], "-t", str(tmp_path / "old"))
        restored = tmp_path / "old" / str(src).lstrip("/")
        assert (restored / "run1.txt").read_text() == "run 1\n" * 2
        assert not (restored / "run2.txt").exists()

        # the mirrored set is healthy: snapshots kept only on the cloud are not "missing"
        # on the disks, and a sync copies nothing back
        mirror = [x for loc in (str(tmp_path / "disk"), f"s3:{weed.endpoint}/keep/site",
                                str(tmp_path / "spare")) for x in ("-r", loc)]
        cli.env.update(env)
        r = cli(*mirror, "check", "--json")
        assert r.json()["copies"]["ok"]
        r = cli(*mirror, "sync", "--json")
        assert sum(d["copied"] for d in r.json()["destinations"]) == 0
    finally:
        weed.stop(kill=True)


def test_plan_errors_are_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[destinations.a]\nlocation = "/tmp/x"\n\n[plans.p]\nsources = ["/tmp"]\n'
                   'destinations = ["a", "b"]\n')
    cli = _cli(tmp_path, cfg)
    r = cli("plan", "list", ok=False)
    assert r.code == 2
    assert r.err.strip().splitlines() == [
        f"error: {cfg}:6: plans.p.destinations: unknown destination 'b' (known: a)"]
    good = _write_config(tmp_path, "http://127.0.0.1:9", "nothing")
    r = _cli(tmp_path, good)("plan", "run", "nosuch", ok=False)
    assert r.code == 2 and "unknown plan 'nosuch'" in r.err
    assert json.loads(_cli(tmp_path, good)("plan", "list", "--json").out)[0]["name"] == "site"
