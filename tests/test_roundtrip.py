"""Back up and restore through the real CLI, on local disk and on a real S3 server."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, make_tree, snapshot_of_tree


def _restore_root(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_backup_restore_round_trip(where: str, tmp_path: Path, cli: CLI, request) -> None:
    if where == "s3":
        cli = request.getfixturevalue("s3_cli")
    src = make_tree(tmp_path / "src")
    cli("init")
    r = cli("backup", str(src), "--tag", "web", "--json")
    summary = r.json()
    assert summary["files_new"] == 37 and summary["files_changed"] == 0
    assert summary["bytes_read"] == summary["total_bytes"] > 3 * 1024 * 1024
    target = tmp_path / "restore"
    cli("restore", "latest", "--target", str(target))
    assert snapshot_of_tree(_restore_root(target, src)) == snapshot_of_tree(src)
    restored = _restore_root(target, src)
    assert os.stat(restored / "hardlink.html").st_ino == os.stat(restored / "page2.html").st_ino
    assert (restored / "empty").is_dir() and not any((restored / "empty").iterdir())


def test_incremental_backup_reads_only_changed_files(tmp_path: Path, cli: CLI) -> None:
    src = make_tree(tmp_path / "src")
    cli("init")
    first = cli("backup", str(src), "--json").json()
    second = cli("backup", str(src), "--json").json()
    assert second["files_unchanged"] == first["files_new"]
    # no file content is read or stored again (directory trees above the source may
    # change if other processes touch /tmp meanwhile, so only data blobs are counted)
    assert second["bytes_read"] == 0 and second["data_blobs"] == 0
    assert second["parent"] == first["snapshot_id"]
    (src / "page5.html").write_text("changed\n")
    (src / "new.txt").write_text("new\n")
    (src / "page6.html").unlink()
    third = cli("backup", str(src), "--json").json()
    assert (third["files_new"], third["files_changed"]) == (1, 1)
    assert third["bytes_read"] == len("changed\n") + len("new\n")
    diff = cli("diff", first["snapshot_id"][:8], "latest", "--json").json()
    changes = {(c["change"], c["path"].rsplit("/", 1)[1]) for c in diff["changes"]}
    assert {("+", "new.txt"), ("-", "page6.html"), ("M", "page5.html")} <= changes
    target = tmp_path / "restore"
    cli("restore", first["snapshot_id"][:10], "--target", str(target))
    assert (_restore_root(target, src) / "page6.html").exists()


def test_listing_commands(tmp_path: Path, cli: CLI) -> None:
    src = make_tree(tmp_path / "src", big=False)
    cli("init")
    snap = cli("backup", str(src), "--tag", "a", "--host", "web1", "--json").json()["snapshot_id"]
    snaps = cli("snapshots", "--json").json()
    assert [s["id"] for s in snaps] == [snap]
    assert snaps[0]["hostname"] == "web1" and snaps[0]["tags"] == ["a"]
    assert snaps[0]["summary"]["files_new"] == 35
    text = cli("snapshots").out
    assert snap[:8] in text and "web1" in text
    nodes = cli("ls", "latest", "--json").json()["nodes"]
    paths = {n["path"] for n in nodes}
    assert str(src / "deep" / "a" / "b" / "note.txt") in paths
    link = next(n for n in nodes if n["path"].endswith("/link.html"))
    assert link["type"] == "symlink" and link["target"] == "page1.html"
    lines = cli("ls", snap[:6], str(src / "css"), "-l").out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("main.css")
    stats = cli("stats", "--json").json()
    assert stats["snapshots"] == 1 and stats["total_file_count"] == 35
    assert stats["repository_pack_size"] > 0


def test_include_restores_only_matching_paths(tmp_path: Path, cli: CLI) -> None:
    src = make_tree(tmp_path / "src", big=False)
    cli("init")
    cli("backup", str(src))
    target = tmp_path / "t"
    cli("restore", "latest", "--target", str(target), "--include", str(src / "deep"))
    root = _restore_root(target, src)
    assert (root / "deep" / "a" / "b" / "note.txt").read_text() == "deep\n"
    assert not (root / "page1.html").exists()
    none = tmp_path / "none"
    r = cli("restore", "latest", "--target", str(none), "--include", "/no/such/path",
            ok=False)
    assert r.code == 1 and "nothing in the snapshot matches --include /no/such/path" in r.err
    assert not none.exists()  # the target it made for nothing is not left behind


def test_exclude_globs(tmp_path: Path, cli: CLI) -> None:
    src = make_tree(tmp_path / "src", big=False)
    cli("init")
    cli("backup", str(src), "--exclude", "*.html", "--exclude", str(src / "deep"))
    paths = {n["path"] for n in cli("ls", "latest", "--json").json()["nodes"]}
    assert not any(p.endswith(".html") for p in paths)
    assert not any("/deep" in p for p in paths)
    assert str(src / "css" / "main.css") in paths


def test_forget_and_prune_free_space_and_keep_restorable(tmp_path: Path, cli: CLI) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cli("init", "--pack-size", "1")
    ids = []
    for i in range(4):
        for old in src.glob("gen*.bin"):
            old.unlink()
        (src / f"gen{i}.bin").write_bytes(os.urandom(700_000))
        ids.append(cli("backup", str(src), "--json").json()["snapshot_id"])
    dry = cli("forget", "--keep-last", "1", "--prune", "--dry-run", "--json").json()
    assert len(dry["removed"]) == 3 and len(cli("snapshots", "--json").json()) == 4
    before = sum(f.stat().st_size for f in (tmp_path / "repo" / "data").rglob("*") if f.is_file())
    res = cli("forget", "--keep-last", "1", "--prune", "--json").json()
    assert sorted(res["removed"]) == sorted(ids[:3])
    after = sum(f.stat().st_size for f in (tmp_path / "repo" / "data").rglob("*") if f.is_file())
    assert after < before - 3 * 600_000
    cli("check", "--read-data")
    target = tmp_path / "t"
    cli("restore", "latest", "--target", str(target))
    assert (_restore_root(target, src) / "gen3.bin").read_bytes() == (src / "gen3.bin").read_bytes()


def test_key_management(tmp_path: Path, cli: CLI) -> None:
    cli("init")
    cli("key", "add", env={"MULTIBACKUP_NEW_PASSWORD": "second password"})
    keys = cli("key", "list", "--json").json()
    assert len(keys) == 2 and sum(k["current"] for k in keys) == 1
    cli("snapshots", env={"MULTIBACKUP_PASSWORD": "second password"})
    first = next(k for k in keys if k["current"])
    r = cli("key", "remove", first["id"][:8], ok=False)
    assert r.code == 1 and "currently in use" in r.err
    cli("key", "remove", first["id"][:8], env={"MULTIBACKUP_PASSWORD": "second password"})
    assert cli("snapshots", ok=False).code == 12
    cli("key", "passwd", env={"MULTIBACKUP_PASSWORD": "second password",
                               "MULTIBACKUP_NEW_PASSWORD": "third password"})
    assert cli("snapshots", ok=False, env={"MULTIBACKUP_PASSWORD": "second password"}).code == 12
    cli("snapshots", env={"MULTIBACKUP_PASSWORD": "third password"})


def test_password_file_and_repository_option(tmp_path: Path, cli: CLI) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from a file\n")
    env = {"MULTIBACKUP_PASSWORD": "", "MULTIBACKUP_REPOSITORY": ""}
    cli("-r", str(tmp_path / "r2"), "init", "--password-file", str(pw), env=env)
    cli("snapshots", "-r", str(tmp_path / "r2"), "--password-file", str(pw), env=env)
    r = cli("snapshots", "-r", str(tmp_path / "r2"), ok=False, env=env)
    assert r.code == 2 and "no password given" in r.err


def test_demo_runs_and_verifies(tmp_path: Path, cli: CLI) -> None:
    r = cli("demo", "--dir", str(tmp_path / "demo"), "--json")
    doc = [json.loads(x) for x in r.out.splitlines() if x.startswith("{")][-1]
    assert doc == {"work": str(tmp_path / "demo"), "snapshots": doc["snapshots"],
                   "verified": True, "healed": True, "check_ok": True}
    # the demo's destinations really are one repository, complete on each
    for name in ("disk", "cloud-a", "cloud-b"):
        repo = cli("-r", str(tmp_path / "demo" / name), "snapshots", "--json",
                   env={"MULTIBACKUP_PASSWORD": "demo-password"}).json()
        assert [s["id"] for s in repo] == doc["snapshots"]


def test_remote_repository_uses_verified_local_cache(tmp_path: Path, s3_cli: CLI, s3_server) -> None:
    """Trees, index and snapshots of a remote repository are served from the local cache;
    check ignores the cache and reports what the cloud really lost."""
    src = make_tree(tmp_path / "src", big=False)
    s3_cli("init")
    s3_cli("backup", str(src))
    cache = Path(s3_cli.env["MULTIBACKUP_CACHE_DIR"])
    cached = {p.name for p in cache.rglob("*") if p.is_file()}
    assert cached, "the backup should have filled the cache"
    bucket, prefix = s3_cli.repo[len("s3://"):].split("/", 1)
    client = s3_server.client()
    tree_packs = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/data/")
                  ["Contents"] if o["Key"].rsplit("/", 1)[1] in cached]
    assert tree_packs
    for key in tree_packs:
        client.delete_object(Bucket=bucket, Key=key)
    listing = s3_cli("ls", "latest", "--json").json()["nodes"]
    assert any(n["path"].endswith("/note.txt") for n in listing)
    r = s3_cli("check", ok=False)
    assert r.code == 1 and "missing" in r.err


def test_prune_sweeps_temp_files_left_by_killed_writes(tmp_path: Path, cli: CLI) -> None:
    src = make_tree(tmp_path / "src", big=False)
    cli("init")
    cli("backup", str(src))
    tmp_dir = tmp_path / "repo" / ".tmp"
    tmp_dir.mkdir(exist_ok=True)
    stale, fresh = tmp_dir / "abc.partial", tmp_dir / "def.partial"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    old = os.stat(stale).st_mtime - 7200
    os.utime(stale, (old, old))
    report = cli("prune", "--json").json()
    assert report["temporary_removed"] == 1
    assert not stale.exists() and fresh.exists()
    cli("check", "--read-data")


@pytest.mark.parametrize("where", ["header", "length-field", "blob"])
def test_check_read_data_finds_a_flip_anywhere_in_a_pack(tmp_path: Path, cli: CLI,
                                                         where: str) -> None:
    """check reads packs in pieces; a flipped byte in any part of a pack is still found."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    cli("init", "--pack-size", "1")
    cli("backup", str(src))
    cli("check", "--read-data")
    packs = sorted((tmp_path / "repo" / "data").rglob("*"), key=lambda p: p.stat().st_size)
    pack = packs[-1]
    data = bytearray(pack.read_bytes())
    pos = {"header": len(data) - 40, "length-field": len(data) - 1, "blob": 1000}[where]
    data[pos] ^= 0x10
    pack.write_bytes(bytes(data))
    r = cli("check", "--read-data", ok=False)
    assert r.code == 1 and pack.name[:8] in r.err


@pytest.mark.skipif(os.geteuid() != 0, reason="restoring owners needs root")
@pytest.mark.parametrize("setgid_target", [False, True])
def test_restore_as_root_keeps_owners_and_groups(tmp_path: Path, cli: CLI,
                                                 setgid_target: bool) -> None:
    src = make_tree(tmp_path / "src", big=False)
    os.chown(src / "page4.html", 65534, 65534)
    os.chown(src / "css", 65534, 0)
    os.chown(src / "page5.html", 0, 65534)
    cli("init")
    cli("backup", str(src))
    target = tmp_path / "t"
    target.mkdir()
    if setgid_target:  # a setgid directory hands its group down to what is created in it
        os.chown(target, 0, 65534)
        os.chmod(target, 0o2775)
    cli("restore", "latest", "--target", str(target))
    root = _restore_root(target, src)
    for dirpath, dirs, files in os.walk(src):
        for name in dirs + files:
            a = Path(dirpath) / name
            b = root / a.relative_to(src)
            sa, sb = a.lstat(), b.lstat()
            assert (sb.st_uid, sb.st_gid) == (sa.st_uid, sa.st_gid), a


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_restore_gives_every_file_its_mode_under_any_umask(tmp_path: Path, cli: CLI,
                                                           umask: int) -> None:
    """Files the umask leaves alone are created with their mode, the rest get it by
    chmod: either way each one ends with exactly its backed-up mode, one blob or many,
    with setuid, setgid and sticky bits, owner-writable or not."""
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    big = rng.randbytes(12 * 1024 * 1024)  # several chunks: the file is opened per blob
    modes = [0o644, 0o755, 0o600, 0o666, 0o777, 0o444, 0o400, 0o200, 0o000, 0o4755,
             0o2750, 0o1777, 0o6711, 0o640]
    for mode in modes:
        for kind, data in (("small", b"%o\n" % mode), ("big", big)):
            path = src / f"{kind}-{mode:04o}"
            path.write_bytes(data)
            os.chmod(path, mode)
    cli("init")
    cli("backup", str(src))
    old = os.umask(umask)
    try:
        cli("restore", "latest", "--target", str(tmp_path / "t"))
    finally:
        os.umask(old)
    root = _restore_root(tmp_path / "t", src)
    got = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in root.iterdir()}
    assert got == {p.name: stat.S_IMODE(p.lstat().st_mode) for p in src.iterdir()}
    assert len(got) == 2 * len(modes)
    assert (root / "big-0444").read_bytes() == big and (root / "small-0000").read_bytes() == b"0\n"


def test_check_names_every_damaged_path_in_every_snapshot(tmp_path: Path, cli: CLI) -> None:
    """Damage two files' data and one directory's listing: check --read-data names those
    paths (a lost listing as the directory) in each snapshot that holds them, and only
    those; intact trees beside the damaged one in its pack still load."""
    from multibackup.backends import open_store, parse_location
    from multibackup.repository.repository import Repository

    src = tmp_path / "src"
    files = {"a/x.txt": b"x" * 5000, "a/y.txt": b"y" * 7000, "b/z.txt": b"z" * 3000,
             "c/d/w.txt": b"w" * 4000, "top.txt": b"top"}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    cli("init")
    first = cli("backup", str(src), "--json").json()["snapshot_id"]
    (src / "a" / "x.txt").unlink()
    (src / "c" / "d" / "w.txt").write_bytes(b"v" * 4100)  # a new listing for c/d
    second = cli("backup", str(src), "--json").json()["snapshot_id"]
    (src / "a").rename(tmp_path / "a-moved")
    (src / "c" / "d" / "w.txt").unlink()
    third = cli("backup", str(src), "--json").json()["snapshot_id"]
    assert cli("check", "--read-data", "--json").json()["affected"] == {}

    repo = Repository.open(open_store(parse_location(cli.repo)), cli.env["MULTIBACKUP_PASSWORD"])
    repo.load_index()
    snap = repo.load_snapshot(first)
    root = {n.name: n for n in repo.load_tree(snap.tree)}
    path = [p for p in str(src).strip("/").split("/")]
    node = root[path[0]]
    for part in path[1:]:
        node = {n.name: n for n in repo.load_tree(node.subtree)}[part]
    here = {n.name: n for n in repo.load_tree(node.subtree)}
    x_blob = {n.name: n for n in repo.load_tree(here["a"].subtree)}["x.txt"].content[0]
    d_tree = {n.name: n for n in repo.load_tree(here["c"].subtree)}["d"].subtree
    top_blob = here["top.txt"].content[0]  # in every snapshot
    for blob in (x_blob, d_tree, top_blob):
        loc = repo.index.lookup(blob)
        pack = Path(cli.repo) / "data" / loc.pack_id.hex()[:2] / loc.pack_id.hex()
        data = bytearray(pack.read_bytes())
        data[loc.offset + loc.length // 2] ^= 0x01
        pack.write_bytes(bytes(data))

    r = cli("check", "--read-data", "--json", ok=False)
    assert r.code == 1, r.err
    affected = json.loads(r.out)["affected"]
    base = "/" + str(src).strip("/")
    assert affected == {first: [f"{base}/a/x.txt", f"{base}/c/d", f"{base}/top.txt"],
                        second: [f"{base}/top.txt"], third: [f"{base}/top.txt"]}
    # the tree of b shares its pack with the damaged listing of c/d, and still loads
    target = tmp_path / "out"
    cli("restore", second, "--target", str(target), "--include", f"{base}/b")
    assert (target / base.lstrip("/") / "b" / "z.txt").read_bytes() == files["b/z.txt"]


def _restore_watching_packs(cli: CLI, target: Path, monkeypatch: pytest.MonkeyPatch,
                            seen: Any, workers: int | None = None) -> tuple[Any, Any, dict]:
    """Restore the latest snapshot in this process, calling ``seen(restorer, pack_id)``
    as each pack goes to the workers; returns the summary, the restorer and the
    snapshot's nodes by path."""
    from multibackup.backends.location import open_store, parse_location
    from multibackup.engine import restore as restore_mod
    from multibackup.repository.repository import Repository

    restorer: list[Any] = []
    real_submit = restore_mod.ThreadPoolExecutor.submit

    def submit(pool, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        if getattr(fn, "__name__", "") == "_restore_pack":
            seen(restorer[0], args[0])
        return real_submit(pool, fn, *args, **kwargs)

    monkeypatch.setattr(restore_mod.ThreadPoolExecutor, "submit", submit)
    with Repository.open(open_store(parse_location(cli.repo)),
                         cli.env["MULTIBACKUP_PASSWORD"]) as repo:
        repo.load_index()
        snap = repo.find_snapshot("latest")
        nodes = {path: (node, repo.index.lookup(node.content[0]).pack_id
                        if node.content else None)
                 for path, node in repo.walk(snap.tree)}
        restorer.append(restore_mod.Restorer(repo, snap, str(target), workers=workers))
        return restorer[0].run(), restorer[0], nodes


def test_restore_starts_before_the_walk_ends_and_shared_content_far_apart_arrives(
        tmp_path: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs go to the workers while the walk goes on; a file later in the tree that
    shares content with an early one (its pack already sent) still gets it, and such
    returns widen the window instead of costing a read each."""

    rng = random.Random(7)
    shared = rng.randbytes(200_000)
    src = tmp_path / "src"
    files = {"a/first.bin": shared, "c/again.bin": shared, "e/more.bin": shared,
             "g/last.bin": shared, "g/empty": b""}
    for gap in "bdf":  # 5 MiB of incompressible content between each two: 5 packs of 1 MiB
        for i in range(5):
            files[f"{gap}/{i}.bin"] = rng.randbytes(1 << 20)
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    cli("init", "--pack-size", "1")
    cli("backup", str(src))

    sent: list[tuple[bytes, int]] = []  # (pack, files planned when it was sent)
    summary, r, nodes = _restore_watching_packs(
        cli, tmp_path / "out", monkeypatch, lambda r, pack: sent.append((pack, r.files_planned)))
    shared_pack = next(pack for path, (_, pack) in nodes.items()
                       if path.endswith("/a/first.bin"))
    assert summary.errors == [] and summary.files == len(files)
    out = tmp_path / "out" / str(src).lstrip("/")
    assert {rel: (out / rel).read_bytes() for rel in files} == files
    total = r.files_planned
    assert total == len(files) and r._files == {}  # every file restored has been let go
    # restoring began before the walk had planned every file ...
    assert sent[0][1] < total
    # ... and the pack holding the shared content was read twice: once for a/first.bin
    # (it went as soon as the walk had asked for each of its blobs), again for
    # c/again.bin, which the walk reached after that; the second read waited for
    # e/more.bin and g/last.bin (a few blob writes on, well inside the window) instead
    # of going out twice more
    assert [p for p, _ in sent].count(shared_pack) == 2


def test_a_pack_restore_needs_part_of_waits_for_writes_not_bytes(
        tmp_path: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack holding a blob the restore does not need (an old version's) waits until
    the walk has planned many blob writes past it, not a few packs' worth of bytes: the
    file after a large one still finds it unsent, and the pack is read once."""

    rng = random.Random(5)
    src = tmp_path / "src"
    src.mkdir()
    small = {name: rng.randbytes(100_000) for name in ("a_first.bin", "c_gone.bin",
                                                       "z_last.bin")}
    for name, data in small.items():
        (src / name).write_bytes(data)
    cli("init", "--pack-size", "1")
    cli("backup", "--workers", "1", str(src))  # the three small files share one pack
    (src / "c_gone.bin").unlink()  # its blob stays in that pack, unneeded
    (src / "m_large.bin").write_bytes(rng.randbytes(6 << 20))  # 6 packs between the two
    cli("backup", "--workers", "1", str(src))

    sent: list[bytes] = []
    summary, _, nodes = _restore_watching_packs(cli, tmp_path / "out", monkeypatch,
                                                lambda r, pack: sent.append(pack))
    shared = next(pack for path, (_, pack) in nodes.items() if path.endswith("/a_first.bin"))
    assert summary.errors == [] and summary.files == 3
    out = tmp_path / "out" / str(src).lstrip("/")
    assert (out / "a_first.bin").read_bytes() == small["a_first.bin"]
    assert (out / "z_last.bin").read_bytes() == small["z_last.bin"]
    assert (out / "m_large.bin").stat().st_size == 6 << 20
    assert sent.count(shared) == 1 and len(sent) == len(set(sent)), sent


def test_restore_holds_the_files_in_flight_not_the_whole_snapshot(
        tmp_path: Path, cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk waits while the workers have 4 packs each queued, and a file is let go
    once its last blob is written: the files held stay a fraction of the snapshot's,
    however many it holds (38,000 planned at once took about 40 MB)."""

    rng = random.Random(11)
    src = tmp_path / "src"
    files = {f"d{i % 7}/f{i:03d}.bin": rng.randbytes(128 * 1024) for i in range(480)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    cli("init", "--pack-size", "1")
    cli("backup", "--workers", "1", str(src))  # packs in walk order

    held: list[int] = []  # files held whenever a pack went to the workers
    summary, r, _ = _restore_watching_packs(cli, tmp_path / "out", monkeypatch,
                                            lambda r, pack: held.append(len(r._files)),
                                            workers=2)
    assert summary.errors == [] and summary.files == len(files)
    out = tmp_path / "out" / str(src).lstrip("/")
    assert {rel: (out / rel).read_bytes() for rel in files} == files
    # 60 packs of 8 files: the packs queued (8) and the one being planned are held,
    # not the 480 files the walk would otherwise have planned at once
    assert len(held) >= 55 and max(held) <= 13 * 8, held
    assert r._files == {}


def test_restore_over_a_directory_in_the_way_restores_the_rest(tmp_path: Path,
                                                                cli: CLI) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_text("a\n")
    (src / "d" / "b.txt").write_text("b\n")
    cli("init")
    cli("backup", str(src))
    target = tmp_path / "t"
    blocked = target / str(src).lstrip("/") / "d" / "a.txt"
    blocked.mkdir(parents=True)
    (blocked / "keep").write_text("mine\n")
    r = cli("restore", "latest", "--target", str(target), "--overwrite", ok=False)
    assert r.code == 1
    assert f"{blocked}: exists and is a directory" in r.err
    assert (blocked / "keep").read_text() == "mine\n"
    assert (blocked.parent / "b.txt").read_text() == "b\n"


def test_progress_bar_on_a_terminal_counts_in_binary_units(tmp_path: Path, cli: CLI) -> None:
    """On a terminal, backup draws a progress bar in KiB/MiB (as every other size it
    prints) and clears it at the end; without one, none is drawn."""
    import pty
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(1).randbytes(160 * 1024 * 1024))
    cli("init")
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "multibackup", "backup", str(src)],
                            env=cli.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=terminal)
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the program ended and closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert proc.wait(timeout=240) == 0
    text = drawn.decode(errors="replace")
    assert "MiB/s" in text and "/160.0 MiB" in text, text[-500:]
    assert " MB" not in text and "MB/s" not in text.replace("MiB/s", "")
    assert text.endswith("\x1b[2K")  # the bar is cleared when the run ends
    plain = cli("backup", str(src))
    assert "MiB/s" not in plain.err and "\x1b[" not in plain.err


def test_sparse_restore_leaves_holes_and_keeps_every_byte(tmp_path: Path, cli: CLI) -> None:
    """``restore --sparse`` writes no runs of zeros (a VM image or database file takes its
    real space, not its length); the bytes read back are the same either way."""
    src = tmp_path / "src"
    src.mkdir()
    mib = 1024 * 1024
    head, tail = os.urandom(mib), os.urandom(mib // 2 + 7)
    with open(src / "disk.img", "wb") as f:  # data, a 40 MiB hole, data; length not aligned
        f.write(head)
        f.seek(41 * mib)
        f.write(tail)
    (src / "zeros.bin").write_bytes(bytes(3 * mib))  # written zeros: a hole once restored
    (src / "tail-hole.bin").write_bytes(b"x")
    os.truncate(src / "tail-hole.bin", 9 * mib)  # ends in a hole: the length must survive
    # many small blobs, after 6 MiB of data in the same pack: read in a group that does
    # not start at the pack's beginning
    small = {f"small-{i}.txt": os.urandom(i * 37) for i in range(1, 60)}
    small["big-random.bin"] = os.urandom(6 * mib)
    for name, data in small.items():
        (src / name).write_bytes(data)
    if os.stat(src / "disk.img").st_blocks * 512 > 4 * mib:
        pytest.skip("this file system does not keep holes")
    cli("init")
    cli("backup", str(src))
    cli("restore", "latest", "--target", str(tmp_path / "full"))
    r = cli("restore", "latest", "--target", str(tmp_path / "sparse"), "--sparse", "--json")
    summary = [json.loads(line) for line in r.out.splitlines() if '"summary"' in line][-1]
    # every blob read once, from where it lies: nothing taken for damaged (an offset bug
    # once cut every blob after a group's first at the wrong place and re-read it)
    assert summary["fallback_reads"] == 0 and "another copy" not in r.err, (summary, r.err)
    assert summary["files"] == 3 + len(small)
    full_root = _restore_root(tmp_path / "full", src)
    sparse_root = _restore_root(tmp_path / "sparse", src)
    for name in ("disk.img", "zeros.bin", "tail-hole.bin"):
        full, sparse = full_root / name, sparse_root / name
        assert sparse.read_bytes() == full.read_bytes() == (src / name).read_bytes()
        assert os.stat(sparse).st_mtime_ns == os.stat(src / name).st_mtime_ns
        assert os.stat(sparse).st_size == os.stat(src / name).st_size
    for name, data in small.items():
        assert (sparse_root / name).read_bytes() == data
    used = {name: os.stat(sparse_root / name).st_blocks * 512
            for name in ("disk.img", "zeros.bin", "tail-hole.bin")}
    assert used["disk.img"] < 4 * mib, used
    assert used["zeros.bin"] < mib // 2 and used["tail-hole.bin"] < mib, used
    full_img = os.stat(full_root / "disk.img").st_blocks * 512
    assert full_img > 40 * mib  # without --sparse every byte is written, as before


def test_named_pipes_and_device_nodes_are_kept_and_restored(tmp_path: Path, cli: CLI) -> None:
    """A FIFO is backed up without being opened (which would block) and restored as a
    FIFO; device nodes keep their device number (as root); a socket is listed, not made."""
    import socket
    import stat

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    os.mkfifo(src / "pipe", 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "app.sock"))
    devices = {}
    if os.geteuid() == 0:
        os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(src / "loop9", 0o660 | stat.S_IFBLK, os.makedev(7, 9))
        devices = {"null": (stat.S_ISCHR, os.makedev(1, 3)), "loop9": (stat.S_ISBLK, os.makedev(7, 9))}
    for name in ("pipe", *devices):
        os.utime(src / name, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    try:
        cli("init")
        first = cli("backup", str(src), "--json").json()
        assert first["errors"] == []  # the pipe was not opened: the backup did not block
        listing = cli("ls", "-l", "latest", str(src)).out
        kinds = {line.split()[-1].rsplit("/", 1)[-1]: line[0] for line in listing.splitlines()}
        assert kinds["pipe"] == "p" and kinds["app.sock"] == "s" and kinds["a.txt"] == "-"
        if devices:
            assert kinds["null"] == "c" and kinds["loop9"] == "b"
            line = next(x for x in listing.splitlines() if x.endswith("/loop9"))
            assert " 7, 9 " in line, line  # major, minor where a file shows its size
        r = cli("restore", "latest", "--target", str(tmp_path / "out"))
        root = _restore_root(tmp_path / "out", src)
        st = os.lstat(root / "pipe")
        assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_mtime_ns == 1_600_000_000_000_000_000
        assert not (root / "app.sock").exists()  # made by the program that listens on it
        for name, (is_kind, rdev) in devices.items():
            st = os.lstat(root / name)
            assert is_kind(st.st_mode) and st.st_rdev == rdev, name
            assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(os.lstat(src / name).st_mode)
        assert (root / "a.txt").read_text() == "a"
        assert f"{1 + len(devices)} named pipes or device nodes" in r.out
        # nothing changed: nothing read, and diff sees no difference
        second = cli("backup", str(src), "--json").json()
        assert second["files_unchanged"] == 1 and second["files_new"] == 0
        ids = [s["id"] for s in cli("snapshots", "--json").json()]
        d = cli("diff", ids[0], ids[1]).out  # (the folder above src changed: "out" is new)
        assert [line for line in d.splitlines() if str(src) in line] == [], d
    finally:
        sock.close()


_KDF_PROBE = """
import hashlib, runpy, sys
derive = hashlib.scrypt
def probe(*args, **kwargs):
    heavy = ("cryptography", "zstandard", "pyfastcdc", "orjson")
    print("loaded at key derivation:", sorted(m for m in heavy if m in sys.modules),
          file=sys.stderr)
    return derive(*args, **kwargs)
hashlib.scrypt = probe
sys.argv = ["multibackup", *sys.argv[1:]]
runpy.run_module("multibackup", run_name="__main__")
"""


def test_key_derivation_runs_before_the_heavy_libraries_load(tmp_path: Path, cli: CLI) -> None:
    # scrypt's 32 MiB are the peak of a small command's memory: the libraries a command
    # needs only once it has its key (about 16 MiB) must load after it, not under it
    src = make_tree(tmp_path / "src", big=False)
    cli("init")
    cli("backup", str(src))
    p = subprocess.run([sys.executable, "-c", _KDF_PROBE, "backup", str(src), "--json"],
                       env=cli.env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["files_unchanged"] > 0
    assert "loaded at key derivation: []" in p.stderr
