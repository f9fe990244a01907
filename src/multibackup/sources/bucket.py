"""Object-storage buckets as a source and as a restore target.

Any location the backends understand and no other source claims comes here: ``s3://bucket/
prefix`` (endpoint from ``AWS_ENDPOINT_URL``), ``s3:https://host/bucket/prefix``, provider
presets (``oss://``, ``cos://``, ``r2://``...), ``azure://container/prefix``,
``gs://bucket/prefix``, ``webdav[s]://[user@]host/path`` and ``memory://name`` (tests).
Credentials are the backends' own: the config layer's mapping (keys as in
``backends.location.CREDENTIAL_KEYS``) or else their environment variables
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AZURE_STORAGE_*``, ...).

The prefix is read as a tree: ``/`` in a key separates directories, so ``a/b/c.txt`` is file
``c.txt`` in directory ``a/b``. Each level is one delimiter listing, which also gives every
object's size, ETag and last-modified time; the engine compares those three with the
parent snapshot and reads only new or changed objects. Where a store gives neither ETag nor
time (memory), every object is read each time rather than trusting the size alone.

Objects are read in ranges of ``RANGE`` bytes with one range read ahead, never whole.
Ranges are conditional on the listed ETag where the service allows it (S3, Azure, GCS), so
an object replaced mid-read fails (it is named in the run's errors and read next time)
instead of stitching two versions together; elsewhere (WebDAV, whose servers may ignore
``If-Match``) an object read in more than one range is also checked against a fresh stat
(size, ETag, time) after the read.

As a restore target the URL names the bucket and prefix to write to. Each file becomes one
object, streamed (a multipart upload on S3: it appears only once complete). An existing
object is never replaced: that file fails with an error and the others go on. Buckets have
no empty directories, symbolic links, modes or settable modification times: empty
directories are skipped, links fail with an error, and objects get the time of the upload.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from multibackup.backends.location import CREDENTIAL_KEYS, Location, open_store, parse_location
from multibackup.backends.opendal_store import OpenDALStore
from multibackup.errors import ObjectExists, SourceError, StoreError, UsageError
from multibackup.sources.base import DIR, FILE, UNKNOWN_SIZE, Entry, join, sorted_entries

RANGE = 4 << 20  # bytes per ranged read; two in memory per object being read
_MIN_PART = 16 << 20  # multipart part size for restores
_MAX_PARTS = 9000  # S3 allows 10,000 parts; keep a margin


def _credentials(location: Location, credentials: Mapping[str, str]) -> dict[str, str] | None:
    """The config layer's credentials that this kind of store takes; None: the environment."""
    allowed = CREDENTIAL_KEYS.get(location.scheme, frozenset())
    picked = {k: v for k, v in credentials.items() if k in allowed and v}
    return picked or None


def _open(url: str, credentials: Mapping[str, str]) -> tuple[Location, OpenDALStore]:
    location = parse_location(url)
    if location.scheme in ("fs", "sftp"):  # url.py sends these elsewhere; be explicit anyway
        raise UsageError(f"{url!r} is not a bucket location")
    store = open_store(location, credentials=_credentials(location, credentials))
    if not isinstance(store, OpenDALStore):
        raise UsageError(f"{location.describe()}: cannot be read as a bucket")
    return location, store


class _ObjectReader(io.RawIOBase):
    """One object's bytes through ranged reads, the next range fetched while this is used."""

    def __init__(self, source: BucketSource, key: str, size: int, etag: str) -> None:
        super().__init__()
        self._source = source
        self._key = key
        self._size = size
        self._etag = etag
        self._offset = 0  # of the next range to request
        self._buf = memoryview(b"")
        self._next: Future[bytes] | None = None
        self.ranges = 0
        self.done = size == 0
        self._request()

    def readable(self) -> bool:
        return True

    def _fetch(self, offset: int, length: int) -> bytes:
        store = self._source.store
        if self._etag and store.reads_if_match:
            return store.get_if_match(self._key, self._etag, offset, length)
        return store.get(self._key, offset, length)

    def _request(self) -> None:
        if self._offset >= self._size:
            self._next = None
            return
        length = min(RANGE, self._size - self._offset)
        self._next = self._source.prefetch.submit(self._fetch, self._offset, length)
        self._offset += length
        self.ranges += 1

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buf:
            if self._next is None:
                self.done = True
                return 0
            try:
                self._buf = memoryview(self._next.result())
            except StoreError as exc:  # the source's failure, not the repository's
                raise SourceError(str(exc)) from None
            self._request()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
        self._buf = memoryview(b"")
        super().close()


class BucketSource:
    """A bucket prefix as a tree of files."""

    complete_only = False

    def __init__(self, location: Location, store: OpenDALStore) -> None:
        self.location = location
        self.store = store
        self.scheme = location.scheme
        self.parallel = max(1, store.concurrency)
        # Conditional reads are part of these services' APIs; a WebDAV server may ignore
        # If-Match, so there a read is also checked against a fresh stat afterwards.
        self.conditional_reads = store.reads_if_match and location.scheme in (
            "s3", "azblob", "gcs")
        # Read-ahead of each reader's next range: one per reader.
        self.prefetch = ThreadPoolExecutor(self.parallel, thread_name_prefix="bucket-read")
        #: objects left out because a prefix of the same name exists ("a" beside "a/b")
        self.skipped: list[str] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.location.describe()

    def list_dir(self, path: str) -> list[Entry]:
        prefix = f"{path}/" if path else ""
        try:
            infos = list(self.store.list_children(prefix))
        except StoreError as exc:
            if not path:
                raise  # the bucket itself (credentials, name, network): the run fails
            raise SourceError(str(exc)) from None
        files: dict[str, Entry] = {}
        dirs: dict[str, Entry] = {}
        for info in infos:
            name = info.key[len(prefix):]
            if name.endswith("/"):
                name = name[:-1]
                if name and "/" not in name:
                    dirs[name] = Entry(name, DIR, mode=0o755)
                continue
            if not name or "/" in name:
                continue
            # Without ETag and time, an unknown size makes the engine read it every time.
            known = bool(info.etag) or info.mtime_ns > 0
            files[name] = Entry(name, FILE, size=info.size if known else UNKNOWN_SIZE,
                                mtime_ns=info.mtime_ns, mode=0o644, etag=info.etag or "")
        # A key that is also a prefix ("a" and "a/b"): a tree cannot hold both names, so
        # the directory wins and the object is remembered in ``skipped``.
        for name in [n for n in files if n in dirs]:
            del files[name]
            with self._lock:
                self.skipped.append(join(path, name))
        return sorted_entries([*files.values(), *dirs.values()])

    @contextlib.contextmanager
    def open(self, path: str, entry: Entry) -> Iterator[BinaryIO]:
        size, etag = entry.size, entry.etag
        try:
            if size == UNKNOWN_SIZE:  # the listing could not be trusted: ask for it now
                info = self.store.stat(path)
                size, etag = info.size, info.etag or ""
            reader = _ObjectReader(self, path, size, etag)
        except StoreError as exc:
            raise SourceError(str(exc)) from None
        try:
            yield reader  # type: ignore[misc]
        finally:  # an error in the body (the reader's, or the repository's) goes on as is
            reader.close()
        if not reader.done:
            raise SourceError(f"{self.describe()}: {path}: not read to the end")
        if reader.ranges > 1 and not (etag and self.conditional_reads):
            try:
                self._check_unchanged(path, size, etag, entry.mtime_ns)
            except StoreError as exc:
                raise SourceError(str(exc)) from None

    def _check_unchanged(self, path: str, size: int, etag: str, mtime_ns: int) -> None:
        """Where reads cannot be conditional: the object must look as it did before."""
        info = self.store.stat(path)
        if (info.size != size or (info.etag or "") != etag
                or (mtime_ns and info.mtime_ns != mtime_ns)):
            raise SourceError(f"{self.describe()}: {path}: the object changed while it was "
                              "read; it is read again by the next backup")

    def close(self) -> None:
        self.prefetch.shutdown(wait=False, cancel_futures=True)


class BucketTarget:
    """Writes restored files as objects below a bucket prefix, never replacing one."""

    def __init__(self, location: Location, store: OpenDALStore) -> None:
        self.location = location
        self.store = store
        self.scheme = location.scheme

    def describe(self) -> str:
        return self.location.describe()

    def makedirs(self, path: str) -> None:
        pass  # a bucket has no directories: they exist through the keys below them

    def symlink(self, path: str, target: str) -> None:
        raise SourceError("a bucket cannot hold a symbolic link")

    def write(self, path: str, chunks: Iterator[bytes], *, size: int, mode: int,
              mtime_ns: int) -> None:
        part = max(_MIN_PART, -(-max(size, 0) // _MAX_PARTS))
        part = -(-part // (1 << 20)) << 20  # whole MiB
        try:
            if self.store.exists(path):
                raise ObjectExists(path)
            written = self.store.put_stream(path, chunks, create_only=True, part_size=part)
        except ObjectExists:
            raise SourceError(f"already exists in {self.describe()}; not replaced (restore "
                              "to another prefix)") from None
        except StoreError as exc:
            raise SourceError(str(exc)) from None
        if size >= 0 and written != size:
            raise SourceError(f"wrote {written} bytes to {self.describe()}, expected {size}")

    def close(self) -> None:
        pass


def open_source(url: str, credentials: Mapping[str, str]) -> BucketSource:
    return BucketSource(*_open(url, credentials))


def open_target(url: str, credentials: Mapping[str, str]) -> BucketTarget:
    return BucketTarget(*_open(url, credentials))
