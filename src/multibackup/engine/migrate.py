"""Migration: copy, sync or check the objects of one location against another.

Any two stores work (S3-compatible, Azure, GCS, WebDAV, SFTP, local), because only the
ObjectStore interface is used: listings on both sides, ranged reads at the source, a plain
``put`` for small objects and a streaming writer (``put_stream``) for large ones, so no
object is ever held whole in memory. Every copied object is verified at the destination
(size, then its MD5 ETag or, where the ETag says nothing about the content, a read-back
hash), and the verified ones go into the journal so that a rerun skips them without reading
them again.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import mmap
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from queue import Empty, Queue
from typing import Any, Protocol, TextIO

from multibackup.backends.base import ObjectInfo, ObjectStore
from multibackup.backends.crc32c import crc32c
from multibackup.backends.s3_multipart import S3Multipart, garbled
from multibackup.backends.s3_objects import (
    S3Objects,
    attributes_from,
    handles,
    split_attributes,
)
from multibackup.engine.journal import Journal, Part, Upload, VerifiedObject
from multibackup.engine.migrate_scratch import ObjectResult, Pair, Scratch, Task
from multibackup.engine.progress import Progress
from multibackup.errors import StoreError, UsageError

#: size of each ranged read at the source, and of each multipart part at the destination
CHUNK = 8 << 20
#: parts of one object uploaded at once (each holds one CHUNK in memory)
PART_CONCURRENCY = 4
#: parts read or on their way for all objects together, per transfer: with many large
#: objects at once, memory stays near 2 x transfers x CHUNK instead of 5 x
PARTS_PER_TRANSFER = 2
MODES = ("copy", "sync", "check")
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-\d+$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"(\d+)([smhdwy])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_size(text: str) -> int:
    """``10M``, ``1.5GiB``, ``512k`` or bytes; binary multiples, as rclone's size flags."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"invalid size {text!r}: expected e.g. 512, 100k, 10M, 1G")
    power = " kmgtp".index(match[2].lower() or " ")
    return int(float(match[1]) * 1024 ** power)


def parse_since(text: str, now: float | None = None) -> int:
    """A date (``2024-05-01``, ISO 8601) or a duration back from now (``7d``, ``12h``), in ns."""
    spec = text.strip().lower()
    if spec and _DURATION.sub("", spec) == "":
        seconds = sum(int(n) * _SECONDS[u] for n, u in _DURATION.findall(spec))
        return int(((now if now is not None else time.time()) - seconds) * 1e9)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"invalid date or duration {text!r}: expected e.g. 2024-05-01, "
                         "2024-05-01T12:00:00Z or 7d, 12h, 1w") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e9)


def _etag(value: str | None) -> str:
    return (value or "").strip().strip('"').lower()


def _keeps_temp_files(store: ObjectStore) -> bool:
    """True for stores that write through ``.tmp/`` below their root (local disk, SFTP,
    WebDAV), whose keys are also file paths."""
    return (getattr(store, "scheme", "") == "fs"
            or type(store).__name__ in ("SFTPStore", "WebDAVStore"))


def _keys_are_paths(store: ObjectStore) -> bool:
    """True for stores whose keys are file paths (local disk, SFTP, WebDAV, FTP): a key
    with an empty, ``.`` or ``..`` segment would land on another object there."""
    return _keeps_temp_files(store) or type(store).__name__ == "FTPStore"


def _through_link(key: str, links: set[str]) -> str:
    """The symlink among ``key``'s parent directories, or ""."""
    parts = key.split("/")
    for i in range(1, len(parts)):
        head = "/".join(parts[:i])
        if head in links:
            return head
    return ""


def _exact_names(items: Iterable[ObjectInfo], s3: S3Multipart) -> Iterator[ObjectInfo]:
    """An S3 store's listing with the names it garbles (control characters come back as
    U+FFFD) listed again exactly: otherwise such an object could be neither read nor
    matched with its copy, and a sync would delete a name that does not exist."""
    again = False
    for info in items:
        if garbled(info.key):
            again = True
            continue
        yield info
    if again:
        yield from (info for info in s3.list_exact() if garbled(info.key))


def batch_size(count: int, transfers: int) -> int:
    """Objects per hand-off to a worker: up to 16, and few enough that every worker still
    gets several batches (a short copy keeps all its transfers busy)."""
    return max(1, min(16, count // (8 * max(1, transfers))))


def batches(tasks: Iterable[Task], size: int, small: int) -> Iterator[list[Task]]:
    """``tasks`` in lists of up to ``size``; an object larger than ``small`` bytes goes
    alone, so that no small object waits behind it in one worker."""
    batch: list[Task] = []
    for task in tasks:
        if task.src.size > small:
            yield [task]
            continue
        batch.append(task)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def multipart_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives an object uploaded in these parts: MD5 of the part MD5s, ``-N``."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


@dataclass(frozen=True)
class Filters:
    """Which objects take part; the same filters apply to both sides (as rclone's do).

    A glob without ``/`` matches the last path component as well as the whole key, so
    ``*.log`` means every log file at any depth; one ending in ``/`` names a folder
    (``docs/``: every key below a folder ``docs``, at any depth). Objects whose store reports no mtime
    (SFTP) pass ``modified_since``, since nothing says they are older.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    modified_since_ns: int | None = None

    @staticmethod
    def _glob(key: str, patterns: tuple[str, ...]) -> bool:
        name = key.rsplit("/", 1)[-1]
        for p in patterns:
            if p.endswith("/"):  # a folder: everything below it (at any depth, if a name)
                folder = p.rstrip("/")
                if fnmatch.fnmatchcase(key, f"{folder}/*") or (
                        "/" not in folder and fnmatch.fnmatchcase(key, f"*/{folder}/*")):
                    return True
            elif fnmatch.fnmatchcase(key, p) or ("/" not in p and fnmatch.fnmatchcase(name, p)):
                return True
        return False

    def match(self, info: ObjectInfo) -> bool:
        if self.include and not self._glob(info.key, self.include):
            return False
        if self.exclude and self._glob(info.key, self.exclude):
            return False
        if self.min_size is not None and info.size < self.min_size:
            return False
        if self.max_size is not None and info.size > self.max_size:
            return False
        return not (self.modified_since_ns is not None and info.mtime_ns
                    and info.mtime_ns < self.modified_since_ns)


@dataclass(frozen=True)
class MigrateOptions:
    mode: str = "copy"
    #: sync only: allow deleting extraneous destination objects
    delete: bool = False
    #: sync: delete nothing when more than this many objects would go (a wrong source path
    #: or an empty listing must not wipe the destination)
    max_delete: int = 100
    #: compare by content hash even where size and ETag/mtime say nothing changed
    checksum: bool = False
    transfers: int = 4
    dry_run: bool = False
    filters: Filters = field(default_factory=Filters)
    chunk_size: int = CHUNK
    #: let the provider copy when both sides are the same S3 endpoint and account
    server_side: bool = True
    #: bytes per second read from the source, all transfers together; None: no limit
    bwlimit: int | None = None

    @property
    def writes(self) -> bool:
        """Whether the run may write at the destination (not check, not a dry run)."""
        return self.mode != "check" and not self.dry_run


#: copied/skipped/failed/mismatched/deleted in copy and sync; would-copy/would-delete in a
#: dry run; missing/differs/extraneous in check (and extraneous when sync keeps them);
#: not-copied: an entry of a file-system source that is no object (a symlink, a pipe)
STATUSES = ("copied", "skipped", "not-copied", "failed", "mismatched", "deleted",
            "would-copy", "would-delete", "missing", "differs", "extraneous")
#: the statuses that make a run fail
PROBLEMS = frozenset({"failed", "mismatched", "missing", "differs", "extraneous"})
#: where file-system stores keep unfinished writes (SFTP, local disk): never migrated
_TMP_PREFIX = ".tmp/"


class MigrationReport:
    """Counts, bytes and every object's result. The results live in the run's scratch
    database (:mod:`~multibackup.engine.migrate_scratch`), so a migration of millions of
    objects does not hold them in memory; ``results`` reads them back in key order."""

    def __init__(self, source: str, destination: str, mode: str, dry_run: bool,
                 scratch: Scratch | None = None) -> None:
        self.source, self.destination, self.mode, self.dry_run = (source, destination, mode,
                                                                  dry_run)
        self._scratch = scratch or Scratch()
        #: problems of the run as a whole (a refused delete), not of one object
        self.errors: list[str] = []
        #: things worth saying that are no problem (a damaged journal set aside)
        self.notes: list[str] = []
        self.bytes_transferred = 0
        self.bytes_read = 0
        self.elapsed = 0.0

    def add(self, results: Iterable[ObjectResult]) -> None:
        """Record results as they come (written a batch at a time)."""
        self._scratch.add_results(results)

    @property
    def results(self) -> Iterator[ObjectResult]:
        return self._scratch.results()

    def results_of(self, statuses: Iterable[str]) -> Iterator[ObjectResult]:
        """The results of some statuses only, in key order."""
        return self._scratch.results(statuses)

    def problems(self) -> Iterator[ObjectResult]:
        """The results that make the run fail, in key order."""
        return self._scratch.results(sorted(PROBLEMS))

    def counts(self) -> dict[str, int]:
        found = self._scratch.counts()
        return {k: found[k] for k in STATUSES if found.get(k)}

    @property
    def ok(self) -> bool:
        return not self.errors and not any(self.counts().get(k) for k in PROBLEMS)

    def head(self) -> dict[str, Any]:
        """The report without its objects: counts, bytes, errors."""
        return {"source": self.source, "destination": self.destination, "mode": self.mode,
                "dry_run": self.dry_run, "ok": self.ok, "counts": self.counts(),
                "bytes_transferred": self.bytes_transferred, "bytes_read": self.bytes_read,
                "elapsed_seconds": round(self.elapsed, 3), "errors": self.errors,
                "notes": self.notes, "server_side": self._scratch.any_server_side()}

    @staticmethod
    def _object(r: ObjectResult) -> dict[str, Any]:
        return {"key": r.key, "status": r.status, "size": r.size, "reason": r.reason,
                "server_side": r.server_side}

    def to_json(self) -> dict[str, Any]:
        """The whole report as one document (every object in memory: see write_json)."""
        return {**self.head(), "objects": [self._object(r) for r in self.results]}

    def write_json(self, out: TextIO) -> None:
        """The same document as :meth:`to_json`, one object a line, written as read."""
        out.write(json.dumps(self.head())[:-1] + ', "objects": [')
        for i, r in enumerate(self.results):
            out.write(("\n" if i == 0 else ",\n") + json.dumps(self._object(r)))
        out.write("\n]}\n")

    def close(self) -> None:
        """Delete the scratch database (also done when the report is collected)."""
        self._scratch.close()


class _Hashes:
    """MD5 of the whole object and of each ``CHUNK`` part, taken while streaming."""

    def __init__(self) -> None:
        self.whole = hashlib.md5()
        self.parts: list[bytes] = []
        self.size = 0

    def update(self, data: bytes) -> None:
        self.whole.update(data)
        self.parts.append(hashlib.md5(data).digest())
        self.size += len(data)


class PartsTarget(Protocol):
    """A destination that takes an object in numbered parts and can be resumed: an S3
    multipart upload, staged Azure blocks, a GCS resumable session (which takes its parts
    in order, one at a time: ``parts_at_once = 1``), or a partial file at fixed offsets
    (SFTP, local disk). Content type and metadata are given to both ``create`` and
    ``complete``, since S3 takes them at the start and Azure at the commit; ``upload_part``
    is told the object's size (``total``), since GCS takes its last part with it."""

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None) -> str: ...
    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    md5: bytes | None = None, total: int | None = None) -> str: ...
    def list_parts(self, key: str, upload_id: str) -> Mapping[int, tuple[str | None, int]]: ...
    def complete(self, key: str, upload_id: str, etags: list[str],
                 content_type: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> str: ...
    def abort(self, key: str, upload_id: str) -> None: ...


class RateLimit:
    """Paces readers to ``rate`` bytes per second in total, across threads."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> None:
        """Account for ``nbytes`` just moved; sleep until they fit the rate."""
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + nbytes / self.rate
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)


@dataclass
class Side:
    """One end of a migration: its store, plus the clients that do what the plain store
    interface cannot, each None where that side has no such thing.

    - ``s3`` (S3 sides): explicit multipart uploads with journalled parts, content type and
      metadata carried over, and server-side copies within one endpoint and account;
    - ``objects`` (S3 sides): small objects read and written whole in one request each,
      with their attributes and ETags (:meth:`Migrator._copy_small`);
    - ``parts`` (destinations other than S3): resumable parts, as staged blocks on Azure, a
      resumable session on GCS, or a partial file on SFTP or local disk.
    """

    store: ObjectStore
    s3: S3Multipart | None = None
    objects: S3Objects | None = None
    parts: PartsTarget | None = None


class Migrator:
    """Plans and runs one migration from ``src`` to ``dst`` (sides, or plain stores)."""

    def __init__(self, src: Side | ObjectStore, dst: Side | ObjectStore,
                 options: MigrateOptions, journal: Journal | None = None,
                 progress: Progress | None = None) -> None:
        src_side = src if isinstance(src, Side) else Side(src)
        dst_side = dst if isinstance(dst, Side) else Side(dst)
        src_s3, dst_s3 = src_side.s3, dst_side.s3
        if options.mode not in MODES:
            raise UsageError(f"unknown mode {options.mode!r}: use one of {', '.join(MODES)}")
        if options.mode == "sync" and not options.delete and not options.dry_run:
            raise UsageError("sync deletes objects at the destination that the source lacks: "
                             "add --delete to allow it (or use --mode copy)")
        if options.transfers < 1 or options.max_delete < 0:
            raise UsageError("--transfers must be at least 1 and --max-delete at least 0")
        self.src, self.dst, self.options = src_side.store, dst_side.store, options
        self.journal = journal
        self.src_s3, self.dst_s3 = src_s3, dst_s3
        self.src_objects, self.dst_objects = src_side.objects, dst_side.objects
        #: where large objects go part by part, resumably (S3 multipart, Azure blocks, a
        #: partial file)
        self._parts: PartsTarget | None = dst_s3 if dst_s3 is not None else dst_side.parts
        usable = getattr(self._parts, "usable", None)  # a WebDAV server may take no ranges
        if usable is not None and options.mode != "check" and not options.dry_run \
                and not usable():
            self._parts = None  # asked only when it will write
        self._limit = RateLimit(options.bwlimit) if options.bwlimit else None
        #: a part holds a slot from its read until its upload is acknowledged
        self._part_slots = threading.BoundedSemaphore(
            max(PART_CONCURRENCY + 1, PARTS_PER_TRANSFER * options.transfers))
        self._stop = threading.Event()
        #: part buffers given back, for the next part (see ``_buffer``)
        self._buffers: list[mmap.mmap] = []
        # a copy inside the provider: S3 CopyObject, Azure Copy Blob, GCS rewrite
        src_copier = src_s3 if src_s3 is not None else src_side.parts
        dst_copier = dst_s3 if dst_s3 is not None else dst_side.parts
        self._copiers: tuple[Any, Any] = (src_copier, dst_copier)
        self.server_side = bool(options.server_side and src_copier is not None
                                and hasattr(dst_copier, "copy_from")
                                and dst_copier.same_account(src_copier))
        self.progress = progress or Progress()
        self._lock = threading.Lock()
        self._scratch = Scratch()
        self._report = MigrationReport(self.src.description, self.dst.description, options.mode,
                                       options.dry_run, self._scratch)
        if journal is not None and journal.set_aside:
            self._report.notes.append(
                f"the migration journal was damaged; it was moved to {journal.set_aside} and "
                "this run compares every object afresh")

    # -- planning --------------------------------------------------------------------------

    def _compare(self, s: ObjectInfo, d: ObjectInfo | None,
                 known: VerifiedObject | None) -> tuple[str, str]:
        """("copy" | "hash" | "skip", why) for one source object against the destination."""
        if d is None:
            return "copy", "not at the destination"
        if s.size != d.size:
            return "copy", f"size differs ({s.size} at the source, {d.size} at the destination)"
        if self.options.checksum:
            return "hash", ""
        if known is not None and known.still_matches(s, d):
            return "skip", "verified earlier (journal)"
        se, de = _etag(s.etag), _etag(d.etag)
        if _MD5_ETAG.match(se) and _MD5_ETAG.match(de):
            return ("skip", "same size and MD5") if se == de else ("copy", "MD5 differs")
        if known is not None and (known.src_etag or known.src_mtime_ns):
            # verified once, changed since on one side (a source restored with an older
            # time by cp -p or tar, a destination rewritten by hand): the times below
            # cannot tell which copy is right
            return "copy", "changed since it was verified"
        # (times both left out, as SFTP does, say nothing: its ETags of size and second
        # are equal for two files written in the same second)
        if se and se == de and (_MULTIPART_ETAG.match(se)
                                or (s.mtime_ns and s.mtime_ns == d.mtime_ns)):
            return "skip", "same size and ETag"
        if s.mtime_ns and d.mtime_ns:
            if d.mtime_ns >= s.mtime_ns:
                return "skip", "same size, destination not older"
            return "copy", "source modified after the destination copy"
        return "hash", ""

    def _plan(self) -> Iterator[list[Task]]:
        """List both sides into the scratch database and compare the source objects as
        they land, a stored batch at a time: yields the tasks of each batch (and reports
        the skipped objects). Copying starts while the source is still being listed, as
        soon as the destination's listing and the journal are in: a bucket of millions of
        objects does not wait minutes for its first transfer."""
        # ".tmp/" holds a local or SFTP store's own temporary files: where either side
        # keeps them there, that prefix is left out on both sides, never copied, compared
        # or deleted
        reserved = _keeps_temp_files(self.src) or _keeps_temp_files(self.dst)
        halt = threading.Event()  # the plan ends early: the listings stop at their next item

        def listing(store: ObjectStore, s3: S3Multipart | None) -> Iterator[ObjectInfo]:
            items = store.list() if s3 is None else _exact_names(store.list(), s3)
            try:
                for o in items:
                    if halt.is_set():
                        raise StoreError("listing stopped")
                    if not (reserved and (o.key.startswith(_TMP_PREFIX)
                                          or o.key == _TMP_PREFIX[:-1])):
                        yield o
            finally:
                # ended in the thread that listed: an OpenDAL lister dropped on another
                # thread (by the error's traceback, kept in a Future) ends the process
                close = getattr(items, "close", None)
                if close is not None:
                    close()

        scratch = self._scratch
        match = self.options.filters.match
        stored: Queue[int | None] = Queue()  # how many source objects are stored so far

        def list_source() -> None:
            try:
                scratch.add_listing("src", listing(self.src, self.src_s3), match, stored.put)
            finally:
                stored.put(None)

        # both sides are listed at once: with many objects each listing is many requests
        self.progress.counting = True
        with ThreadPoolExecutor(2, thread_name_prefix="list") as pool:
            try:
                dst_listed = pool.submit(scratch.add_listing, "dst",
                                         listing(self.dst, self.dst_s3), match)
                src_listed = pool.submit(list_source)
                if self.journal is not None:
                    scratch.add_verified(self.journal.iter_verified())
                dst_listed.result()
                planned = 0
                while (upto := stored.get()) is not None:
                    tasks = self._decide(scratch.pairs(planned, upto))
                    planned = upto
                    if tasks:
                        yield tasks
                src_listed.result()  # the source's listing error, if it failed
            finally:
                halt.set()
                self.progress.counting = False
        done = [ObjectResult(o.key.encode(errors="surrogateescape").decode(errors="replace"),
                             "failed", o.size, "the key is no valid UTF-8")
                for o in scratch.unusable]
        # a folder or SFTP source's symlinks, pipes, sockets and devices hold no object's
        # bytes: no object store (nor this copy) keeps them, and the user is told so
        done += [ObjectResult(o.key.encode(errors="surrogateescape").decode(errors="replace"),
                              "not-copied", o.size, f"{what}, not a regular file")
                 for o, what in getattr(self.src, "passed_over", ())
                 if not (reserved and o.key.startswith(_TMP_PREFIX)) and match(o)]
        self._report.add(done)

    def _decide(self, pairs: Iterable[Pair]) -> list[Task]:
        """The tasks among ``pairs``; the objects left as they are go into the report, and
        the tasks into the progress totals."""
        as_files = _keys_are_paths(self.dst)
        links = getattr(self.dst, "symlinks", set())  # local destination: not followed
        tasks: list[Task] = []
        done: list[ObjectResult] = []
        nbytes = 0
        for pair in pairs:
            s, key = pair.src, pair.src.key
            if as_files and any(p in ("", ".", "..") for p in key.split("/")):
                # "a/../b" would land on "b" (or be refused): never write another object
                done.append(ObjectResult(key, "failed", s.size,
                                         "the key is no valid file path at the destination"))
            elif links and (link := _through_link(key, links)):
                done.append(ObjectResult(key, "failed", s.size,
                                         f"the destination has a symlink at {link}: "
                                         "not written through"))
            else:
                action, why = self._compare(s, pair.dst, pair.known)
                if action == "skip":
                    done.append(ObjectResult(key, "skipped", s.size, why))
                else:
                    tasks.append(Task(s, pair.dst, action, why))
                    nbytes += s.size
        self._report.add(done)
        self.progress.total_items += len(tasks)
        self.progress.total_bytes += nbytes
        return tasks

    # -- running ---------------------------------------------------------------------------

    def run(self) -> MigrationReport:
        """List, compare, copy (or only compare), verify, delete; never raises per object.

        Objects stream from the scratch database to the workers, at most a few per worker
        queued, so memory does not grow with the number of objects."""
        started = time.monotonic()
        report = self._report
        if self._parts is None and not self.options.dry_run and self.options.mode != "check":
            # a destination whose large writes are not journalled (WebDAV streams through
            # a temporary file): what killed runs left there a day ago is of no use
            sweep = getattr(self.dst, "sweep_temporary", None)
            if sweep is not None:
                sweep(older_than=86400)
        # workers take objects from a bounded queue (a few per worker: they never run dry,
        # it never grows); no Future per object, which cost many small objects a tenth of
        # the client's CPU. Small objects go in batches: one hand-off (and one wake of
        # this thread) per object cost many small objects another tenth.
        transfers = self.options.transfers
        queue: Queue[list[Task] | None] = Queue(4 * transfers)
        finished: list[ObjectResult] = []

        def work() -> None:
            while (batch := queue.get()) is not None:
                results = []
                for task in batch:
                    if self._stop.is_set():  # interrupted: the rest of the batch is dropped
                        break
                    try:
                        results.append(self._one(task))  # which reports its own errors
                    except Exception as exc:  # a bug: the worker must go on taking objects
                        results.append(ObjectResult(task.src.key, "failed", task.src.size,
                                                    f"{type(exc).__name__}: {exc}"))
                with self._lock:
                    finished.extend(results)

        workers = [threading.Thread(target=work, name=f"migrate-{n}", daemon=True)
                   for n in range(transfers)]
        for worker in workers:
            worker.start()
        plan = self._plan()
        try:
            for tasks in plan:
                # as many per batch as the objects planned so far allow
                per_batch = batch_size(self.progress.total_items, transfers)
                for batch in batches(tasks, per_batch, self.options.chunk_size):
                    queue.put(batch)
                    if len(finished) >= 500:
                        with self._lock:
                            done, finished[:] = finished[:], []
                        report.add(done)
        except BaseException:
            # Ctrl-C: queued objects are dropped and the ones in flight stop at their next
            # range; what was verified or journalled so far is kept for the next run
            self._stop.set()
            with contextlib.suppress(Empty):
                while True:
                    queue.get_nowait()
            raise
        finally:
            plan.close()  # the listings stop, if they still run
            for _ in workers:
                queue.put(None)
            for worker in workers:
                worker.join()
        report.add(finished)
        self._drop_stale_uploads()
        self._extraneous()
        if self.options.writes:
            tidy = getattr(self.dst, "remove_empty_temporary", None)
            if tidy is not None:
                tidy()
        report.elapsed = time.monotonic() - started
        return report

    def _drop_stale_uploads(self) -> None:
        """Abort journalled uploads of objects the destination now holds identical (copied
        some other way meanwhile), so none stays open at the provider for nothing."""
        if self.journal is None or self._parts is None or self.options.dry_run \
                or self.options.mode == "check":
            return
        for up in self.journal.uploads():
            if self._scratch.status_of(up.key) == "skipped":
                self._parts.abort(up.key, up.upload_id)
                self.journal.end_upload(up.key)

    def _one(self, task: Task) -> ObjectResult:
        key, size = task.src.key, task.src.size
        try:
            if task.action == "hash":
                same = self._same_content(task)
                if same:
                    self.progress.add(size, 1, key)
                    return ObjectResult(key, "skipped", size, "same content (hashed)")
                task.reason = "content differs"
            if self.options.mode == "check":
                self.progress.add(size, 1, key)
                status = "missing" if task.dst is None else "differs"
                return ObjectResult(key, status, size, task.reason)
            if self.options.dry_run:
                self.progress.add(size, 1, key)
                return ObjectResult(key, "would-copy", size, task.reason)
            return self._copy(task)
        except StoreError as exc:
            return ObjectResult(key, "failed", size, str(exc))
        except Exception as exc:  # a connection dropping mid-object, a library error
            text = " ".join(str(exc).split()) or type(exc).__name__
            return ObjectResult(key, "failed", size, f"{type(exc).__name__}: {text}")

    def _read(self, info: ObjectInfo, offset: int, length: int,
              into: memoryview | None = None) -> bytes | memoryview:
        """One range of the source object - of the listed version only, where possible.
        With ``into`` (an S3 source only) the range is read straight into that buffer of
        ``length`` bytes, which is returned."""
        if self._stop.is_set():
            raise StoreError("interrupted")
        if into is not None:
            assert self.src_s3 is not None
            self.src_s3.read_into(info.key, info.etag, offset, into)
            data: bytes | memoryview = into
        elif info.etag and getattr(self.src, "reads_if_match", False):
            data = self.src.get_if_match(info.key, info.etag, offset, length)  # type: ignore[attr-defined]
        else:
            data = self.src.get(info.key, offset, length)
        self._took(len(data))
        return data

    def _buffer(self) -> mmap.mmap:
        """A part buffer: one given back by a finished part, or a new one. There are never
        more than the part slots, and reusing them spares the page faults of fresh memory.
        Anonymous memory maps, not bytearrays: a bytearray is zeroed while the GIL is held,
        a map's pages are zeroed by the kernel when the first read fills them."""
        with self._lock:
            if self._buffers:
                return self._buffers.pop()
        return mmap.mmap(-1, self.options.chunk_size)

    def _part_done(self, buffer: mmap.mmap | None) -> None:
        if buffer is not None:
            with self._lock:
                self._buffers.append(buffer)
        self._part_slots.release()

    def _took(self, nbytes: int) -> None:
        """Count ``nbytes`` read at the source and hold to the bandwidth limit."""
        with self._lock:
            self._report.bytes_read += nbytes
        if self._limit is not None:
            self._limit.take(nbytes)

    def _chunks(self, store: ObjectStore, info: ObjectInfo, hashes: _Hashes,
                count: bool) -> Iterator[bytes]:
        step = self.options.chunk_size
        for offset in range(0, info.size, step):
            length = min(step, info.size - offset)
            if store is self.src:
                data = self._read(info, offset, length)
            else:
                data = store.get(info.key, offset, length)
                with self._lock:
                    self._report.bytes_read += len(data)
            if len(data) != length:
                raise StoreError(f"{store.description}: reading {info.key}: short read")
            hashes.update(data)
            if count:
                self.progress.add(len(data))
            yield data

    def _digest(self, store: ObjectStore, info: ObjectInfo, count: bool = False) -> str:
        hashes = _Hashes()
        for _ in self._chunks(store, info, hashes, count):
            pass
        return hashes.whole.hexdigest()

    def _same_content(self, task: Task) -> bool:
        assert task.dst is not None
        md5 = self._digest(self.src, task.src)
        same = md5 == self._digest(self.dst, task.dst)
        if same and self.journal is not None and not self.options.dry_run:
            self.journal.record(VerifiedObject(task.src.key, task.src.size, task.src.etag or "",
                                               task.src.mtime_ns, task.dst.etag or "", md5))
        return same

    def _copy(self, task: Task) -> ObjectResult:
        info = task.src
        self.progress.add(current=info.key)
        if self.server_side:
            return self._copy_server_side(task)
        if info.size <= self.options.chunk_size:
            return self._copy_small(task)
        result = (self._copy_parts(task) if self._parts is not None
                  else self._copy_streamed(task))
        if result.status == "copied" and not (info.etag and getattr(self.src, "reads_if_match",
                                                                     False)):
            changed = self._changed_since_listed(info)
            if changed:
                return self._torn(info, changed)
        return result

    def _changed_since_listed(self, info: ObjectInfo) -> str:
        """What tells that the source object changed since it was listed, or "".

        Read in several ranges from a source that cannot tie them to one version (a local
        file, SFTP, FTP), an object rewritten meanwhile arrives as a mix of two versions,
        which the read-back check cannot see (it compares with what was read)."""
        try:
            now = self.src.stat(info.key)
        except StoreError as exc:
            return f"it cannot be read again ({exc})"
        if now.size != info.size:
            return f"its size is now {now.size}"
        if now.etag and info.etag and now.etag != info.etag:
            return "it was rewritten"
        return ""

    def _torn(self, info: ObjectInfo, changed: str) -> ObjectResult:
        """A copy made while its source changed: removed, not journalled, failed."""
        return ObjectResult(info.key, "failed", info.size,
                            f"the source changed while it was copied ({changed}); "
                            + self._discard(info.key))

    def _discard(self, key: str) -> str:
        """Forget and remove a copy known to be wrong: left there, its size and time would
        pass the next run's comparison (a destination not older than the source) for a
        good copy. Says what became of it."""
        if self.journal is not None:
            self.journal.forget(key)
        try:
            self.dst.delete(key)
        except StoreError as exc:
            return f"it could not be removed from the destination: {exc}"
        return "removed from the destination (the next run copies it again)"

    def _copy_small(self, task: Task) -> ObjectResult:
        """An object of up to one chunk: one read, one write, then the usual verification.

        With an S3 source the GET brings the content type and metadata along, and with
        an S3 destination the PUT's MD5 ETag proves what arrived: S3 to S3 is two
        requests an object, where the plain stores need a stat before and after.
        """
        info = task.src
        whole = handles(info.key)  # a key a server may rewrite on its way: the stores
        src_objects = self.src_objects if whole else None
        dst_objects = self.dst_objects if whole else None
        keeps = getattr(self.dst, "keeps_attributes", False) or dst_objects is not None
        if src_objects is not None:
            if self._stop.is_set():
                raise StoreError("interrupted")
            fetched = src_objects.get(info.key, info.etag)
            data, attributes = fetched.data, fetched.attributes if keeps else {}
            self._took(len(data))
        else:
            content_type, metadata = self._attributes(info.key)
            data = self._read(info, 0, info.size) if info.size else b""
            attributes = attributes_from(content_type, metadata)
        if len(data) != info.size:
            raise StoreError(f"{self.src.description}: {info.key}: read {len(data)} bytes, "
                             f"listed as {info.size}")
        self.progress.add(len(data))
        md5 = hashlib.md5(data)
        if dst_objects is not None:
            etag = dst_objects.put(info.key, data, attributes)
            if _MD5_ETAG.match(_etag(etag)):  # the server's MD5 of what it stored
                problem = ("" if _etag(etag) == md5.hexdigest()
                           else f"destination MD5 {_etag(etag)}, expected {md5.hexdigest()}")
                return self._verified(task, len(data), md5.hexdigest(), [md5.digest()],
                                      checked=(problem, etag))
        elif attributes:
            content_type, metadata = split_attributes(attributes)
            self.dst.put(info.key, data, content_type=content_type,  # type: ignore[call-arg]
                         user_metadata=metadata)
        else:
            self.dst.put(info.key, data)
        return self._verified(task, len(data), md5.hexdigest(), [md5.digest()])

    def _copy_streamed(self, task: Task) -> ObjectResult:
        """A large object to a destination without resumable parts (WebDAV): streamed
        through the store's writer, which makes it visible only once complete."""
        info = task.src
        key, size = info.key, info.size
        hashes = _Hashes()
        chunks = self._chunks(self.src, info, hashes, count=True)
        content_type, metadata = self._attributes(key)
        put_stream = getattr(self.dst, "put_stream", None)
        if put_stream is None or not getattr(self.dst, "writes_multi", True):
            raise StoreError(f"{self.dst.description}: writing {key}: this destination "
                             "cannot stream large objects")
        if hasattr(self.dst, "create_only_atomic"):  # OpenDAL: part size, attributes
            put_stream(key, chunks, part_size=self.options.chunk_size,
                       content_type=content_type, user_metadata=metadata, size=size)
        else:
            put_stream(key, chunks)
        if hashes.size != size:
            raise StoreError(f"{self.src.description}: {key}: read {hashes.size} bytes, "
                             f"listed as {size}")
        return self._verified(task, size, hashes.whole.hexdigest(), hashes.parts)

    def _verified(self, task: Task, sent: int, md5: str, parts: list[bytes],
                  checked: tuple[str, str] | None = None) -> ObjectResult:
        """Count ``sent`` bytes, verify the written object (:meth:`_verify`, unless the
        write already proved it: ``checked`` = (problem or "", destination ETag)) and
        journal it; ``md5`` is the whole object's, or "" when a resumed upload did not
        read it all."""
        info = task.src
        key, size = info.key, info.size
        with self._lock:
            self._report.bytes_transferred += sent
        self.progress.add(items=1)
        problem, dst_etag = checked or self._verify(key, size, md5, parts)
        if problem:
            return ObjectResult(key, "mismatched", size, f"{problem}; {self._discard(key)}")
        if self.journal is not None:
            self.journal.record(VerifiedObject(key, size, info.etag or "", info.mtime_ns,
                                               dst_etag, md5 or _etag(dst_etag)))
        return ObjectResult(key, "copied", size, task.reason)

    def _attributes(self, key: str) -> tuple[str | None, dict[str, str]]:
        """The source object's content type and user metadata, where the destination keeps
        them (clouds; not a local disk, SFTP or WebDAV): one stat through the source store."""
        attributes = getattr(self.src, "attributes", None)
        if (attributes is None or self.src.is_local
                or not getattr(self.dst, "keeps_attributes", False)):
            return None, {}
        return attributes(key)  # type: ignore[no-any-return]

    def _copy_server_side(self, task: Task) -> ObjectResult:
        """CopyObject / UploadPartCopy, Copy Blob, rewrite: the provider copies (content
        type and metadata too), we check the result (Azure's and GCS's copies check their
        size and MD5 against the source's themselves)."""
        source, target = self._copiers
        info = task.src
        target.copy_from(source, info)
        self.progress.add(info.size, 1)
        stat = getattr(target, "stat", None)  # S3: any key, as the copy took it
        st = stat(info.key) if stat is not None else self.dst.stat(info.key)
        se, de = _etag(info.etag), _etag(st.etag)
        if st.size != info.size:
            return ObjectResult(info.key, "mismatched", info.size,
                                f"destination holds {st.size} bytes, expected {info.size}",
                                server_side=True)
        if _MD5_ETAG.match(se) and se != de:
            return ObjectResult(info.key, "mismatched", info.size,
                                f"destination MD5 {de}, source {se}", server_side=True)
        if self.journal is not None:
            self.journal.record(VerifiedObject(info.key, info.size, info.etag or "",
                                               info.mtime_ns, st.etag or "", de))
        return ObjectResult(info.key, "copied", info.size, task.reason, server_side=True)

    def _copy_parts(self, task: Task) -> ObjectResult:
        """A large object part by part, journalled and resumable (S3 multipart, Azure
        blocks, a GCS session, a partial file on SFTP or local disk); into S3, Azure and
        GCS with content type and user metadata."""
        if self.src_s3 is not None and self._parts is self.dst_s3:
            # S3 to S3: every standard header travels, not only the content type
            headers = self.src_s3.headers(task.src.key)
            sent, part_md5s = self._multipart(task.src, None, {}, headers)
        else:
            content_type, metadata = self._attributes(task.src.key)
            sent, part_md5s = self._multipart(task.src, content_type, metadata)
        return self._verified(task, sent, "", part_md5s)

    def _resume(self, info: ObjectInfo) -> tuple[str | None, dict[int, Part], str]:
        """The journalled upload of this very source version, the parts the server still
        holds with the ETags we recorded, and the upload's part checksum; (None, {}, "")
        when there is none to continue."""
        assert self._parts is not None
        if self.journal is None:
            return None, {}, ""
        up = self.journal.upload(info.key)
        if up is None:
            return None, {}, ""
        same = (up.size, up.src_etag, up.src_mtime_ns, up.part_size) == (
            info.size, info.etag or "", info.mtime_ns, self.options.chunk_size)
        if same:
            try:
                held = self._parts.list_parts(info.key, up.upload_id)
            except StoreError:
                held = None  # expired or aborted: start over
            if held is not None:
                # a partial file cannot name its parts' ETags (None): the finished object
                # is read back and compared part by part instead
                parts = {n: p for n, p in self.journal.parts(info.key, up.upload_id).items()
                         if held.get(n) in ((p.etag, p.size), (None, p.size))
                         and bool(p.checksum) == bool(up.checksum)}
                return up.upload_id, parts, up.checksum
        self._parts.abort(info.key, up.upload_id)
        self.journal.end_upload(info.key)
        return None, {}, ""

    def _multipart(self, info: ObjectInfo, content_type: str | None,
                   metadata: dict[str, str], headers: Mapping[str, object] | None = None
                   ) -> tuple[int, list[bytes]]:
        """Upload ``info`` in ``chunk_size`` parts, continuing a journalled upload.

        Each part's MD5 is checked against the ETag S3 returns for it and then journalled,
        so a kill loses at most the parts in flight (``PART_CONCURRENCY``, sent in parallel
        to hide per-request latency; all objects together hold at most the slots of
        ``_part_slots``). Returns (bytes sent, part MD5s).
        """
        target = self._parts
        assert target is not None
        key, size, step = info.key, info.size, self.options.chunk_size
        upload_id, done, checksum = self._resume(info)
        if upload_id is None:
            create_checked = getattr(target, "create_checked", None)
            if create_checked is not None:  # S3: parts proven by CRC32C where it can
                upload_id, checksum = create_checked(key, content_type, metadata, headers)
            else:
                upload_id = target.create(key, content_type, metadata)
            if self.journal is not None:
                self.journal.start_upload(Upload(key, upload_id, size, info.etag or "",
                                                 info.mtime_ns, step, checksum))
        parts: dict[int, Part] = dict(done)
        sent = 0

        def send(number: int, data: bytes | memoryview) -> int:
            if checksum:
                # the server checks the CRC (or upload_part compares MD5 and ETag); its
                # ETag is its MD5 of what it took, for the object's multipart ETag
                crc = base64.b64encode(crc32c(data).to_bytes(4, "big")).decode()
                etag = target.upload_part(key, upload_id, number, data,  # type: ignore[call-arg]
                                          total=size, crc32c=crc)
                md5 = (_etag(etag) if _MD5_ETAG.match(_etag(etag))
                       else hashlib.md5(data).hexdigest())
            else:
                digest = hashlib.md5(data).digest()
                md5, crc = digest.hex(), ""
                # sent with its Content-MD5 where the service checks one (S3, Azure)
                etag = target.upload_part(key, upload_id, number, data, md5=digest, total=size)
                if _etag(etag) != md5:
                    raise StoreError(f"{self.dst.description}: {key}: part {number} arrived "
                                     f"damaged (ETag {etag}, MD5 {md5})")
            part = Part(number, etag, md5, len(data), crc)
            if self.journal is not None:
                self.journal.record_part(key, upload_id, part)
            parts[number] = part
            self.progress.add(len(data))
            return len(data)

        # ranges are read in order, up to PART_CONCURRENCY parts are on their way at once
        # (one where the destination takes its bytes in order: a GCS session)
        at_once = getattr(target, "parts_at_once", PART_CONCURRENCY)
        in_flight: set[Future[int]] = set()
        with ThreadPoolExecutor(at_once, thread_name_prefix="part") as pool:
            try:
                for number, offset in enumerate(range(0, size, step), 1):
                    if number in done:
                        self.progress.add(done[number].size)
                        continue
                    self._part_slots.acquire()
                    buffer = None
                    try:
                        length = min(step, size - offset)
                        if self.src_s3 is not None:  # into a reused buffer, no copy
                            buffer = self._buffer()
                        data = self._read(info, offset, length, None if buffer is None
                                          else memoryview(buffer)[:length])
                        while len(in_flight) >= at_once:
                            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                            sent += sum(f.result() for f in finished)
                        future = pool.submit(send, number, data)
                    except BaseException:
                        self._part_done(buffer)
                        raise
                    # the slot (and buffer) come back when acknowledged, failed or cancelled
                    future.add_done_callback(lambda _, b=buffer: self._part_done(b))
                    in_flight.add(future)
                    del data
                finished, in_flight = wait(in_flight)
                sent += sum(f.result() for f in finished)
            except BaseException:
                for future in in_flight:
                    future.cancel()
                raise
        etags = [parts[n].etag for n in sorted(parts)]
        md5s = [bytes.fromhex(parts[n].md5) for n in sorted(parts)]
        if checksum:
            target.complete(key, upload_id, etags, content_type, metadata,  # type: ignore[call-arg]
                            checksums=[parts[n].checksum for n in sorted(parts)])
        else:
            target.complete(key, upload_id, etags, content_type, metadata)
        if self.journal is not None:
            self.journal.end_upload(key)
        return sent, md5s

    def _verify(self, key: str, size: int, md5: str, parts: list[bytes]) -> tuple[str, str]:
        """("" or what is wrong, the destination ETag) after writing ``key``.

        The size comes from a stat. The content is proven by an MD5 ETag (single-part S3
        writes) or the multipart ETag of the parts we sent; any other ETag (Azure, GCS,
        WebDAV) or none (SFTP, local) is no proof, so the object is read back and hashed.
        """
        st = self.dst.stat(key)
        if st.size != size:
            return f"destination holds {st.size} bytes, expected {size}", st.etag or ""
        etag = _etag(st.etag)
        if _MD5_ETAG.match(etag) and len(parts) <= 1 and md5:
            return ("" if etag == md5 else f"destination MD5 {etag}, expected {md5}"), st.etag or ""
        if _MULTIPART_ETAG.match(etag) and etag == multipart_etag(parts):
            return "", st.etag or ""
        back = _Hashes()
        for _ in self._chunks(self.dst, ObjectInfo(key, size), back, count=False):
            pass
        # without the whole MD5 (a resumed upload did not read every part) the part MD5s
        # of what was sent and of what was read back are compared instead
        got, want = ((back.whole.hexdigest(), md5) if md5
                     else (multipart_etag(back.parts), multipart_etag(parts)))
        return ("" if got == want else f"read back {got}, expected {want}"), st.etag or ""

    def _extraneous(self) -> None:
        """Report, or in sync mode with --delete delete, destination objects the source lacks."""
        report, opts, scratch = self._report, self.options, self._scratch
        if opts.mode not in ("sync", "check"):
            return
        count = scratch.extraneous_count()
        if not count:
            return

        def mark(status: str, reason: str) -> None:
            report.add(ObjectResult(o.key, status, o.size, reason)
                       for o in scratch.extraneous())

        if opts.mode == "check":
            return mark("extraneous", "not at the source")
        if not scratch.source_count() and not scratch.unusable:
            # a mistyped bucket prefix lists nothing, and would empty the destination
            report.errors.append("the source lists no objects: nothing deleted at the "
                                 "destination (check the source location)")
            return mark("extraneous", "kept: the source is empty")
        if opts.dry_run:
            return mark("would-delete", "not at the source")
        if count > opts.max_delete:
            report.errors.append(f"refusing to delete {count} objects at the destination: "
                                 f"more than --max-delete {opts.max_delete}")
            return mark("extraneous", "kept: over the --max-delete limit")
        if any(report.counts().get(k) for k in PROBLEMS):
            report.errors.append("nothing deleted at the destination because some objects "
                                 "failed to copy")
            return mark("extraneous", "kept: some copies failed")
        # the keys to delete are read first: deletes must not interleave with a cursor over
        # the scratch database (they add results to it), and there are at most max_delete
        doomed = list(scratch.extraneous())
        results: list[ObjectResult] = []
        for o in doomed:
            try:
                self.dst.delete(o.key)
            except StoreError as exc:
                results.append(ObjectResult(o.key, "failed", o.size, str(exc)))
                continue
            if self.journal is not None:
                self.journal.forget(o.key)
            results.append(ObjectResult(o.key, "deleted", o.size, "not at the source"))
        report.add(results)
