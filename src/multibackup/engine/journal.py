"""The migration journal: what a migration has already copied and verified, kept on disk.

A migration of many objects may be killed (a reboot, a lost connection, Ctrl-C). The next
run must neither copy again what was already verified nor read it back to find out: each
verified object is recorded with what both listings said about it (size, ETag, mtime), and
a later run that sees the same listings skips it at no cost. It lives in SQLite in the local
state directory, one table keyed by the (source, destination) pair - descriptions only,
never credentials.

Verified objects are written in batches (one transaction per :data:`BATCH` records or
every :data:`FLUSH_SECONDS`, and on close): a commit per small object costs about as much
as copying it. A record lost to a kill only means that object is compared again next run
(listings, ETags or hashes), never that anything is skipped unverified. Upload parts are
committed at once, with any batch pending, since resending a part is the costly case.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from multibackup.backends.base import ObjectInfo
from multibackup.store.lag import state_dir

#: verified records written per transaction at most, and the longest a record waits
BATCH = 512
FLUSH_SECONDS = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verified (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    src_etag TEXT NOT NULL,
    src_mtime_ns INTEGER NOT NULL,
    dst_etag TEXT NOT NULL,
    md5 TEXT NOT NULL,
    PRIMARY KEY (pair, key)
);
CREATE TABLE IF NOT EXISTS uploads (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    src_etag TEXT NOT NULL,
    src_mtime_ns INTEGER NOT NULL,
    part_size INTEGER NOT NULL,
    PRIMARY KEY (pair, key)
);
CREATE TABLE IF NOT EXISTS parts (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    md5 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (pair, key, upload_id, number)
);
CREATE TABLE IF NOT EXISTS upload_checksums (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    PRIMARY KEY (pair, key, upload_id)
);
CREATE TABLE IF NOT EXISTS part_checksums (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (pair, key, upload_id, number)
);
"""
# The checksum tables came later: journals written before them, and older versions
# reading newer journals, see uploads without checksums (MD5-proven parts), as before.


@dataclass(frozen=True)
class Upload:
    """A multipart upload in progress, and the source version it is a copy of."""

    key: str
    upload_id: str
    size: int
    src_etag: str
    src_mtime_ns: int
    part_size: int
    #: the checksum the destination verifies each part by ("CRC32C"), "" for Content-MD5
    checksum: str = ""


@dataclass(frozen=True)
class Part:
    """One part the destination acknowledged: its ETag, its MD5 (ours, or the
    destination's where it proved the part by ``checksum``) and that checksum."""

    number: int
    etag: str
    md5: str
    size: int
    checksum: str = ""


@dataclass(frozen=True)
class VerifiedObject:
    """One object known to be identical on both sides, as the listings described it then."""

    key: str
    size: int
    src_etag: str
    src_mtime_ns: int
    dst_etag: str
    md5: str

    def still_matches(self, src: ObjectInfo, dst: ObjectInfo) -> bool:
        """True when neither side changed since it was verified, as far as listings tell."""
        if src.size != self.size or dst.size != self.size:
            return False
        if not self.src_etag and not self.src_mtime_ns:
            return False  # a record that knew the size only (SFTP listings once had no ETag)
        if src.mtime_ns != self.src_mtime_ns:
            return False
        # a record without a source ETag (local files had none in journals written before
        # they got one) is judged by size and time, as it was when written
        if self.src_etag and _norm(src.etag) != _norm(self.src_etag):
            return False
        # a destination ETag that changed means someone rewrote it there (listings and
        # stats of one service may differ in quoting)
        return not (dst.etag and self.dst_etag and _norm(dst.etag) != _norm(self.dst_etag))


def _norm(etag: str | None) -> str:
    """An ETag without quotes, case or weak mark: Apache calls an ETag weak (``W/"..."``)
    while the file's last second of writes is still running, then strong."""
    text = (etag or "").strip()
    if text[:2] in ('W/', 'w/'):
        text = text[2:]
    return text.strip('"').lower()


def default_path() -> str:
    return os.path.join(state_dir(), "migrate", "journal.sqlite")


class Journal:
    """Verified objects of one (source, destination) pair; safe to use from many threads."""

    def __init__(self, source: str, destination: str, path: str | None = None) -> None:
        self.path = path or default_path()
        # the owner's only: upload ids include GCS session URIs, which grant writing (and
        # SQLite gives its WAL and shared-memory files the database file's mode)
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        for path, mode in ((os.path.dirname(self.path), 0o700), (self.path, 0o600)):
            with contextlib.suppress(OSError):  # made by an earlier version, or not ours
                os.chmod(path, mode)
        self.pair = f"{source}\n{destination}"
        self._lock = threading.Lock()
        #: where a damaged journal was moved before a new one was begun, if it was
        self.set_aside: str | None = None
        try:
            self._db = self._open()
        except sqlite3.DatabaseError:
            # not a database, or one torn by a crash: what it knew is only work saved, so
            # it is kept aside (for a look) and the run starts from the listings
            self.set_aside = f"{self.path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path + suffix, self.set_aside + suffix)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = self._open()
        #: verified records not yet committed, by key (a later record replaces an earlier)
        self._pending: dict[str, VerifiedObject] = {}
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, daemon=True,
                                         name="journal-flush")
        self._flusher.start()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30,
                             isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Commit what is pending and close; the next run sees every record made.

        Closing checkpoints the WAL into the database, with an fsync of each. Where no
        upload is left open, nothing in the journal saves bytes from being sent again
        (a verified record only saves a comparison), and a damaged journal is set aside
        at the next open: the fsyncs are skipped then. They cost a second when the disk is
        busy with what was just written (a local S3 server's flushing). A process killed
        mid-run never gets here; what it committed is in the WAL, which the next open
        reads."""
        self._closed.set()
        self._flusher.join()
        with self._lock:
            self._commit_pending()
            if self._db.execute("SELECT 1 FROM uploads LIMIT 1").fetchone() is None:
                self._db.execute("PRAGMA synchronous=OFF")
            self._db.close()

    def flush(self) -> None:
        """Commit the pending verified records now."""
        with self._lock:
            self._commit_pending()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(FLUSH_SECONDS):
            self.flush()

    def _commit_pending(self, *also: tuple[str, tuple[object, ...]]) -> None:
        """One transaction: the pending records, then the statements ``also`` (lock held)."""
        if not self._pending and not also:
            return
        rows = [(self.pair, o.key, o.size, o.src_etag, o.src_mtime_ns, o.dst_etag, o.md5)
                for o in self._pending.values()]
        with self._db:  # BEGIN ... COMMIT, or ROLLBACK on error
            self._db.execute("BEGIN")
            if rows:
                self._db.executemany(
                    "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            for sql, params in also:
                self._db.execute(sql, params)
        self._pending.clear()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verified(self) -> dict[str, VerifiedObject]:
        """Everything verified so far for this pair (loaded once per run)."""
        with self._lock:
            self._commit_pending()
            rows = self._db.execute(
                "SELECT key, size, src_etag, src_mtime_ns, dst_etag, md5 FROM verified "
                "WHERE pair = ?", (self.pair,)).fetchall()
        return {r[0]: VerifiedObject(*r) for r in rows}

    def iter_verified(self) -> Iterator[VerifiedObject]:
        """The same as :meth:`verified`, read a batch at a time (millions of objects)."""
        with self._lock:
            self._commit_pending()
            cursor = self._db.execute(
                "SELECT key, size, src_etag, src_mtime_ns, dst_etag, md5 FROM verified "
                "WHERE pair = ?", (self.pair,))
        while True:
            with self._lock:
                rows = cursor.fetchmany(2000)
            if not rows:
                return
            yield from (VerifiedObject(*r) for r in rows)

    def record(self, obj: VerifiedObject) -> None:
        """Remember one verified object; committed with its batch (see the module doc)."""
        with self._lock:
            self._pending[obj.key] = obj
            if len(self._pending) >= BATCH:
                self._commit_pending()

    def forget(self, key: str) -> None:
        """Drop a record (the object no longer matches); committed at once."""
        with self._lock:
            self._pending.pop(key, None)
            self._commit_pending(("DELETE FROM verified WHERE pair = ? AND key = ?",
                                  (self.pair, key)))

    # -- multipart uploads in progress -----------------------------------------------------

    _UPLOADS = ("SELECT u.key, u.upload_id, u.size, u.src_etag, u.src_mtime_ns, u.part_size, "
                "coalesce(c.algorithm, '') FROM uploads u LEFT JOIN upload_checksums c "
                "ON c.pair = u.pair AND c.key = u.key AND c.upload_id = u.upload_id "
                "WHERE u.pair = ?")

    def upload(self, key: str) -> Upload | None:
        with self._lock:
            row = self._db.execute(self._UPLOADS + " AND u.key = ?", (self.pair, key)).fetchone()
        return Upload(*row) if row else None

    def uploads(self) -> list[Upload]:
        """Every upload in progress for this pair."""
        with self._lock:
            rows = self._db.execute(self._UPLOADS, (self.pair,)).fetchall()
        return [Upload(*r) for r in rows]

    def start_upload(self, upload: Upload) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (self.pair, upload.key, upload.upload_id, upload.size,
                              upload.src_etag, upload.src_mtime_ns, upload.part_size))
            if upload.checksum:
                self._db.execute("INSERT OR REPLACE INTO upload_checksums VALUES (?, ?, ?, ?)",
                                 (self.pair, upload.key, upload.upload_id, upload.checksum))

    def parts(self, key: str, upload_id: str) -> dict[int, Part]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.number, p.etag, p.md5, p.size, coalesce(c.value, '') FROM parts p "
                "LEFT JOIN part_checksums c ON c.pair = p.pair AND c.key = p.key AND "
                "c.upload_id = p.upload_id AND c.number = p.number "
                "WHERE p.pair = ? AND p.key = ? AND p.upload_id = ?",
                (self.pair, key, upload_id)).fetchall()
        return {r[0]: Part(*r) for r in rows}

    def record_part(self, key: str, upload_id: str, part: Part) -> None:
        """Remember one acknowledged part at once: a kill after this never resends it."""
        also: list[tuple[str, tuple[object, ...]]] = [
            ("INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?)",
             (self.pair, key, upload_id, part.number, part.etag, part.md5, part.size))]
        if part.checksum:
            also.append(("INSERT OR REPLACE INTO part_checksums VALUES (?, ?, ?, ?, ?)",
                         (self.pair, key, upload_id, part.number, part.checksum)))
        with self._lock:
            self._commit_pending(*also)

    def end_upload(self, key: str) -> None:
        """The upload completed or was abandoned: drop it and its parts."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for table in ("parts", "part_checksums", "uploads", "upload_checksums"):
                self._db.execute(f"DELETE FROM {table} WHERE pair = ? AND key = ?",  # noqa: S608
                                 (self.pair, key))
