"""Crash safety and locks, with the real program killed by SIGKILL at random moments.

The promise in the README: writes go packs -> index -> snapshot, so a run killed at any
moment leaves a valid repository, and the next run reuses what was uploaded.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import CLI, S3Server, snapshot_of_tree

MiB = 1024 * 1024


def make_source(root: Path, seed: int, random_files: int, text_files: int) -> Path:
    """Incompressible files of a few MiB plus many small text files in a few directories."""
    rng = random.Random(seed)
    for i in range(random_files):
        d = root / "media" / f"set{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"blob{i}.bin").write_bytes(rng.randbytes(4 * MiB + rng.randint(0, 300_000)))
    for i in range(text_files):
        d = root / "docs" / f"d{i % 17}"
        d.mkdir(parents=True, exist_ok=True)
        lines = (f"{i}:{j} {rng.choice(['alpha', 'beta', 'gamma'])} {rng.random()}\n"
                 for j in range(rng.randint(1, 300)))
        (d / f"note{i}.txt").write_text("".join(lines))
    return root


def files_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Never leave a backup behind when an assertion fails."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)


def timed_backup(cli: CLI, src: Path) -> tuple[float, dict]:
    """A complete backup into a throwaway repository: how long it takes, what it stores."""
    cli("init", "--pack-size", "1")
    t0 = time.monotonic()
    summary = cli("backup", str(src), "--json").json()
    return time.monotonic() - t0, summary


def assert_check_ok(cli: CLI, *args: str) -> None:
    r = cli("check", *args, ok=False)
    assert r.code == 0 and "error:" not in r.err, f"check failed ({r.code}):\n{r.out}\n{r.err}"


def assert_restores(cli: CLI, src: Path, target: Path) -> None:
    cli("restore", "latest", "--target", str(target))
    assert snapshot_of_tree(target / str(src).lstrip("/")) == snapshot_of_tree(src)


def kill_backups(cli: CLI, src: Path, delays: list[float | None],
                 pack_count: Callable[[], int]) -> list[int]:
    """Start a backup per delay and SIGKILL it then (None: as soon as it uploads a pack).

    After every kill the repository must pass check. Returns each run's exit code.
    """
    codes = []
    for delay in delays:
        packs_before = pack_count()
        with running(cli.popen("backup", str(src), "--json")) as proc:
            if delay is None:
                wait_for(lambda p=proc, n=packs_before: pack_count() > n or p.poll() is not None,
                         120, "the first pack of the backup")
            else:
                time.sleep(delay)
            proc.kill()
            _, err = proc.communicate(timeout=60)
        codes.append(proc.returncode)
        assert proc.returncode in (0, -9), err
        assert_check_ok(cli)
    return codes


def assert_final_backup_reuses(cli: CLI, src: Path, stored_size: Callable[[], int],
                               clean: dict) -> dict:
    """The run after the kills stores only what the killed runs had not uploaded."""
    before = stored_size()
    final = cli("backup", str(src), "--json").json()
    after = stored_size()
    assert final["total_bytes"] == files_size(src)
    # One pack costs at most 64 header bytes per blob more than its blobs.
    slack = 64 * (final["data_blobs"] + final["tree_blobs"] + clean["data_blobs"]) + 4096
    assert before > 0, "no killed run had uploaded a pack: the kills proved nothing"
    assert final["data_added"] <= after - before
    assert final["data_added"] <= clean["data_added"] - before + slack
    assert final["data_added"] < clean["data_added"] - MiB // 2
    return final


# ---- crash tests --------------------------------------------------------------------------


def test_killed_backups_leave_a_valid_repository_local(tmp_path: Path, cli: CLI) -> None:
    src = make_source(tmp_path / "src", seed=11, random_files=11, text_files=700)
    assert 40 * MiB <= files_size(src) <= 60 * MiB
    full_time, clean = timed_backup(CLI(str(tmp_path / "clean")), src)
    cli("init", "--pack-size", "1")
    data = tmp_path / "repo" / "data"
    rng = random.Random(4242)
    delays: list[float | None] = [rng.uniform(0.2, max(0.3, full_time)) for _ in range(6)]
    delays.insert(3, None)  # and one kill that surely lands mid-upload
    codes = kill_backups(cli, src, delays, lambda: len(files_in(data)))
    assert -9 in codes
    final = assert_final_backup_reuses(cli, src, lambda: files_size(data), clean)
    assert final["files_new"] + final["files_unchanged"] == 711
    assert_check_ok(cli, "--read-data")
    r = cli("check", "--read-data")
    assert "warning" not in r.err  # every pack a killed run left is indexed now
    assert_restores(cli, src, tmp_path / "restore")


def test_killed_backups_leave_a_valid_repository_s3(tmp_path: Path, s3_cli: CLI,
                                                    s3_server: S3Server) -> None:
    src = make_source(tmp_path / "src", seed=12, random_files=4, text_files=150)
    # Killed runs also fill the local cache of the remote repository: keep it in tmp_path.
    s3_cli.env["MULTIBACKUP_CACHE_DIR"] = str(tmp_path / "cache")
    s3 = s3_server.client()
    bucket, prefix = s3_cli.repo[len("s3://"):].split("/", 1)

    def stored() -> dict[str, int]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/data/")
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    clean_cli = CLI(f"s3://{s3_server.new_bucket()}/clean",
                    env={**s3_server.env(), "MULTIBACKUP_CACHE_DIR": str(tmp_path / "cache")})
    full_time, clean = timed_backup(clean_cli, src)
    s3_cli("init", "--pack-size", "1")
    rng = random.Random(99)
    kill_backups(s3_cli, src, [rng.uniform(0.3, max(0.4, full_time)), None],
                 lambda: len(stored()))
    assert_final_backup_reuses(s3_cli, src, lambda: sum(stored().values()), clean)
    assert_check_ok(s3_cli, "--read-data")
    assert_restores(s3_cli, src, tmp_path / "restore")


# ---- locks --------------------------------------------------------------------------------


def slow_source(root: Path) -> Path:
    """Seconds of reading at almost no disk cost: a 2 GiB sparse file (and a real one)."""
    root.mkdir()
    with open(root / "disk.img", "wb") as f:
        f.truncate(2 * 1024 * MiB)
    (root / "readme.txt").write_text("a slow source\n")
    return root


def test_killed_backup_leaves_a_stale_lock_that_prune_ignores_and_unlock_removes(
        tmp_path: Path, cli: CLI) -> None:
    src = slow_source(tmp_path / "src")
    locks = tmp_path / "repo" / "locks"
    cli("init")
    with running(cli.popen("backup", str(src))) as proc:
        wait_for(lambda: bool(files_in(locks)) or proc.poll() is not None, 60, "the lock")
        proc.kill()
        proc.wait(60)
    assert proc.returncode == -9, "the backup finished before it could be killed"
    (lock,) = files_in(locks)
    r = cli("prune", "--json")  # the lock's process is gone, so it does not block
    assert json.loads(r.out)["errors"] == []
    assert_check_ok(cli)
    r = cli("unlock", "--json").json()
    assert r["removed"] == [lock.name] and r["remaining"] == []
    assert files_in(locks) == []
    assert cli("snapshots", "--json").json() == []
    cli("backup", str(src / "readme.txt"))  # and the repository takes backups again


def test_prune_is_refused_while_a_backup_runs(tmp_path: Path, cli: CLI) -> None:
    src = slow_source(tmp_path / "src")
    locks = tmp_path / "repo" / "locks"
    cli("init")
    with running(cli.popen("backup", str(src), "--json")) as proc:
        wait_for(lambda: bool(files_in(locks)) or proc.poll() is not None, 60, "the lock")
        r = cli("prune", ok=False)
        still_running = proc.poll() is None
        out, err = proc.communicate(timeout=240)
    assert still_running, "the backup finished before prune ran: make the source slower"
    assert r.code == 11, f"{r.code}\n{r.out}\n{r.err}"
    assert len(r.err.strip().splitlines()) == 1 and "locked" in r.err
    assert "Traceback" not in r.err and r.out == ""
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["total_bytes"] == 2 * 1024 * MiB + len("a slow source\n")
    assert files_in(locks) == []
    assert len(cli("snapshots", "--json").json()) == 1
    assert_check_ok(cli)


def test_backup_is_refused_while_prune_holds_the_lock(tmp_path: Path, cli: CLI) -> None:
    """The other direction: an exclusive lock (prune) keeps a backup out, exit code 11."""
    from multibackup.backends import open_store, parse_location
    from multibackup.repository.repository import Repository

    cli("init")
    (tmp_path / "f.txt").write_text("x\n")
    repo = Repository.open(open_store(parse_location(cli.repo)), cli.env["MULTIBACKUP_PASSWORD"])
    with repo, repo.lock(exclusive=True, command="prune"):
        r = cli("backup", str(tmp_path / "f.txt"), ok=False)
        assert r.code == 11 and "locked" in r.err and len(r.err.strip().splitlines()) == 1
    cli("backup", str(tmp_path / "f.txt"))
    assert files_in(tmp_path / "repo" / "locks") == []
