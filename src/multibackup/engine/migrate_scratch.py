"""A migration's scratch space: both listings, the journal's verified records and every
object's result, in a private temporary SQLite database rather than in memory.

A bucket of tens of millions of objects then costs disk pages instead of gigabytes of
Python objects, and SQLite joins the two listings. Results come out in key order (the
binary order of their UTF-8 bytes, which is the order S3, Azure and GCS list in). Source
objects are numbered in the order they are listed, so the plan can take them a stored
batch at a time while the listing goes on. SQLite removes the file as soon as it has
opened it, so nothing is left behind, not even by a SIGKILL; it lives in SQLite's
temporary directory (``SQLITE_TMPDIR``, else ``TMPDIR``, else ``/var/tmp``). One
connection serves every thread, behind a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from multibackup.backends.base import ObjectInfo
from multibackup.engine.journal import VerifiedObject

#: rows written per statement, and read per step of an iteration
_BATCH = 2000

_SCHEMA = """
CREATE TABLE src (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, mtime_ns INTEGER,
    wanted INTEGER, seq INTEGER) WITHOUT ROWID;
CREATE INDEX src_by_seq ON src (seq);
CREATE TABLE dst (key TEXT PRIMARY KEY, size INTEGER, etag TEXT, mtime_ns INTEGER,
    wanted INTEGER) WITHOUT ROWID;
CREATE TABLE verified (key TEXT PRIMARY KEY, size INTEGER, src_etag TEXT,
    src_mtime_ns INTEGER, dst_etag TEXT, md5 TEXT) WITHOUT ROWID;
CREATE TABLE results (key TEXT, status TEXT, size INTEGER, reason TEXT,
    server_side INTEGER);
CREATE INDEX results_by_key ON results (key);
"""


@dataclass
class ObjectResult:
    """What happened to one object; ``status`` is one of the migration's STATUSES."""

    key: str
    status: str
    size: int = 0
    reason: str = ""
    #: copied inside the provider (CopyObject), no bytes through this machine
    server_side: bool = False


@dataclass(frozen=True)
class Pair:
    """One source object, what the destination holds under its key, and what the journal
    says was verified for it."""

    src: ObjectInfo
    dst: ObjectInfo | None
    known: VerifiedObject | None


@dataclass
class Task:
    """One object to copy ("copy") or to compare by content first ("hash")."""

    src: ObjectInfo
    dst: ObjectInfo | None
    action: str
    reason: str


def _info(key: str, size: int | None, etag: str | None, mtime_ns: int | None
          ) -> ObjectInfo | None:
    return None if size is None else ObjectInfo(key, size, etag, mtime_ns or 0)


class Scratch:
    """The temporary database of one migration run; ``close()`` deletes it."""

    def __init__(self) -> None:
        # "": a private temporary database on disk, deleted when the connection closes
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        #: source objects whose keys are no valid UTF-8 (see ``add_listing``)
        self.unusable: list[ObjectInfo] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")

    def _write_all(self, sql: str, rows: Iterable[tuple[object, ...]],
                   stored: Callable[[int], None] | None = None) -> int:
        """Write ``rows`` as they come, a batch per transaction; returns how many.
        ``stored`` is told after each transaction how many rows are stored so far."""
        batch: list[tuple[object, ...]] = []
        count = 0
        for row in rows:
            batch.append(row)
            if len(batch) >= _BATCH:
                self._write(sql, batch)
                count, batch = count + len(batch), []
                if stored is not None:
                    stored(count)
        if batch:
            self._write(sql, batch)
            count += len(batch)
            if stored is not None:
                stored(count)
        return count

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
        """Rows of a query, fetched a batch at a time under the lock (other threads keep
        writing results in between)."""
        with self._lock:
            cursor = self._db.execute(sql, params)
        while True:
            with self._lock:
                batch = cursor.fetchmany(_BATCH)
            if not batch:
                return
            yield from batch

    def _one(self, sql: str, params: tuple[object, ...] = ()) -> tuple[object, ...]:
        with self._lock:
            return self._db.execute(sql, params).fetchone()  # type: ignore[no-any-return]

    # -- listings and the journal ------------------------------------------------------------

    def add_listing(self, side: str, infos: Iterable[ObjectInfo],
                    wanted: Callable[[ObjectInfo], bool] | None = None,
                    stored: Callable[[int], None] | None = None) -> int:
        """Store a listing ("src" or "dst") as it streams in; returns how many objects.
        Source objects are numbered from 0 as listed; ``stored`` is told after each batch
        how many are stored (and may be read with :meth:`pairs`). A key listed twice
        keeps its first entry.

        Every object is stored, with whether it takes part (``wanted``: the filters).
        Only wanted source objects are copied or compared, and only wanted destination
        objects may be extraneous; but a destination object is extraneous only when the
        source has no object of its key at all. Filters on size or time see each side's
        own copy, which may differ: an object the source holds, filtered out there, is
        never deleted at the destination for it.

        A key that is no valid UTF-8 (a file name in another encoding, carried as
        surrogate escapes) cannot be an object key anywhere: it is kept out, and listed
        in ``unusable`` (at most a thousand) for the report."""
        assert side in ("src", "dst")

        def rows() -> Iterator[tuple[object, ...]]:
            seq = 0
            for o in infos:
                take = wanted is None or wanted(o)
                try:
                    o.key.encode()
                except UnicodeEncodeError:
                    if side == "src" and take and len(self.unusable) < 1000:
                        self.unusable.append(o)
                    continue
                if side == "src":
                    yield o.key, o.size, o.etag, o.mtime_ns, int(take), seq
                    seq += 1
                else:
                    yield o.key, o.size, o.etag, o.mtime_ns, int(take)

        marks = "?, ?, ?, ?, ?, ?" if side == "src" else "?, ?, ?, ?, ?"
        try:
            return self._write_all(f"INSERT OR IGNORE INTO {side} VALUES ({marks})", rows(),
                                   stored)
        finally:
            # a listing left midway is ended here, in the thread that ran it (see
            # Migrator._plan)
            close = getattr(infos, "close", None)
            if close is not None:
                close()

    def add_verified(self, records: Iterable[VerifiedObject]) -> None:
        self._write_all("INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?, ?)",
                        ((v.key, v.size, v.src_etag, v.src_mtime_ns, v.dst_etag, v.md5)
                         for v in records))

    def pairs(self, start: int, stop: int) -> Iterator[Pair]:
        """The wanted source objects numbered ``start`` to ``stop - 1`` in listing order,
        each with its destination and journal records (the destination's listing and
        the journal complete by then)."""
        for row in self._rows(
                "SELECT s.key, s.size, s.etag, s.mtime_ns, d.size, d.etag, d.mtime_ns, "
                "v.size, v.src_etag, v.src_mtime_ns, v.dst_etag, v.md5 FROM src s "
                "LEFT JOIN dst d ON d.key = s.key LEFT JOIN verified v ON v.key = s.key "
                "WHERE s.seq >= ? AND s.seq < ? AND s.wanted ORDER BY s.seq", (start, stop)):
            key = str(row[0])
            src = ObjectInfo(key, int(row[1]), row[2], int(row[3] or 0))  # type: ignore[arg-type]
            dst = _info(key, *row[4:7])  # type: ignore[arg-type]
            known = (None if row[7] is None
                     else VerifiedObject(key, *row[7:12]))  # type: ignore[arg-type]
            yield Pair(src, dst, known)

    def extraneous(self) -> Iterator[ObjectInfo]:
        """Wanted destination objects whose key the source lacks, in key order."""
        for row in self._rows("SELECT d.key, d.size, d.etag, d.mtime_ns FROM dst d WHERE "
                              "d.wanted AND NOT EXISTS (SELECT 1 FROM src s WHERE "
                              "s.key = d.key) ORDER BY d.key"):
            yield ObjectInfo(str(row[0]), int(row[1]), row[2], int(row[3] or 0))  # type: ignore[arg-type]

    def extraneous_count(self) -> int:
        return int(self._one("SELECT count(*) FROM dst d WHERE d.wanted AND "  # type: ignore[arg-type]
                             "NOT EXISTS (SELECT 1 FROM src s WHERE s.key = d.key)")[0])

    def source_count(self) -> int:
        """Objects the source listed, filtered out or not."""
        return int(self._one("SELECT count(*) FROM src")[0])  # type: ignore[arg-type]

    # -- results -----------------------------------------------------------------------------

    def add_results(self, results: Iterable[ObjectResult]) -> None:
        self._write_all("INSERT INTO results VALUES (?, ?, ?, ?, ?)",
                        ((r.key, r.status, r.size, r.reason, int(r.server_side))
                         for r in results))

    def results(self, statuses: Iterable[str] | None = None) -> Iterator[ObjectResult]:
        """Results in key order, all or those of ``statuses``."""
        wanted = tuple(statuses) if statuses is not None else None
        where = (f" WHERE status IN ({', '.join('?' * len(wanted))})" if wanted is not None
                 else "")
        for row in self._rows(f"SELECT key, status, size, reason, server_side FROM results"
                              f"{where} ORDER BY key", wanted or ()):
            yield ObjectResult(str(row[0]), str(row[1]), int(row[2]), str(row[3]),  # type: ignore[arg-type]
                               bool(row[4]))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM results GROUP BY status"
                                    ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def status_of(self, key: str) -> str | None:
        row = self._one("SELECT status FROM results WHERE key = ? LIMIT 1", (key,))
        return None if row is None else str(row[0])

    def any_server_side(self) -> bool:
        return self._one("SELECT 1 FROM results WHERE server_side LIMIT 1") is not None
