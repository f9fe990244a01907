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

import hashlib
import posixpath
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping

from multibackup.backends.base import ObjectInfo
from multibackup.errors import ObjectNotFound, SourceError, SourceUnavailable, StoreError
from multibackup.sources.base import DIR, FILE, UNKNOWN_SIZE
from multibackup.sources.ftp import PARALLEL, FTPSource, FTPTarget, parse_server

#: the hidden name FTPTarget writes a file under before renaming it onto its key
_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")


class FTPStore:
    """An FTP directory; every operation takes a pooled control connection of its own."""

    scheme = "ftp"
    is_local = False
    #: put_stream sends an object as one STOR, as it comes
    writes_multi = True
    keeps_attributes = False

    def __init__(self, url: str, credentials: Mapping[str, str] | None = None,
                 connections: int = PARALLEL) -> None:
        server = parse_server(url, dict(credentials or {}))
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
                    yield ObjectInfo(key, size, None, mtime)

    def stat(self, key: str) -> ObjectInfo:
        entry = self._guard(lambda: self._reader.stat_file(key), "reading", key)
        if entry is None or entry.size == UNKNOWN_SIZE:
            raise ObjectNotFound(f"{self.description}: reading {key}: no such file")
        return ObjectInfo(key, entry.size, None, entry.mtime_ns)

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


class FTPPartial:
    """Resumable large-object writes into an FTP store: the parts are appended, in order,
    to a hidden temporary file beside the key (the upload id), which is renamed onto the
    key when complete. A rerun asks the file's size and appends only what is missing."""

    #: appends go in order: one part in flight per object
    parts_at_once = 1

    def __init__(self, store: FTPStore, part_size: int) -> None:
        self.store = store
        self.part_size = part_size
        self.description = store.description
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def _size(self, key: str, upload_id: str) -> int:
        size = self.store._guard(lambda: self.store._writer.file_size(upload_id),
                                 "resuming", key)
        if size is None:
            raise ObjectNotFound(f"{self.description}: resuming {key}: the partial file is gone")
        with self._lock:
            self._held[upload_id] = size
        return size  # type: ignore[no-any-return]

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        """An empty hidden file beside the key; its path is the upload id."""
        directory, name = posixpath.split(key)
        upload_id = posixpath.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
        self.store._guard(lambda: self.store._writer.append(upload_id, b""),
                          "starting a write of", key)
        with self._lock:
            self._held[upload_id] = 0
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    md5: bytes | None = None, total: int | None = None) -> str:
        """Append part ``number`` where the file ends; bytes it holds already (a kill
        after the server took them) are not sent again. Returns the part's MD5."""
        offset, end = (number - 1) * self.part_size, (number - 1) * self.part_size + len(data)
        with self._lock:
            held = self._held.get(upload_id)
        if held is None:
            held = self._size(key, upload_id)
        if held < offset:
            raise StoreError(f"{self.description}: writing part {number} of {key}: the "
                             f"partial file holds {held} bytes, the part starts at {offset}")
        if held < end:
            rest = bytes(memoryview(data)[held - offset:])
            try:
                self.store._guard(lambda: self.store._writer.append(upload_id, rest),
                                  f"writing part {number} of", key)
            except BaseException:
                with self._lock:
                    self._held.pop(upload_id, None)  # ask the server again next time
                raise
            with self._lock:
                self._held[upload_id] = end
        return (md5 or hashlib.md5(data).digest()).hex()

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str | None, int]]:
        """The whole parts the partial file holds; no ETags (the object is read back)."""
        held = self._size(key, upload_id)
        return {n: (None, self.part_size) for n in range(1, held // self.part_size + 1)}

    def complete(self, key: str, upload_id: str, etags: list[str],
                 content_type: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> str:
        self.store._guard(lambda: self.store._writer.rename(upload_id, key), "completing", key)
        with self._lock:
            self._held.pop(upload_id, None)
        return ""

    def abort(self, key: str, upload_id: str) -> None:
        with self._lock:
            self._held.pop(upload_id, None)
        try:
            self.store.delete(upload_id)
        except StoreError:
            pass


def open_ftp_store(url: str, credentials: Mapping[str, str] | None = None,
                   create: bool = False) -> FTPStore:
    store = FTPStore(url, credentials)
    try:
        return store.open(create)
    except BaseException:
        store.close()
        raise
