"""SQLite databases: a consistent copy through SQLite's online backup API.

``sqlite:///srv/app/app.db`` (three slashes and an absolute path). Copying the file while
an application writes could catch it between two pages of a transaction; the backup API
copies a consistent state instead, restarting by itself when a writer commits in the
middle. It needs a destination database, so the copy goes to a private temporary file
(removed as soon as it has been read) — SQLite offers no stream of its pages.

As a restore target the same URL names the file to create: the bytes are written to a
temporary file beside it, checked with ``PRAGMA integrity_check`` and then renamed into
place. An existing file is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from multibackup.errors import SourceError, UsageError
from multibackup.sources.base import FILE, Entry

_PAGES_PER_STEP = 1024  # pages copied per step: short steps let writers in between


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/"):
        raise UsageError(f"invalid SQLite URL {url!r}: expected sqlite:///absolute/path.db")
    path = unquote(parts.path)
    if path.endswith("/"):
        raise UsageError(f"invalid SQLite URL {url!r}: the path names a directory")
    return path


class SQLiteSource:
    """One database file as one snapshot entry named like the file."""

    scheme = "sqlite"
    complete_only = True
    parallel = 1

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    def list_dir(self, path: str) -> list[Entry]:
        if path:
            return []
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SourceError(f"{self.describe()}: {exc.strerror or exc}") from None
        if not os.path.isfile(self.path):
            raise SourceError(f"{self.describe()}: not a file")
        return [Entry(os.path.basename(self.path), FILE, mtime_ns=st.st_mtime_ns,
                      mode=st.st_mode & 0o7777)]

    @contextlib.contextmanager
    def open(self, path: str, entry: Entry) -> Iterator[BinaryIO]:
        fd, tmp = tempfile.mkstemp(prefix=".multibackup-sqlite-", suffix=".db")
        os.close(fd)
        try:
            self._copy(tmp)
            with open(tmp, "rb", buffering=0) as f:
                os.unlink(tmp)  # nothing left behind even if the process dies mid-read
                tmp = ""
                yield f  # type: ignore[misc]
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _copy(self, tmp: str) -> None:
        uri = "file:" + self.path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
        try:
            src = sqlite3.connect(uri, uri=True, timeout=30)
        except sqlite3.Error as exc:
            raise SourceError(f"{self.describe()}: cannot open: {exc}") from None
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.execute("PRAGMA schema_version").fetchone()  # fails on a non-database
                src.backup(dst, pages=_PAGES_PER_STEP, sleep=0.005)
                dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal
            finally:
                dst.close()
        except sqlite3.Error as exc:
            raise SourceError(f"{self.describe()}: backup failed: {exc}") from None
        finally:
            src.close()

    def close(self) -> None:
        pass


class SQLiteTarget:
    """Writes the restored database file to a new path, checked before it appears."""

    scheme = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = False

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    def makedirs(self, path: str) -> None:
        pass

    def symlink(self, path: str, target: str) -> None:
        raise SourceError("a SQLite target takes one database file, not a link")

    def write(self, path: str, chunks: Iterator[bytes], *, size: int, mode: int,
              mtime_ns: int) -> None:
        if self.written:
            raise SourceError(f"{self.describe()}: the snapshot holds more than one file; "
                              "choose one with --include")
        if os.path.lexists(self.path):
            raise SourceError(f"{self.describe()}: already exists; restore to a new path")
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".multibackup-restore-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            self._verify(tmp)
            os.chmod(tmp, mode or 0o644)
            os.utime(tmp, ns=(time.time_ns(), mtime_ns))
            os.link(tmp, self.path)  # fails if the path appeared meanwhile: never overwrite
            self.written = True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _verify(self, tmp: str) -> None:
        try:
            con = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
            try:
                result = con.execute("PRAGMA integrity_check").fetchone()
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise SourceError(f"{self.describe()}: restored file is not a database: {exc}") from None
        if not result or result[0] != "ok":
            raise SourceError(f"{self.describe()}: restored database fails its integrity check")

    def close(self) -> None:
        pass


def open_source(url: str, credentials: Mapping[str, str]) -> SQLiteSource:
    return SQLiteSource(_path_of(url))


def open_target(url: str, credentials: Mapping[str, str]) -> SQLiteTarget:
    return SQLiteTarget(_path_of(url))
