"""Bad input of every kind: one clean error line, a non-zero exit, and no stored data lost.

Everything runs the real program (``CLI``) against real storage: a local directory, a real
tmpfs that fills up, or a real SeaweedFS S3 server. Damage is done to the real files on
disk, and what must survive is checked by restoring it and comparing bytes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import CLI, PASSWORD, S3_SECRET, CLIResult, S3Server, small_tmpfs

from multibackup.backends import open_store, parse_location
from multibackup.cli import main as cli_main
from multibackup.engine import backup as backup_mod
from multibackup.repository.blob import BlobType
from multibackup.repository.repository import Repository
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import DIR, FILE, Node

MiB = 1024 * 1024


# ---- helpers ----------------------------------------------------------------------------


def one_error_line(r: CLIResult) -> str:
    """The run failed with exactly one 'error: ' line on stderr and no traceback."""
    assert r.code != 0, f"expected a failure\n{r.out}\n{r.err}"
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.err}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in r.err and "internal error" not in r.err
    return lines[0]


def restored(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def open_local(repo_path: Path) -> Repository:
    return Repository.open(open_store(parse_location(str(repo_path))), PASSWORD)


def closed_port() -> int:
    """A privileged port nothing listens on: never an ephemeral port, which a client can
    occasionally connect to itself on (TCP self-connect) and get its own request back."""
    for port in (1, 3, 5, 7, 9):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no closed low port on 127.0.0.1")


def small_tree(root: Path, n: int = 5) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"small{i}.txt").write_text(f"small file {i}\n" * (i + 1) * 50)
    (root / "sub").mkdir()
    (root / "sub" / "note.txt").write_text("note\n")
    return root


# ---- 1. passwords and repository existence ----------------------------------------------


def test_wrong_password_missing_repo_and_double_init(tmp_path: Path, cli: CLI) -> None:
    src = small_tree(tmp_path / "src")
    r = cli("snapshots", ok=False)
    assert r.code == 10 and "no repository" in one_error_line(r)
    for command in (("backup", str(src)), ("sync",)):  # write commands make no directory
        r = cli("-r", str(tmp_path / "typo"), *command, ok=False)
        assert r.code == 10 and "no repository" in one_error_line(r), r.err
        assert not (tmp_path / "typo").exists()
    cli("init")
    cli("backup", str(src))
    r = cli("snapshots", ok=False, env={"MULTIBACKUP_PASSWORD": "not the password"})
    assert r.code == 12 and "wrong password" in one_error_line(r)
    assert "not the password" not in r.err + r.out
    before = sorted(p.name for p in (tmp_path / "repo" / "keys").iterdir())
    for password in (PASSWORD, "another password"):
        r = cli("init", ok=False, env={"MULTIBACKUP_PASSWORD": password})
        assert r.code not in (0, 2) and "already" in one_error_line(r)
    # No key slot added or replaced, the existing snapshot still opens and restores.
    assert sorted(p.name for p in (tmp_path / "repo" / "keys").iterdir()) == before
    assert len(cli("snapshots", "--json").json()) == 1
    cli("restore", "latest", "--target", str(tmp_path / "t"))
    assert files_of(restored(tmp_path / "t", src)) == files_of(src)


# ---- 2. S3 problems -----------------------------------------------------------------------


def test_s3_unreachable_endpoint(s3_server: S3Server) -> None:
    env = dict(s3_server.env(), AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    r = CLI("s3://bucket/prefix", env=env)("snapshots", ok=False, timeout=90)
    assert time.monotonic() - started < 60
    assert r.code not in (0, 2, 10)
    assert "cannot reach the server" in one_error_line(r)
    assert S3_SECRET not in r.err + r.out


def test_s3_wrong_secret_key_never_leaks(s3_cli: CLI) -> None:
    s3_cli("init")
    wrong = "wrong-secret-9c1e77"
    for args in (("snapshots",), ("init",)):
        r = s3_cli(*args, ok=False, env={"AWS_SECRET_ACCESS_KEY": wrong})
        assert r.code not in (0, 10)
        line = one_error_line(r)
        assert "credentials" in line or "access denied" in line.lower()
        assert wrong not in r.err + r.out and S3_SECRET not in r.err + r.out
    assert s3_cli("snapshots", "--json").json() == []  # the repository is untouched


def test_s3_missing_bucket(s3_server: S3Server) -> None:
    cli = CLI("s3://no-such-bucket-7f3a/prefix", env=s3_server.env())
    for args in (("snapshots",), ("init",)):
        r = cli(*args, ok=False)
        assert r.code != 0
        assert "bucket does not exist" in one_error_line(r)
        assert S3_SECRET not in r.err + r.out


# ---- 3. damaged packs ---------------------------------------------------------------------


def _packs(repo: Path) -> dict[str, Path]:
    return {p.name: p for p in (repo / "data").rglob("*") if p.is_file()}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_pack_is_reported_and_everything_else_restores(damage: str, tmp_path: Path,
                                                               cli: CLI) -> None:
    repo = tmp_path / "repo"
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    big.write_bytes(os.urandom(4 * MiB + 77))
    cli("init", "--pack-size", "1")
    first = cli("backup", str(src), "--json").json()["snapshot_id"]
    big_packs = _packs(repo)  # big.bin's data packs, plus one tiny tree pack
    small_tree(src / "more")
    (src / "top.txt").write_text("top\n")
    second = cli("backup", str(src), "--json").json()["snapshot_id"]
    victim = max(big_packs.values(), key=lambda p: p.stat().st_size)
    assert victim.stat().st_size > 512 * 1024
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 3] ^= 0x40
        victim.write_bytes(data)

    if damage == "truncate":  # the size check alone finds it, without downloading data
        r = cli("check", ok=False)
        assert r.code == 1 and "truncated" in r.err
        assert str(big) in r.out and first[:8] in r.out and second[:8] in r.out
    r = cli("check", "--read-data", ok=False)
    assert r.code == 1 and "Traceback" not in r.err
    assert first[:8] in r.out + r.err and second[:8] in r.out + r.err
    assert str(big) in r.out
    damaged_lines = [ln.strip() for ln in r.out.splitlines() if ln.startswith("  /")]
    assert set(damaged_lines) == {str(big)}  # only the file that uses the pack

    # An undamaged file restores alone, exactly.
    t1 = tmp_path / "t1"
    cli("restore", "latest", "--target", str(t1), "--include", str(src / "more" / "sub"))
    assert files_of(restored(t1, src)) == {"more/sub/note.txt": b"note\n"}

    # A full restore restores every other file exactly, and names and drops the damaged one.
    t2 = tmp_path / "t2"
    r = cli("restore", "latest", "--target", str(t2), ok=False)
    assert r.code == 1 and "Traceback" not in r.err
    assert str(big) in r.err
    err_lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert all(ln.startswith("error: ") for ln in err_lines)
    assert not any(ln.startswith("error: ") and "big.bin" not in ln and "item(s)" not in ln
                   for ln in err_lines)
    out = restored(t2, src)
    assert not (out / "big.bin").exists()
    expect = files_of(src)
    del expect["big.bin"]
    assert files_of(out) == expect


# ---- 4. damaged index files -------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_index_is_reported_rebuilt_and_repaired(damage: str, tmp_path: Path,
                                                       cli: CLI) -> None:
    repo = tmp_path / "repo"
    src = small_tree(tmp_path / "src")
    (src / "blob.bin").write_bytes(os.urandom(300_000))
    cli("init", "--pack-size", "1")
    cli("backup", str(src))
    [index_file] = [p for p in (repo / "index").iterdir() if p.is_file()]
    data = bytearray(index_file.read_bytes())
    if damage == "truncate":
        index_file.write_bytes(data[: len(data) - 20])
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01
        index_file.write_bytes(data)
    else:  # lost: its packs are in no index, and the snapshots miss their blobs
        index_file.unlink()

    r = cli("check", ok=False)
    named = "pack(s) are in no index" if damage == "delete" else f"index file {index_file.name[:8]}"
    assert r.code == 1 and named in r.err, r.err
    assert "repair index" in r.err and "Traceback" not in r.err

    (src / "added.txt").write_text("added after the damage\n")
    r = cli("backup", str(src), "--json")  # packs are re-indexed from their headers
    assert damage == "delete" or "damaged index file" in r.err
    assert r.json()["files_new"] >= 1
    assert r.json()["data_added"] < 100_000  # blob.bin was found again, not re-uploaded

    r = cli("repair", "index")
    assert "Traceback" not in r.err
    assert not index_file.exists()
    cli("check", "--read-data")
    target = tmp_path / "t"
    cli("restore", "latest", "--target", str(target))
    assert files_of(restored(target, src)) == files_of(src)


# ---- 5. tree entries that would escape the target -----------------------------------------


def test_restore_refuses_names_that_escape_the_target(tmp_path: Path, cli: CLI) -> None:
    cli("init")
    parent = tmp_path / "restore"
    target = parent / "target"
    parent.mkdir()
    absolute = str(parent / "absolute.txt")
    with open_local(tmp_path / "repo") as repo:
        content, _ = repo.save_blob(BlobType.DATA, b"evil\n")
        ok_content, _ = repo.save_blob(BlobType.DATA, b"safe\n")

        def f(name: str, data: bytes = b"evil\n") -> Node:
            return Node(name, FILE, mode=0o644, mtime=1_600_000_000 * 10**9, size=len(data),
                        content=[ok_content if data == b"safe\n" else content])

        pwned, _ = repo.save_tree([f("pwned.txt")])
        inner, _ = repo.save_tree([f("ok.txt", b"safe\n"), f("../../deep-escape.txt"),
                                   Node("..", DIR, mode=0o755, subtree=pwned)])
        root, _ = repo.save_tree([
            f("safe.txt", b"safe\n"),
            f(".."),
            f("../up.txt"),
            f(absolute),
            f("a/b"),
            Node("d", DIR, mode=0o755, subtree=inner),
        ])
        repo.flush()
        # A second ".." (a directory) cannot share a tree with the file: its own snapshot.
        root2, _ = repo.save_tree([Node("..", DIR, mode=0o755, subtree=pwned),
                                   f("safe2.txt", b"safe\n")])
        repo.flush()
        for tree in (root, root2):
            repo.save_snapshot(Snapshot(time=Repository.now(), tree=tree, paths=["/evil"],
                                        hostname="attacker"))
    snaps = [s["id"] for s in cli("snapshots", "--json").json()]
    errors = ""
    for i, snap in enumerate(snaps):
        r = cli("restore", snap[:10], "--target", str(target / str(i)), ok=False)
        assert r.code == 1 and "Traceback" not in r.err
        assert "escape the target" in r.err
        assert "item(s) could not be restored" in r.err
        assert all(ln.startswith("error: ") for ln in r.err.strip().splitlines())
        errors += r.err
    for name in ("..", "../up.txt", absolute, "a/b", "../../deep-escape.txt"):
        assert f"{name!r}: refusing unsafe" in errors
    assert sorted(p.name for p in parent.iterdir()) == ["target"]
    assert not list(tmp_path.glob("*escape*")) and not list(tmp_path.glob("*pwned*"))
    got = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert got == {"0/safe.txt", "0/d/ok.txt", "1/safe2.txt"} or got == {
        "1/safe.txt", "1/d/ok.txt", "0/safe2.txt"}
    assert all((target / p).read_bytes() == b"safe\n" for p in got)


# ---- 6. restoring over existing files ---------------------------------------------------


def test_restore_into_non_empty_directory(tmp_path: Path, cli: CLI) -> None:
    src = small_tree(tmp_path / "src")
    cli("init")
    cli("backup", str(src))
    target = tmp_path / "t"
    target.mkdir()
    mine = target / "mine.txt"
    mine.write_text("my own file\n")
    os.utime(mine, ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    r = cli("restore", "latest", "--target", str(target), ok=False)
    assert "not empty" in one_error_line(r) and "--overwrite" in r.err
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    assert mine.read_text() == "my own file\n"
    assert mine.stat().st_mtime_ns == 1_500_000_000 * 10**9
    cli("restore", "latest", "--target", str(target), "--overwrite")
    assert files_of(restored(target, src)) == files_of(src)
    assert mine.read_text() == "my own file\n"


# ---- 7. unreadable and vanishing source files -------------------------------------------


def test_unreadable_source_file_is_listed_and_the_rest_saved(tmp_path: Path, cli: CLI) -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the backup as another user")
    work = Path(tempfile.mkdtemp(prefix="mb-nobody-", dir="/tmp"))
    try:
        os.chmod(work, 0o755)
        src = small_tree(work / "src")
        secret = src / "sub" / "secret.txt"
        secret.write_text("only root may read this\n")
        os.chmod(secret, 0)
        home = work / "home"
        home.mkdir()
        for p in (work / "src", home):
            for dirpath, _dirs, _files in os.walk(p):
                os.chmod(dirpath, 0o755)
        os.chown(home, 65534, 65534)
        repo_dir = work / "repo"
        repo_dir.mkdir()
        os.chown(repo_dir, 65534, 65534)
        env = dict(cli.env, MULTIBACKUP_REPOSITORY=str(repo_dir), HOME=str(home), USER="nobody")

        def as_nobody(*args: str) -> CLIResult:
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                sys.executable, "-m", "multibackup", *args], env=env,
                               capture_output=True, text=True, timeout=120,
                               stdin=subprocess.DEVNULL, cwd=home)
            return CLIResult(p.returncode, p.stdout, p.stderr)

        assert as_nobody("init").code == 0
        r = as_nobody("backup", str(src), "--json")
        assert r.code == 3, r.err
        assert str(secret) in r.err and "Permission denied" in r.err
        assert "Traceback" not in r.err
        summary = r.json()
        assert summary["files_new"] == 6
        root_cli = CLI(str(repo_dir))
        paths = {n["path"] for n in root_cli("ls", "latest", "--json").json()["nodes"]}
        assert str(src / "small0.txt") in paths and str(src / "sub" / "note.txt") in paths
        assert str(secret) not in paths
        target = tmp_path / "t"
        root_cli("restore", "latest", "--target", str(target))
        expect = {k: v for k, v in files_of(src).items() if k != "sub/secret.txt"}
        assert files_of(restored(target, src)) == expect
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_file_vanishing_during_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = small_tree(tmp_path / "src")
    victim = src / "small2.txt"
    repo = str(tmp_path / "repo")
    monkeypatch.setenv("MULTIBACKUP_PASSWORD", PASSWORD)
    monkeypatch.setenv("MULTIBACKUP_REPOSITORY", repo)
    assert cli_main.main(["init"]) == 0
    real_open = os.open

    def open_after_delete(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(path) == str(victim) and victim.exists():
            victim.unlink()  # gone between the directory listing and the read
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(backup_mod.os, "open", open_after_delete)
    capsys.readouterr()
    code = cli_main.main(["backup", str(src), "--workers", "2"])
    monkeypatch.setattr(backup_mod.os, "open", real_open)
    err = capsys.readouterr().err
    assert code == 3
    assert f"error: {victim}: No such file or directory" in err
    assert "Traceback" not in err
    with open_local(Path(repo)) as r:
        r.load_index()
        snap = r.find_snapshot("latest")
        paths = {p for p, _ in r.walk(snap.tree)}
        assert snap.summary["files_new"] == 5
    assert str(victim) not in paths
    assert {str(src / "small0.txt"), str(src / "sub" / "note.txt")} <= paths


# ---- 8. disk full -----------------------------------------------------------------------


def test_disk_full_fails_cleanly_and_keeps_earlier_snapshots(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "repo", "4m") as mnt:
        cli = CLI(str(mnt))
        src = small_tree(tmp_path / "src")
        cli("init", "--pack-size", "1")
        cli("backup", str(src))
        huge = tmp_path / "huge"
        huge.mkdir()
        (huge / "random.bin").write_bytes(os.urandom(20 * MiB))
        r = cli("backup", str(huge), ok=False)
        assert r.code == 1
        assert "no space left" in one_error_line(r)
        # the pack that did not fit left no temporary file to keep the disk full
        assert [p.name for p in (mnt / ".tmp").iterdir()] == []
        target = tmp_path / "t"
        cli("restore", "latest", "--target", str(target))
        assert files_of(restored(target, src)) == files_of(src)
        r = cli("check")
        assert "Traceback" not in r.err
        assert len(cli("snapshots", "--json").json()) == 1


# ---- 9. malformed command lines ---------------------------------------------------------


def test_malformed_locations_durations_and_snapshot_ids(tmp_path: Path, cli: CLI) -> None:
    r = cli("snapshots", ok=False, env={"MULTIBACKUP_REPOSITORY": "ftp://x"})
    assert r.code == 2 and "unsupported repository location" in one_error_line(r)
    r = cli("snapshots", "-r", "s3:ftp://host/bucket", ok=False)
    assert r.code == 2 and one_error_line(r)
    cli("init")
    src = small_tree(tmp_path / "src")
    cli("backup", str(src))
    for bad in ("3x", "7", "d", "-1d", ""):
        r = cli("forget", f"--keep-within={bad}", ok=False)
        if bad == "":  # empty means "no policy given": still a usage error
            assert r.code == 2 and one_error_line(r)
            continue
        assert r.code == 2 and "invalid duration" in one_error_line(r)
    assert len(cli("snapshots", "--json").json()) == 1

    # Enough snapshots that two ids share their first hex digit.
    with open_local(tmp_path / "repo") as repo:
        repo.load_index()
        tree = repo.find_snapshot("latest").tree
        for i in range(16):
            repo.save_snapshot(Snapshot(time=Repository.now(), tree=tree, paths=[str(src)],
                                        hostname=f"host{i}"))
    ids = [s["id"] for s in cli("snapshots", "--json").json()]
    first_digits = [i[0] for i in ids]
    shared = next(d for d in first_digits if first_digits.count(d) > 1)
    for cmd in (("ls", shared), ("restore", shared, "--target", str(tmp_path / "t"))):
        r = cli(*cmd, ok=False)
        assert r.code == 1 and "ambiguous" in one_error_line(r)
    unused = next(c for c in "0123456789abcdef" if c not in first_digits) if len(
        set(first_digits)) < 16 else "zz"
    r = cli("ls", unused + "0", ok=False)
    assert r.code == 1 and "no snapshot matches" in one_error_line(r)
    r = cli("diff", "latest", "0123456789abcdefx", ok=False)
    assert r.code == 1 and "no snapshot matches" in one_error_line(r)
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir())


def test_output_to_a_closed_pipe_ends_quietly(tmp_path: Path, cli: CLI) -> None:
    """``multibackup dump ... | head -c 10``: no error line, and the exit status of a
    command killed by SIGPIPE (as cat gives)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(4 << 20))
    cli("init")
    cli("backup", str(src))
    p = subprocess.Popen([sys.executable, "-m", "multibackup", "dump", "latest",
                          str(src / "big.bin")], env=cli.env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert p.stdout is not None and p.stderr is not None
    assert len(p.stdout.read(10)) == 10
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(60) == 141 and err == ""
