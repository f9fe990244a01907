"""One repository mirrored on S3, SFTP and local disk, with real servers that fail.

Every test here checks what a user would: the bytes restored, what check reports for each
copy, the exit code and message of a run that lost a destination.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest
from conftest import CLI, S3Server, make_tree, snapshot_of_tree, start_weed


class Mirror:
    """The CLI with one ``-r`` per destination."""

    def __init__(self, cli: CLI, *locations: str) -> None:
        self.cli = cli
        self.locations = list(locations)

    def __call__(self, *args: str, ok: bool = True, only: str | None = None,
                 timeout: float = 240):
        repos = [only] if only else self.locations
        flags = [x for r in repos for x in ("-r", r)]
        return self.cli(*flags, *args, ok=ok, timeout=timeout)

    def popen(self, *args: str):
        flags = [x for r in self.locations for x in ("-r", r)]
        return self.cli.popen(*flags, *args)


@pytest.fixture
def env_for(tmp_path: Path, s3_server: S3Server) -> dict[str, str]:
    return {**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")}


@pytest.fixture
def three(tmp_path: Path, s3_server: S3Server, sftp_server, env_for) -> Mirror:
    """S3 (SeaweedFS), SFTP (OpenSSH) and a local directory."""
    s3 = f"s3://{s3_server.new_bucket()}/repo"
    sftp = sftp_server.location(f"mirror-{tmp_path.name}")
    local = str(tmp_path / "local-repo")
    cli = CLI("", env={**env_for, **sftp_server.env()})
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    m = Mirror(cli, s3, sftp, local)
    m("init", "--pack-size", "1")
    return m


def _summary(result) -> dict:
    return [json.loads(line) for line in result.out.splitlines() if line.startswith("{")][-1]


def _restored_equal(m: Mirror, source: Path, target: Path, only: str | None = None) -> None:
    r = m("restore", "latest", "-t", str(target), "--json", only=only)
    got = snapshot_of_tree(target / str(source).lstrip("/"))
    assert got == snapshot_of_tree(source)
    return _summary(r)


def test_every_destination_is_a_complete_repository(three: Mirror, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    r = three("backup", str(src), "--json")
    doc = _summary(r)
    assert [d["ok"] for d in doc["destinations"]] == [True, True, True]
    assert all(d["writes"] > 0 for d in doc["destinations"])
    for i, loc in enumerate(three.locations):
        snaps = three("snapshots", "--json", only=loc).json()
        assert [s["id"] for s in snaps] == [doc["snapshot_id"]]
        three("check", "--read-data", only=loc)
        _restored_equal(three, src, tmp_path / f"out{i}", only=loc)
    r = three("check", "--read-data", "--json")
    copies, repo = r.json()["copies"], r.json()["repository"]
    assert copies["ok"] and all(c["in_sync"] for c in copies["destinations"])
    # every pack's data was read (by the copy-by-copy survey), and the JSON says so
    assert repo["packs_read"] == copies["packs_read"] == repo["packs"] > 0
    assert f"read {repo['packs']} packs on each copy" in three("check", "--read-data").out


def _big_tree(root: Path, mib: int) -> Path:
    rng = random.Random(7)
    root.mkdir(parents=True)
    for i in range(mib // 4):
        (root / f"blob{i:03}.bin").write_bytes(rng.randbytes(4 * 1024 * 1024))
    (root / "notes.txt").write_text("hello\n" * 1000)
    return root


def test_s3_killed_mid_backup_then_sync(tmp_path: Path, sftp_server, env_for) -> None:
    weed = start_weed(tmp_path / "weed")
    try:
        bucket = "mirror-kill"
        weed.client().create_bucket(Bucket=bucket)
        s3 = f"s3:{weed.endpoint}/{bucket}/repo"
        local = tmp_path / "local-repo"
        cli = CLI("", env={**env_for, **sftp_server.env()})
        cli.env.pop("MULTIBACKUP_REPOSITORY", None)
        m = Mirror(cli, s3, sftp_server.location(f"kill-{tmp_path.name}"), str(local))
        m("init", "--pack-size", "1")
        src = _big_tree(tmp_path / "src", 96)
        proc = m.popen("backup", str(src), "--json")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill S3 once the run is well under way
            packs = list((local / "data").glob("*/*")) if (local / "data").exists() else []
            if len(packs) >= 8 or proc.poll() is not None:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the backup finished before the server could be killed"
        weed.stop(kill=True)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 3, err
        s3_desc = f"s3://{bucket}/repo"
        assert f"destination {s3_desc} failed" in err
        assert "completed on 2 of 3 destinations" in err
        doc = [json.loads(x) for x in out.splitlines() if x.startswith("{")][-1]
        states = {d["destination"]: d["ok"] for d in doc["destinations"]}
        assert states[s3_desc] is False and sum(states.values()) == 2
        lag = json.loads(next((tmp_path / "state" / "mirror").glob("*.json")).read_text())
        assert s3_desc in lag["lagging"]

        # the two survivors are complete on their own
        for loc in m.locations[1:]:
            m("check", "--read-data", only=loc)
        _restored_equal(m, src, tmp_path / "out-local", only=str(local))

        # while S3 is still down, check says so and sync cannot finish
        r = m("sync", ok=False)
        assert r.code == 3

        weed = weed.restart()
        r = m("sync", "--json")
        copies = {c["destination"]: c for c in r.json()["destinations"]}
        assert copies[s3_desc]["copied"] > 0 and copies[s3_desc]["in_sync"]
        r = m("check", "--read-data", "--json")
        assert r.json()["copies"]["ok"]
        sizes = {c["objects"] for c in r.json()["copies"]["destinations"]}
        assert len(sizes) == 1  # all copies hold the same objects
        lag = json.loads(next((tmp_path / "state" / "mirror").glob("*.json")).read_text())
        assert lag["lagging"] == {}
        _restored_equal(m, src, tmp_path / "out-s3", only=s3)
    finally:
        weed.stop(kill=True)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _objects(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.parts[len(root.parts)] in ("data", "index", "snapshots"))


def test_damage_on_two_destinations_found_repaired_and_restore_in_between(
        three: Mirror, tmp_path: Path, s3_server: S3Server, sftp_server) -> None:
    src = make_tree(tmp_path / "src")
    (src / "more.bin").write_bytes(random.Random(3).randbytes(3 * 1024 * 1024))
    three("backup", str(src))
    (src / "page1.html").write_text("changed\n")
    three("backup", str(src))
    rng = random.Random(11)
    local = Path(three.locations[2])
    sftp_root = Path(sftp_server.root) / f"mirror-{tmp_path.name}"
    expected: dict[str, set[str]] = {}
    touched: set[str] = set()  # each object stays intact on at least one destination
    for desc, root in ((three.locations[2], local), (three.locations[1], sftp_root)):
        names = [n for n in _objects(root) if n not in touched]
        victims = rng.sample(names, 5)
        touched.update(victims)
        for name in victims[:2]:
            (root / name).unlink()
        for name in victims[2:4]:
            _flip(root / name)
        with open(root / victims[4], "r+b") as fh:  # damaged and shorter
            fh.truncate(fh.seek(0, 2) // 2)
        expected[desc] = set(victims)
    # S3: one object deleted through the API
    bucket = three.locations[0].split("/")[2]
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="repo/data/")["Contents"]
            if o["Key"][len("repo/"):] not in touched]
    gone = rng.choice(keys)
    client.delete_object(Bucket=bucket, Key=gone)
    expected[three.locations[0]] = {gone[len("repo/"):]}

    r = three("check", "--read-data", "--json", ok=False)
    assert r.code == 1
    found = {c["destination"]: set(c["missing"]) | set(c["damaged"])
             for c in r.json()["copies"]["destinations"]}
    assert found == expected

    summary = _restored_equal(three, src, tmp_path / "out-damaged")
    assert summary["errors"] == []

    r = three("repair", "--json")
    assert r.json()["ok"]
    repaired = {c["destination"]: (c["objects"], c["bytes"]) for c in r.json()["destinations"]}
    r = three("check", "--read-data", "--json")
    assert r.json()["copies"]["ok"]
    # repair's summary shows what each destination holds after it, as check finds it
    assert repaired == {c["destination"]: (c["objects"], c["bytes"])
                        for c in r.json()["copies"]["destinations"]}
    for loc in three.locations:
        three("check", "--read-data", only=loc)


def test_restore_reads_around_damaged_copies(three: Mirror, tmp_path: Path, s3_server: S3Server,
                                             sftp_server) -> None:
    """Every copy has damaged packs, each pack is intact on exactly one destination: the
    restore is exact whichever copy the measured read order puts first."""
    src = make_tree(tmp_path / "src")
    three("backup", str(src))
    local = Path(three.locations[2])
    sftp_root = Path(sftp_server.root) / f"mirror-{tmp_path.name}"
    bucket = three.locations[0].split("/")[2]
    client = s3_server.client()
    packs = [n for n in _objects(local) if n.startswith("data/")]
    assert len(packs) >= 3
    for j, name in enumerate(packs):
        intact = j % 3
        if intact != 0:
            obj = client.get_object(Bucket=bucket, Key=f"repo/{name}")["Body"].read()
            bad = bytearray(obj)
            bad[len(bad) // 2] ^= 0x40
            client.put_object(Bucket=bucket, Key=f"repo/{name}", Body=bytes(bad))
        if intact != 1:
            _flip(sftp_root / name)
        if intact != 2:
            _flip(local / name)
    summary = _restored_equal(three, src, tmp_path / "out")
    assert summary["errors"] == []
    # whichever copy was read first held damaged blobs, which were read again elsewhere
    assert summary["fallback_reads"] > 0
    r = three("restore", "latest", "-t", str(tmp_path / "out2"))  # and it says so
    assert "came from another copy" in r.err and "check --all-destinations" in r.err


def test_destination_down_from_the_start(tmp_path: Path, s3_server: S3Server, env_for) -> None:
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    m = Mirror(cli, a, b)
    m("init")
    src = make_tree(tmp_path / "src", big=False)
    down = "s3:http://127.0.0.1:9/nobucket/repo"  # nothing listens on port 9
    m3 = Mirror(cli, a, b, down)
    r = m3("backup", str(src), ok=False)
    assert r.code == 3
    assert "destination s3://nobucket/repo failed" in r.err
    assert "cannot reach" in r.err
    assert env_for["AWS_SECRET_ACCESS_KEY"] not in r.out + r.err
    m3("check", only=a)


def test_destination_holding_another_repository_is_refused(tmp_path: Path, env_for) -> None:
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    cli("-r", a, "init")
    cli("-r", b, "init")
    before = sorted(os.listdir(Path(b) / "keys"))
    src = make_tree(tmp_path / "src", big=False)
    r = Mirror(cli, a, b)("backup", str(src), ok=False)
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "holds a different repository than" in lines[0]
    assert a in lines[0] and b in lines[0]
    assert not (Path(b) / "snapshots").exists() or not os.listdir(Path(b) / "snapshots")
    assert sorted(os.listdir(Path(b) / "keys")) == before


def test_keys_lost_on_some_copies_open_from_another_and_are_repaired(tmp_path: Path,
                                                                      env_for) -> None:
    """A key missing or damaged on one destination is not a wrong password: the
    repository opens with another copy's key whichever copy is read first, check names
    what is missing, and repair writes the key back."""
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b, c = (str(tmp_path / n) for n in "abc")
    m = Mirror(cli, a, b, c)
    m("init")
    src = make_tree(tmp_path / "src", big=False)
    m("backup", str(src))
    key = next((Path(a) / "keys").iterdir()).name
    (Path(a) / "keys" / key).unlink()
    damaged = Path(b) / "keys" / key
    damaged.write_bytes(damaged.read_bytes()[:-20] + b"x" * 20)
    for _ in range(4):  # the read order follows a speed probe: a or b is often first
        r = m("snapshots", "--json")
        assert len(r.json()) == 1
    r = m("snapshots", ok=False, only=a)
    assert r.code == 12  # a alone has no key left: there it is the usual error
    r = m("check", "--all-destinations", ok=False)
    assert r.code == 1 and f"keys/{key}" in r.out + r.err
    m("repair")
    for only in (a, b, c):
        assert len(m("snapshots", "--json", only=only).json()) == 1
    assert (Path(a) / "keys" / key).read_bytes() == (Path(c) / "keys" / key).read_bytes()
    assert damaged.read_bytes() == (Path(c) / "keys" / key).read_bytes()
    wrong = cli("-r", a, "-r", b, "-r", c, "snapshots", ok=False,
                env={"MULTIBACKUP_PASSWORD": "not it"})
    assert wrong.code == 12 and "wrong password" in wrong.err
    # the key slots gone from two copies and the config damaged on the third: no copy
    # opens alone, the mirror does (a slot from one, the config from another)
    for loc in (a, b):
        for slot in (Path(loc) / "keys").iterdir():
            slot.unlink()
    _flip_at(Path(c) / "config", 0.5)
    assert len(m("snapshots", "--json").json()) == 1
    m("repair")
    for only in (a, b, c):
        m("check", only=only)
    wrong = cli("-r", a, "-r", b, "-r", c, "snapshots", ok=False,
                env={"MULTIBACKUP_PASSWORD": "not it"})
    assert wrong.code == 12 and "wrong password" in wrong.err


def _flip_at(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x40
    path.write_bytes(bytes(data))


def _three_folders(tmp_path: Path, env: dict[str, str], files: int,
                   seed: int) -> tuple[Mirror, list[str], Path]:
    """A new mirror on three local folders with 1 MiB packs, and a source of ``files``
    random 40 KB files: (the mirror, its folders, the source)."""
    cli = CLI("", env=env)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    dests = [str(tmp_path / n) for n in "abc"]
    m = Mirror(cli, *dests)
    m("init", "--pack-size", "1")
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(seed)
    for i in range(files):
        (src / f"f{i:02d}.bin").write_bytes(rng.randbytes(40_000))
    return m, dests, src


def test_data_damaged_on_every_copy_is_traced_to_paths(tmp_path: Path, env_for) -> None:
    """A pack damaged on every destination: check reads its blobs from whichever copy
    holds each intact, and names the paths whose blob is intact nowhere (or says that
    every snapshot still restores whole)."""
    m, dests, src = _three_folders(tmp_path, env_for, files=24, seed=3)  # 24 blobs, one pack
    snap_id = m("backup", str(src), "--json").json()["snapshot_id"]
    pack = max((p for p in (Path(dests[0]) / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size).relative_to(dests[0])
    # a different blob damaged on each copy: every blob is still intact somewhere
    for dest, where in zip(dests, (0.1, 0.4, 0.7), strict=True):
        _flip_at(Path(dest) / pack, where)
    r = m("check", "--read-data", ok=False)
    assert r.code == 1
    assert "each of its blobs is intact on one of them" in r.err
    assert "is damaged in:" not in r.out
    assert "rebuild it ('multibackup repair' does)" in r.err
    assert "run 'multibackup repair' to heal them" in r.err
    _restored_equal(m, src, tmp_path / "out1")
    # repair puts the pack together from the parts each copy holds intact
    r = m("repair")
    assert "rebuilt 1 object(s) damaged on every destination" in r.out
    healed = [(Path(d) / pack).read_bytes() for d in dests]
    assert healed[0] == healed[1] == healed[2]
    assert blake3.blake3(healed[0]).hexdigest() == pack.name
    r = m("check", "--read-data", "--json")
    assert r.json()["copies"]["ok"] and r.json()["repository"]["errors"] == []
    # the pack cut short on two copies and flipped on the third (whichever copy the
    # mirror's listing takes its size from), then the small index file flipped at a
    # different place on each copy: both rebuilt, nothing called lost
    for dest, keep in ((dests[0], 0.4), (dests[1], 0.7)):
        with open(Path(dest) / pack, "r+b") as fh:
            fh.truncate(int(fh.seek(0, 2) * keep))
    _flip_at(Path(dests[2]) / pack, 0.1)
    r = m("check", "--read-data", ok=False)
    assert r.code == 1 and "each of its blobs is intact on one of them" in r.err
    assert "is damaged in:" not in r.out and "has size" not in r.err
    assert "run 'multibackup repair' to heal them" in r.err
    assert "rebuilt 1 object(s)" in m("repair").out
    index = next(p for p in (Path(dests[0]) / "index").iterdir()).relative_to(dests[0])
    for dest, where in zip(dests, (0.1, 0.5, 0.9), strict=True):
        _flip_at(Path(dest) / index, where)
    # check reads the rebuilt index: the snapshot's paths are all whole, none is named
    r = m("check", "--read-data", ok=False)
    assert r.code == 1 and "rebuild it ('multibackup repair' does)" in r.err
    assert "is damaged in:" not in r.out and "damaged or missing paths" not in r.err
    assert f"{index.name[:8]}" not in r.err.replace(str(index), "")
    assert "rebuilt 1 object(s)" in m("repair").out
    # so does the snapshot file: check still reads it (and its paths), repair rebuilds it
    snap = Path("snapshots") / snap_id
    for dest, where in zip(dests, (0.2, 0.5, 0.8), strict=True):
        _flip_at(Path(dest) / snap, where)
    r = m("check", "--read-data", "--json", ok=False)
    assert r.code == 1 and r.json()["repository"]["errors"] == []
    assert r.json()["repository"]["snapshots"] == 1
    assert r.json()["copies"]["rebuildable"] == [f"snapshots/{snap_id}"]
    assert "rebuilt 1 object(s)" in m("repair").out
    for name in (pack, index, snap):
        healed = [(Path(d) / name).read_bytes() for d in dests]
        assert healed[0] == healed[1] == healed[2]
        assert blake3.blake3(healed[0]).hexdigest() == name.name
    m("check", "--read-data")
    # the same blob damaged on every copy: its file is named, under its snapshot
    for dest in dests:
        _flip_at(Path(dest) / pack, 0.55)
    r = m("check", "--read-data", ok=False)
    assert r.code == 1 and "blobs are intact on no destination" in r.err
    lines = r.out.splitlines()
    at = lines.index(f"snapshot {snap_id[:8]} is damaged in:")
    named = [line.strip() for line in lines[at + 1:at + 3] if line.startswith(f"  {src}/")]
    assert len(named) == 1 and named[0].startswith(f"{src}/f")
    r = m("check", "--read-data", "--json", ok=False)
    assert r.json()["repository"]["affected"] == {snap_id: named}
    assert r.json()["copies"]["rebuildable"] == []
    # the same bytes lost everywhere: repair says so and writes nothing
    before = [(Path(d) / pack).read_bytes() for d in dests]
    r = m("repair", ok=False)
    assert r.code == 1 and "have no intact copy anywhere" in r.err and "rebuilt" not in r.out
    assert [(Path(d) / pack).read_bytes() for d in dests] == before


def test_reads_put_an_object_damaged_on_every_copy_together(tmp_path: Path,
                                                             env_for) -> None:
    """One blob and the index file damaged on every destination, each copy in other
    bytes: restore and check read both from the parts the copies hold intact."""
    m, dests, src = _three_folders(tmp_path, env_for, files=6, seed=11)
    m("backup", str(src))
    pack = max((p for p in (Path(dests[0]) / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size).relative_to(dests[0])
    index = next(p for p in (Path(dests[0]) / "index").iterdir()).relative_to(dests[0])
    # the pack's first blob (about 40 KB of its 240 KB) is damaged on every copy
    for dest, where, at in zip(dests, (0.01, 0.05, 0.1), (0.2, 0.5, 0.8), strict=True):
        _flip_at(Path(dest) / pack, where)
        _flip_at(Path(dest) / index, at)
    out = tmp_path / "out"
    r = m("--no-cache", "restore", "latest", "-t", str(out), "--json")
    assert snapshot_of_tree(out / str(src).lstrip("/")) == snapshot_of_tree(src)
    assert _summary(r)["errors"] == []
    r = m("check", "--read-data", "--json", ok=False)
    assert r.json()["repository"]["errors"] == [] and r.json()["repository"]["affected"] == {}
    assert sorted(r.json()["copies"]["rebuildable"]) == sorted([str(pack), str(index)])


def test_commands_that_only_read_never_create_a_missing_destination(tmp_path: Path,
                                                                     env_for) -> None:
    """A destination directory that does not exist (an unmounted disk's mount point) is
    not made by snapshots, check or restore: it is reported, the others serve."""
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, gone = str(tmp_path / "a"), str(tmp_path / "mnt" / "usb")
    cli("-r", a, "init")
    src = make_tree(tmp_path / "src", big=False)
    cli("-r", a, "backup", str(src))
    m = Mirror(cli, a, gone)
    for args, code in ((("snapshots",), 0), (("check",), 1),  # check: a copy is missing
                       (("restore", "latest", "-t", str(tmp_path / "o")), 0)):
        r = m(*args, ok=False)
        assert r.code == code, r.err
        assert f"{gone} could not be read" in r.err and "does not exist" in r.err
    assert not (tmp_path / "mnt").exists()
    r = cli("-r", gone, "snapshots", ok=False)
    assert r.code == 10 and r.err.strip() == \
        f"error: no repository at {gone} (the directory does not exist)"
    gone2 = str(tmp_path / "mnt" / "nas")  # a mirror of two: the same code, one line
    r = cli("-r", gone, "-r", gone2, "snapshots", ok=False)
    assert r.code == 10 and r.err.strip() == \
        f"error: no repository at {gone}, {gone2} (none of the directories exists)"
    assert not (tmp_path / "mnt").exists()


def test_every_destination_down_is_one_plain_error(tmp_path: Path, env_for) -> None:
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x")
    b.write_text("x")
    m = Mirror(cli, str(a), str(b))
    for args in (("snapshots",), ("backup", str(a))):
        r = m(*args, ok=False)
        assert r.code == 1
        assert "no destination is reachable" in r.err and f"{a}: not a directory" in r.err
        assert "served the command" not in r.err and "completed on" not in r.err
        assert "invalid configuration" not in r.err


def test_sync_removes_locks_left_by_gone_processes(tmp_path: Path, env_for) -> None:
    """A destination that failed mid-run keeps that run's lock; sync removes it."""
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    m = Mirror(cli, a, b)
    m("init")
    # a process takes a lock on b alone, then dies without releasing it
    code = ("import os, sys\n"
            "from multibackup.backends.location import open_store, parse_location\n"
            "from multibackup.repository.repository import Repository\n"
            "repo = Repository.open(open_store(parse_location(sys.argv[1])), sys.argv[2])\n"
            "repo.lock(command='backup')\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, b, cli.env["MULTIBACKUP_PASSWORD"]],
                   check=True, env=cli.env)
    assert len(os.listdir(Path(b) / "locks")) == 1
    r = m("sync")
    assert f"{b}: removed 1 stale lock(s)" in r.out
    assert os.listdir(Path(b) / "locks") == [] and os.listdir(Path(a) / "locks") == []


def test_new_destination_and_deletes_missed_while_down(tmp_path: Path, env_for) -> None:
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b, c = (str(tmp_path / n) for n in "abc")
    ab = Mirror(cli, a, b)
    ab("init")
    src = make_tree(tmp_path / "src")
    ab("backup", str(src))
    first = ab("snapshots", "--json").json()[0]["id"]

    # a third, empty destination joins: it gets keys and config at once, the rest by sync
    abc = Mirror(cli, a, b, c)
    r = abc("backup", str(src), "--force")
    assert f"{c} did not exist and was made" in r.err  # not "empty": a typo, or no disk?
    r = abc("sync", "--json")
    assert all(d["in_sync"] for d in r.json()["destinations"])
    assert [s["id"] for s in abc("snapshots", "--json", only=c).json()][0] == first
    abc("check", "--read-data", only=c)

    # c is down while the first snapshot is forgotten and pruned
    os.rename(c, c + ".away")
    Path(c).write_text("not a directory")
    r = abc("forget", first, "--prune", ok=False)
    assert r.code == 3 and "prune skipped" in r.err  # it waits for every copy
    os.unlink(c)
    os.rename(c + ".away", c)
    assert first in [s["id"] for s in abc("snapshots", "--json", only=c).json()]
    # the mirror as a whole no longer lists it, though c, back, still holds it until sync
    assert first not in [s["id"] for s in abc("snapshots", "--json").json()]
    # and a check of the copies says c is behind, not "all copies are equal"
    r = abc("check", "--all-destinations", ok=False)
    assert r.code != 0 and "deleted on the other copies while it was down" in r.out, r.out
    assert f"snapshots/{first}" in json.dumps(
        abc("check", "--all-destinations", "--json", ok=False).json())
    r = abc("sync", "--json")
    assert sum(d["deleted"] for d in r.json()["destinations"]) > 0
    for loc in (a, b, c):  # the forgotten snapshot stays forgotten everywhere
        assert first not in [s["id"] for s in abc("snapshots", "--json", only=loc).json()]
    r = abc("check", "--read-data", "--json")
    assert r.json()["copies"]["ok"]
    _restored_equal(abc, src, tmp_path / "out", only=c)


def _down(loc: str) -> None:
    """The destination is unreachable: its folder is away, a file in its place."""
    os.rename(loc, loc + ".away")
    Path(loc).write_text("not a directory")


def _back(loc: str) -> None:
    os.unlink(loc)
    os.rename(loc + ".away", loc)


@contextlib.contextmanager
def _small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (a destination whose disk fills up), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _two_folders(tmp_path: Path, env: dict[str, str],
                 second: Path | None = None) -> tuple[Mirror, str, str, Path]:
    """A new mirror on the folders ``a`` and ``second`` (default ``b``), and an empty
    source folder: (the mirror, its two folders, the source)."""
    cli = CLI("", env=env)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b = str(tmp_path / "a"), str(second or tmp_path / "b")
    m = Mirror(cli, a, b)
    m("init")
    src = tmp_path / "src"
    src.mkdir()
    return m, a, b, src


def test_prune_waits_for_every_copy_and_a_lagging_copy_is_caught_up_first(
        tmp_path: Path, env_for) -> None:
    """A prune computed without a copy that is down (or behind) would delete packs that
    snapshots only that copy holds still need, and the catch-up would then delete them
    there too; a backup into a copy that lags would give it a snapshot without the packs
    it missed. Prune waits, a backup catches the copy up first."""
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    m = Mirror(cli, a, b)
    m("init", "--pack-size", "1")
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)
    (src / "one.bin").write_bytes(rng.randbytes(300_000))
    first = m("backup", str(src), "--json").json()["snapshot_id"]
    _down(b)
    (src / "two.bin").write_bytes(rng.randbytes(300_000))
    assert m("backup", str(src), ok=False).code == 3  # b misses this one
    _back(b)
    _down(a)
    # b alone is behind (and a is down): prune waits; forget still forgets
    r = m("prune", ok=False)
    assert r.code == 1 and "prune needs every copy of the repository" in r.err
    r = m("forget", first, "--prune", ok=False)
    assert r.code == 3 and "prune skipped" in r.err
    _back(a)
    (src / "three.bin").write_bytes(rng.randbytes(300_000))
    r = m("backup", str(src))
    assert f"{b}: caught up first" in r.out
    m("prune")
    for loc in (a, b):  # each copy alone is whole, every snapshot of it restores
        m("check", "--read-data", only=loc)
        assert first not in [s["id"] for s in m("snapshots", "--json", only=loc).json()]
    _restored_equal(m, src, tmp_path / "out", only=b)


def test_per_destination_retention_with_a_copy_down_loses_nothing(tmp_path: Path,
                                                                  env_for) -> None:
    """The copy that keeps more snapshots is down when the plan applies retention: the
    prune waits for it (it used to delete packs its snapshots need, there too, at the
    catch-up), and its snapshots stay whole."""
    a, b = tmp_path / "fast", tmp_path / "cold"
    src = tmp_path / "src"
    src.mkdir()
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f"""
[defaults]
password_env = "MULTIBACKUP_PASSWORD"
[destinations.fast]
location = "{a}"
[destinations.cold]
location = "{b}"
[plans.p]
sources = ["{src}"]
destinations = ["fast", "cold"]
[plans.p.retention]
keep_last = 1
[plans.p.retention_per_destination.cold]
keep_last = 10
""")
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    rng = random.Random(9)
    for i in range(2):
        for old in src.iterdir():
            old.unlink()
        (src / f"f{i}.bin").write_bytes(rng.randbytes(400_000))
        cli("--config", str(cfg), "plan", "run", "p")
    _down(str(b))
    (src / "f1.bin").unlink()
    (src / "f2.bin").write_bytes(rng.randbytes(400_000))
    r = cli("--config", str(cfg), "plan", "run", "p", ok=False)
    assert r.code == 3 and "prune skipped" in r.out + r.err
    _back(str(b))
    cli("--config", str(cfg), "plan", "run", "p")
    for loc in (a, b):
        cli("-r", str(loc), "check", "--read-data")
    assert len(cli("-r", str(b), "snapshots", "--json").json()) >= 3
    assert len(cli("-r", str(a), "snapshots", "--json").json()) == 1


def test_a_copy_that_fills_up_gets_no_index_or_snapshot_without_its_packs(
        tmp_path: Path, env_for) -> None:
    """sync into a destination whose disk is full: the packs fail, and the index and
    snapshot that name them are held back, so that copy stays a whole (older)
    repository."""
    with _small_disk(tmp_path) as mnt:
        m, a, b, src = _two_folders(tmp_path, env_for, mnt / "b")
        (src / "small.bin").write_bytes(os.urandom(1_000_000))
        first = m("backup", str(src), "--json").json()["snapshot_id"]
        (src / "big.bin").write_bytes(os.urandom(6_000_000))
        assert m("backup", str(src), ok=False).code == 3  # b is full
        r = m("sync", ok=False)
        assert r.code == 3 and "no space left" in r.out + r.err
        assert [s["id"] for s in m("snapshots", "--json", only=b).json()] == [first]
        m("check", "--read-data", only=b)


def test_two_copies_that_disagree_on_a_size_are_told_apart_by_their_bytes(
        tmp_path: Path, env_for) -> None:
    """Two copies, one pack cut short on one: no size has a majority, so the bytes are
    hashed (it passed as "in sync", without --read-data)."""
    m, a, b, src = _two_folders(tmp_path, env_for)
    (src / "f.bin").write_bytes(os.urandom(2_000_000))
    m("backup", str(src))
    pack = max((p for p in (Path(b) / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    with open(pack, "r+b") as fh:
        fh.truncate(fh.seek(0, 2) - 1000)
    r = m("check", "--json", ok=False)
    assert r.code == 1
    [copy_b] = [d for d in r.json()["copies"]["destinations"] if d["destination"] == b]
    assert list(copy_b["damaged"]) == [str(pack.relative_to(b))]
    m("sync")
    assert pack.read_bytes() == (Path(a) / pack.relative_to(b)).read_bytes()
    m("check", "--read-data")


def test_a_destination_that_stops_answering_does_not_hang_the_mirror(tmp_path: Path,
                                                                     env_for) -> None:
    """An S3 server frozen (SIGSTOP): it accepts connections and answers nothing. Each
    request gives up after $MULTIBACKUP_TIMEOUT seconds, and the run goes on with the
    other copy (it waited forever)."""
    weed = start_weed(tmp_path / "weed")
    try:
        weed.client().create_bucket(Bucket="frozen")
        s3 = f"s3:{weed.endpoint}/frozen/repo"
        local = str(tmp_path / "local")
        cli = CLI("", env={**env_for, "MULTIBACKUP_TIMEOUT": "2"})
        cli.env.pop("MULTIBACKUP_REPOSITORY", None)
        m = Mirror(cli, local, s3)
        m("init")
        src = make_tree(tmp_path / "src", big=False)
        m("backup", str(src))
        assert weed.process is not None
        os.kill(weed.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = m("--no-cache", "snapshots", "--json", ok=False, timeout=180)
            assert r.code == 0 and len(r.json()) == 1, r.err
            (src / "new.txt").write_text("after the freeze\n")
            r = m("backup", str(src), ok=False, timeout=180)
            assert r.code == 3 and "destination s3://frozen/repo failed" in r.err
            assert time.monotonic() - started < 150
            _restored_equal(m, src, tmp_path / "out", only=local)
        finally:
            os.kill(weed.process.pid, signal.SIGCONT)
    finally:
        weed.stop(kill=True)


def test_one_folder_given_twice_is_refused(tmp_path: Path, env_for) -> None:
    """A folder and a symlink to it are one copy, not two (and "./a/." is "a")."""
    cli = CLI("", env=env_for)
    cli.env.pop("MULTIBACKUP_REPOSITORY", None)
    a = tmp_path / "a"
    a.mkdir()
    (tmp_path / "link").symlink_to(a)
    for other in (tmp_path / "link", tmp_path / "." / "a" / "."):
        r = cli("-r", str(a), "-r", str(other), "init", ok=False)
        assert r.code == 2 and "the same destination is given twice" in r.err
    assert not (a / "config").exists()


def test_full_disk_and_wrong_credentials_do_not_fail_the_run(tmp_path: Path,
                                                             s3_server: S3Server,
                                                             env_for) -> None:
    """One destination fills up, another rejects the credentials: the third gets it all."""
    with _small_disk(tmp_path) as mnt:
        bucket = s3_server.new_bucket()
        s3 = f"s3://{bucket}/repo"
        good = str(tmp_path / "good")
        cli = CLI("", env=env_for)
        cli.env.pop("MULTIBACKUP_REPOSITORY", None)
        m = Mirror(cli, good, str(mnt), s3)
        m("init", "--pack-size", "1")
        src = _big_tree(tmp_path / "src", 12)
        wrong = {"AWS_SECRET_ACCESS_KEY": "not-the-secret-7c1e"}
        r = m.cli(*[x for loc in m.locations for x in ("-r", loc)], "backup", str(src),
                  "--json", ok=False, env=wrong)
        assert r.code == 3, r.err
        assert f"destination {mnt} failed" in r.err and "no space left" in r.err
        assert f"destination {s3} failed" in r.err
        assert "not-the-secret-7c1e" not in r.out + r.err
        assert "completed on 1 of 3 destinations" in r.err
        m("check", "--read-data", only=good)
        _restored_equal(m, src, tmp_path / "out", only=good)
        # the full disk's earlier state is intact: the first (empty) repository still opens
        m("snapshots", only=str(mnt))


def test_repair_fast_points_to_a_full_repair(tmp_path: Path, env_for) -> None:
    """A pack lost on one copy and damaged inside on the others: --fast (sizes only)
    takes the others for healthy, cannot copy from them, and says a full repair reads
    every copy; the full repair rebuilds the pack from the two. (Sizes that disagree
    make even --fast hash the copies: a pack cut short is found by its bytes.)"""
    m, dests, src = _three_folders(tmp_path, env_for, files=20, seed=4)
    m("backup", str(src))
    pack = max((p for p in (Path(dests[0]) / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size).relative_to(dests[0])
    (Path(dests[0]) / pack).unlink()
    _flip_at(Path(dests[1]) / pack, 0.2)
    _flip_at(Path(dests[2]) / pack, 0.8)
    r = m("repair", "copies", "--fast", ok=False)
    assert r.code == 3 and "a full 'multibackup repair' (without --fast)" in r.err
    assert "rebuilt 1 object(s)" in m("repair").out
    m("check", "--read-data")
    _restored_equal(m, src, tmp_path / "out")
