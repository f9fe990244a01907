"""A backup or a restore shortens the interpreter's switch interval while it runs, and
puts it back.

Tested on a real backup and restore: their workers record the interval they run under,
and the interval after each is the one before it; also after a job that fails inside the
block.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from multibackup.backends.location import open_store, parse_location
from multibackup.engine.backup import Archiver
from multibackup.engine.progress import Progress
from multibackup.engine.restore import Restorer
from multibackup.engine.switching import SHORT_INTERVAL, short_switch_interval
from multibackup.errors import MultibackupError
from multibackup.repository.crypto import KDFParams
from multibackup.repository.repository import Repository

FAST_KDF = KDFParams(n=2**10, r=8, p=1)


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(before)


class _Seen(Progress):
    """Progress that notes the switch interval its callers (the workers) run under."""

    def __init__(self) -> None:
        super().__init__()
        self.intervals: set[float] = set()

    def add(self, nbytes: int = 0, items: int = 0, current: str | None = None) -> None:
        self.intervals.add(sys.getswitchinterval())
        super().add(nbytes, items, current)


def test_a_backup_runs_with_the_short_interval_and_restores_the_default(
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}.txt").write_bytes(b"x" * (i * 1000))
    store = open_store(parse_location(str(tmp_path / "repo")))
    with Repository.init(store, "pw", kdf=FAST_KDF) as repo:
        progress = _Seen()
        Archiver(repo, progress=progress).run([str(src)])
        assert progress.intervals == {SHORT_INTERVAL}
        assert sys.getswitchinterval() == 0.005


def test_a_restore_runs_with_the_short_interval_and_restores_the_default(
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}.bin": bytes([i]) * (i * 3000) for i in range(30)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    store = open_store(parse_location(str(tmp_path / "repo")))
    with Repository.init(store, "pw", kdf=FAST_KDF) as repo:
        snapshot = Archiver(repo).run([str(src)])
        assert sys.getswitchinterval() == 0.005
        progress = _Seen()
        target = tmp_path / "out"
        Restorer(repo, snapshot, str(target), progress=progress).run()
        assert progress.intervals == {SHORT_INTERVAL}
        assert sys.getswitchinterval() == 0.005
    restored = {p.name: p.read_bytes() for p in target.rglob("*.bin")}
    assert restored == files


def test_a_job_that_fails_inside_the_block_restores_the_default() -> None:
    with pytest.raises(MultibackupError), short_switch_interval():
        assert sys.getswitchinterval() == SHORT_INTERVAL
        raise MultibackupError("a backup failing midway")
    assert sys.getswitchinterval() == 0.005


def test_overlapping_jobs_keep_it_short_until_the_last_one_ends() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def first() -> None:
        with short_switch_interval():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    t = threading.Thread(target=first)
    t.start()
    first_in.wait(5)
    with short_switch_interval():
        second_in.set()
        first_out.wait(5)
        seen["after the first ended"] = sys.getswitchinterval()
    t.join()
    assert seen["after the first ended"] == SHORT_INTERVAL
    assert sys.getswitchinterval() == 0.005


def test_an_interval_already_shorter_is_kept() -> None:
    sys.setswitchinterval(SHORT_INTERVAL / 4)
    shorter = sys.getswitchinterval()  # as the interpreter holds it (whole microseconds)
    with short_switch_interval():
        assert sys.getswitchinterval() == shorter
    assert sys.getswitchinterval() == shorter
