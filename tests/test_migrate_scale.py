"""A migration's memory does not grow with its number of objects: both listings, the plan
and every object's result live in a temporary SQLite database, not in Python objects, and
the JSON report is written object by object."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from collections.abc import Iterator

from multibackup.backends.base import ObjectInfo
from multibackup.engine.migrate import MigrateOptions, Migrator

N = 100_000


def _md5(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


class _Listing:
    """A store that lists ``n`` objects (named in an order unlike key order) and nothing
    else: a check that compares by size and MD5 ETag never reads one."""

    scheme = "memory"
    is_local = False

    def __init__(self, description: str, keys: range, changed: set[int]) -> None:
        self.description = description
        self.keys = keys
        self.changed = changed

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for i in self.keys:
            etag = _md5(-i if i in self.changed else i)
            yield ObjectInfo(f"site/{i % 97:02d}/{i:07d}.html", 1000 + i % 13, etag, 0)


def test_a_check_of_many_objects_stays_small() -> None:
    changed = {5, 50_000, 99_999}
    src = _Listing("src", range(N), set())
    dst = _Listing("dst", range(N + 500), changed)  # 500 more at the destination
    tracemalloc.start()
    try:
        report = Migrator(src, dst, MigrateOptions(mode="check", transfers=4)).run()  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # held in Python objects, the two listings and the results took about 70 MiB
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert report.counts() == {"skipped": N - 3, "differs": 3, "extraneous": 500}
    assert not report.ok

    differs = [r.key for r in report.results_of(["differs"])]
    assert differs == sorted(f"site/{i % 97:02d}/{i:07d}.html" for i in changed)
    out = io.StringIO()
    report.write_json(out)
    doc = json.loads(out.getvalue())
    keys = [o["key"] for o in doc["objects"]]
    assert len(keys) == N + 500 and keys == sorted(keys)
    assert doc["counts"] == report.counts() and doc["ok"] is False
    assert doc == report.to_json()
    report.close()


class _Named:
    scheme = "memory"
    is_local = False

    def __init__(self, description: str, keys: list[str]) -> None:
        self.description = description
        self.keys = keys

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in self.keys:
            yield ObjectInfo(key, 3, _md5(len(key)), 0)


def test_keys_in_byte_order_and_a_key_that_is_no_utf8() -> None:
    """Keys come out in the order S3 lists them (UTF-8 bytes); a file name in another
    encoding (surrogate escapes) fails alone, named readably, instead of the run."""
    keys = ["z", "a/b", "a.b", "é", "日本", "\u00ff", "a-b"]
    bad = "latin1-\udce9t\udce9.txt"
    report = Migrator(_Named("src", [*keys, bad]), _Named("dst", keys),  # type: ignore[arg-type]
                      MigrateOptions(mode="check")).run()
    results = list(report.results)
    assert [r.key for r in results if r.status == "skipped"] == sorted(
        keys, key=lambda k: k.encode())
    failed = [r for r in results if r.status == "failed"]
    assert [(r.key, r.reason) for r in failed] == [("latin1-\ufffdt\ufffd.txt",
                                                    "the key is no valid UTF-8")]
    out = io.StringIO()
    report.write_json(out)  # the report itself stays valid JSON
    assert json.loads(out.getvalue())["counts"] == {"skipped": len(keys), "failed": 1}
