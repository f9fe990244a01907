"""A directory on an FTP or FTPS server as an object store, for migrations.

``ftp://[user@]host[:port]/path`` and ``ftps://...``; keys are file paths below the path.
It is built on the FTP client of the FTP source and restore target
(:mod:`multibackup.sources.ftp`): listings walk the tree with ``MLSD`` (or ``LIST`` plus
``MDTM``), reads are ``RETR`` with ``REST`` for a range, and writes go to a hidden
temporary name that is renamed onto the key once the server confirmed every byte, so no
half-written object is ever visible under its key. A large object is appended to such a
file part by part (``APPE``), so a killed migration resumes from the bytes it holds
(``FTPPartial``). Temporary files a killed run left are not objects: they are never
listed, copied or deleted.

FTP has no conditional or atomic create, so this store is a migration end, not a
repository destination.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping

from multibackup.backends.base import ObjectInfo
from multibackup.backends.partial_file import AppendedFile
from multibackup.errors import ObjectNotFound, SourceError, SourceUnavailable, StoreError
from multibackup.sources.base import DIR, FILE, UNKNOWN_SIZE, temporary_name
from multibackup.sources.ftp import PARALLEL, FTPSource, FTPTarget, parse_server

#: the hidden name FTPTarget writes a file under before renaming it onto its key
_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")



def _etag(size: int, mtime_ns: int) -> str | None:
    """An ETag of size and time: FTP names no checksum, and this lets a migration's
    journal see a file rewritten in place (by hand, at either side) with its size kept."""
    return f"{size:x}-{mtime_ns:x}" if mtime_ns else None

class FTPStore:
    """An FTP directory; every operation takes a pooled control connection of its own."""

    scheme = "ftp"
    is_local = False
    #: put_stream sends an object as one STOR, as it comes
    writes_multi = True
    keeps_attributes = False

    def __init__(self, url: str, credentials: Mapping[str, str] | None = None,
                 connections: int = PARALLEL, password_from: str | None = None) -> None:
        server = parse_server(url, dict(credentials or {}), password_from)
        self.description = server.describe()
        self.concurrency = connections
        self._reader = FTPSource(server)
        self._writer = FTPTarget(server, connections)
        self._writer.overwrite = True

    def open(self, create: bool = False) -> FTPStore:
        """Log in and list the root, so that a wrong password or path fails at once; with
        ``create`` (a destination) the root directory is made first if need be."""
        self._guard(self._writer.connect, "connecting to", "")
        if create:
            self._guard(lambda: self._writer.makedirs(""), "creating", "")
        self._guard(self._reader.check, "connecting to", "")
        return self

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def _guard(self, operation, action: str, key: str):  # type: ignore[no-untyped-def]
        try:
            return operation()
        except (SourceError, SourceUnavailable) as exc:
            text = str(exc)
            where = f"{self.description}: {action} {key}".rstrip()
            if text.startswith("550"):
                raise ObjectNotFound(f"{where}: {text}") from None
            if text.startswith(self.description):
                raise StoreError(text) from None
            raise StoreError(f"{where}: {text}") from None

    # -- reading -----------------------------------------------------------------------------

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every file below the root whose key starts with ``prefix``, directory by
        directory (only directories that can hold such keys are entered)."""
        pending = [""]
        while pending:
            path = pending.pop()
            entries = self._guard(lambda p=path: self._reader.list_dir(p), "listing", path)
            for entry in entries:
                key = f"{path}/{entry.name}" if path else entry.name
                if entry.kind == DIR:
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        pending.append(key)
                elif entry.kind == FILE and key.startswith(prefix) \
                        and not _TEMPORARY.match(entry.name):
                    size, mtime = entry.size, entry.mtime_ns
                    if size == UNKNOWN_SIZE:
                        info = self.stat(key)
                        size, mtime = info.size, info.mtime_ns
                    yield ObjectInfo(key, size, _etag(size, mtime), mtime)

    def stat(self, key: str) -> ObjectInfo:
        entry = self._guard(lambda: self._reader.stat_file(key), "reading", key)
        if entry is None or entry.size == UNKNOWN_SIZE:
            raise ObjectNotFound(f"{self.description}: reading {key}: no such file")
        return ObjectInfo(key, entry.size, _etag(entry.size, entry.mtime_ns), entry.mtime_ns)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._guard(lambda: self._reader.read_range(key, offset, length),  # type: ignore[no-any-return]
                           "reading", key)

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes, **_attributes: object) -> None:
        self._guard(lambda: self._writer.write(key, iter([data]), size=len(data), mode=0o644,
                                               mtime_ns=0), "writing", key)

    def put_stream(self, key: str, chunks: Iterable[bytes], **_attributes: object) -> None:
        """One STOR of the chunks as they come (to the temporary name, then renamed)."""
        self._guard(lambda: self._writer.write(key, iter(chunks), size=None, mode=0o644,
                                               mtime_ns=0), "writing", key)

    def delete(self, key: str) -> None:
        self._guard(lambda: self._writer.remove(key), "deleting", key)


class FTPPartial(AppendedFile):
    """Resumable large-object writes into an FTP store: the parts are appended (APPE), in
    order, to a hidden temporary file beside the key (the upload id), which is renamed onto
    the key when complete. A rerun asks the file's SIZE and appends only what is missing."""

    def __init__(self, store: FTPStore, part_size: int) -> None:
        super().__init__(part_size)
        self.store = store
        self.description = store.description

    def _guard(self, operation, action: str, key: str):  # type: ignore[no-untyped-def]
        return self.store._guard(operation, action, key)

    def _new_name(self, key: str) -> str:
        directory, name = posixpath.split(key)
        return posixpath.join(directory, temporary_name(name))

    def _create(self, name: str) -> None:
        self.store._writer.append(name, b"")

    def _append(self, name: str, offset: int, data: bytes) -> None:
        self.store._writer.append(name, data)

    def _size(self, name: str) -> int | None:
        return self.store._writer.file_size(name)  # type: ignore[no-any-return]

    def _commit(self, name: str, key: str) -> None:
        self.store._writer.rename(name, key)

    def _remove(self, name: str) -> None:
        self.store.delete(name)


def open_ftp_store(url: str, credentials: Mapping[str, str] | None = None,
                   create: bool = False, password_from: str | None = None) -> FTPStore:
    """``password_from`` names where the caller took the password from (see parse_server)."""
    store = FTPStore(url, credentials, password_from=password_from)
    try:
        return store.open(create)
    except BaseException:
        store.close()
        raise
