"""Backup of a tree source (remote files, a bucket, a database dump) into the repository.

The walk runs on the calling thread: it lists directories, reuses the parent snapshot's
node for a file whose size, mtime and ETag are unchanged (not read at all), and hands the
other files to a bounded pool of readers. Remote reads are network-bound and release the
GIL, so a few readers overlap their latency; chunking, hashing, compression and encryption
happen in the same reader thread, as for local files. Directories become tree blobs in
post-order once their children are done.

A ``complete_only`` source (a dump) fails the whole run on any error: a snapshot never
claims a truncated dump is complete. Other sources skip an unreadable file and name it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from multibackup import __version__
from multibackup.engine.backup import BackupSummary, _user
from multibackup.engine.progress import Progress
from multibackup.errors import MultibackupError, SourceError, SourceUnavailable
from multibackup.repository.blob import BlobType
from multibackup.repository.chunker import Chunker, ThreadChunkers
from multibackup.repository.repository import Repository
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import DIR, FILE, SYMLINK, Node, is_safe_name
from multibackup.sources.base import UNKNOWN_SIZE, Entry, TreeSource, join
from multibackup.sources.fs import Excludes

DEFAULT_READERS = 4


def node_from_entry(entry: Entry) -> Node:
    node = Node(name=entry.name, type=entry.kind, mode=entry.mode, mtime=entry.mtime_ns)
    if entry.kind == FILE:
        node.size = max(entry.size, 0)
        node.etag = entry.etag
    elif entry.kind == SYMLINK:
        node.target = entry.target
    return node


def unchanged(old: Node | None, entry: Entry) -> bool:
    """Same size, mtime and ETag as in the parent snapshot: the bytes need not be read."""
    return (old is not None and old.type == FILE and entry.size != UNKNOWN_SIZE
            and old.size == entry.size and old.mtime == entry.mtime_ns
            and old.etag == entry.etag)


class _Dir:
    __slots__ = ("node", "children", "reuse", "done")

    def __init__(self, node: Node, children: list[Any], reuse: tuple[bytes, list[Node]] | None):
        self.node = node
        self.children = children  # Node, None, Future[Node | None] or _Dir
        self.reuse = reuse
        self.done = False


def _ready(child: Any) -> bool:
    if isinstance(child, Future):
        return child.done()
    if isinstance(child, _Dir):
        return child.done
    return True


def _value(child: Any) -> Node | None:
    if isinstance(child, Future):
        return child.result()  # type: ignore[no-any-return]
    if isinstance(child, _Dir):
        return child.node
    return child  # type: ignore[no-any-return]


class SourceArchiver:
    """Backs up one ``TreeSource`` into one snapshot."""

    def __init__(self, repo: Repository, source: TreeSource, excludes: Excludes | None = None,
                 workers: int | None = None, progress: Progress | None = None) -> None:
        self.repo = repo
        self.source = source
        self.excludes = excludes or Excludes()
        self.workers = workers or int(getattr(source, "parallel", DEFAULT_READERS))
        self.progress = progress or Progress()
        self.summary = BackupSummary()
        self._chunkers = ThreadChunkers(repo.config.chunker)
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(self.workers * 2)
        self._queue: deque[_Dir] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def _error(self, path: str, exc: BaseException | str) -> None:
        if isinstance(exc, SourceUnavailable):
            raise exc
        if self.source.complete_only:
            if isinstance(exc, MultibackupError):
                raise exc
            raise SourceError(f"{path}: {exc}")
        with self._lock:
            self.summary.errors.append(f"{path}: {exc}")

    def _chunker(self) -> Chunker:
        return self._chunkers.get()

    def _parent_nodes(self, tree_id: bytes | None) -> tuple[bytes, list[Node]] | None:
        if tree_id is None:
            return None
        try:
            return tree_id, self.repo.load_tree(tree_id)
        except MultibackupError:
            return None

    # ---- files ------------------------------------------------------------------------

    def _read(self, path: str, entry: Entry, changed: bool) -> Node | None:
        node = node_from_entry(entry)
        content: list[bytes] = []
        size = 0
        try:
            with self.source.open(path, entry) as stream:
                for chunk in self._chunker().split_stream(stream):
                    blob_id, _ = self.repo.save_blob(BlobType.DATA, chunk)
                    content.append(blob_id)
                    size += len(chunk)
                    self.progress.add(len(chunk), 0, path)
        except (OSError, SourceError) as exc:  # a store error is not the source's: it aborts
            self.progress.add(-size)
            self._error(path, exc if isinstance(exc, SourceError) else (exc.strerror or str(exc)))
            return None
        node.size = size
        node.content = content
        with self._lock:
            s = self.summary
            s.files_changed += changed
            s.files_new += not changed
            s.total_files += 1
            s.total_bytes += size
            s.bytes_read += size
        self.progress.add(0, 1)
        return node

    def _submit(self, path: str, entry: Entry, changed: bool) -> Future[Node | None]:
        self._slots.acquire()  # bounded work in flight: the walk waits for the readers
        assert self._pool is not None
        fut = self._pool.submit(self._read, path, entry, changed)
        fut.add_done_callback(lambda _f: self._slots.release())
        return fut

    def _file(self, path: str, entry: Entry, old: Node | None) -> Any:
        if unchanged(old, entry) and all(c in self.repo.index for c in old.content):  # type: ignore[union-attr]
            node = node_from_entry(entry)
            node.content = old.content  # type: ignore[union-attr]
            with self._lock:
                self.summary.files_unchanged += 1
                self.summary.total_files += 1
                self.summary.total_bytes += node.size
            self.progress.add(node.size, 1)
            return node
        return self._submit(path, entry, old is not None and old.type == FILE)

    # ---- directories ------------------------------------------------------------------

    def _dir(self, path: str, node: Node, parent: tuple[bytes, list[Node]] | None) -> _Dir:
        old = {n.name: n for n in parent[1]} if parent else {}
        children: list[Any] = []
        try:
            listing = self.source.list_dir(path)
        except (OSError, SourceError) as exc:
            if not path:  # the root itself: an empty snapshot would claim the source is empty
                raise SourceUnavailable(f"{self.source.describe()}: cannot list: "
                                        f"{exc if isinstance(exc, SourceError) else exc.strerror or exc}"
                                        ) from None
            self._error(path, exc if isinstance(exc, SourceError)
                        else (exc.strerror or str(exc)))
            listing = []
        for entry in listing:
            if not is_safe_name(entry.name):
                self._error(join(path, entry.name), "name cannot be stored safely; skipped")
                continue
            child_path = join(path, entry.name)
            if self.excludes.match("/" + child_path, entry.name):
                continue
            prev = old.get(entry.name)
            if entry.kind == FILE:
                children.append(self._file(child_path, entry, prev))
            elif entry.kind == DIR:
                sub = self._parent_nodes(prev.subtree if prev is not None and prev.type == DIR
                                         else None)
                children.append(self._dir(child_path, node_from_entry(entry), sub))
            elif entry.kind == SYMLINK:
                children.append(node_from_entry(entry))
        d = _Dir(node, children, parent)
        self._queue.append(d)
        self._drain(block=False)
        return d

    def _drain(self, block: bool) -> None:
        """Turn directories whose children are all done into tree blobs, in post-order."""
        while self._queue:
            d = self._queue[0]
            if not block and not all(_ready(c) for c in d.children):
                return
            self._queue.popleft()
            nodes = [n for n in (_value(c) for c in d.children) if n is not None]
            if d.reuse is not None and d.reuse[1] == nodes:
                d.node.subtree = d.reuse[0]
            else:
                d.node.subtree, _ = self.repo.save_tree(nodes)
            with self._lock:
                self.summary.dirs += 1
            d.done = True

    # ---- run --------------------------------------------------------------------------

    def run(self, *, parent: Snapshot | None = None, tags: list[str] | None = None,
            hostname: str | None = None, time_: Any = None) -> Snapshot:
        """Back up the whole source; the snapshot's path is the source's URL."""
        started = time.monotonic()
        parent_root = self._parent_nodes(parent.tree) if parent is not None else None
        root = Node("", DIR)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="source") as pool:
                self._pool = pool
                top = self._dir("", root, parent_root)
                self._drain(block=True)
        finally:
            self._pool = None
        if self.source.complete_only and self.summary.total_files == 0:
            raise SourceError(f"{self.source.describe()}: the source produced nothing to back up")
        assert top.node.subtree is not None
        self.repo.flush()
        s = self.summary
        s.take_stats(self.repo, started)
        s.dirs -= 1  # the root is not a directory of the source
        snap = Snapshot(time=time_ or Repository.now(), tree=top.node.subtree,
                        paths=[self.source.describe()],
                        hostname=hostname or socket.gethostname(), username=_user(),
                        tags=sorted(set(tags or [])), parent=parent.id if parent else None,
                        summary=s.to_json(max_errors=100),
                        program_version=f"multibackup {__version__}")
        self.repo.save_snapshot(snap)
        return snap


def find_source_parent(repo: Repository, url: str, hostname: str) -> Snapshot | None:
    """The latest snapshot of the same source URL taken from the same host."""
    best = None
    for snap in repo.snapshots():
        if snap.hostname == hostname and snap.paths == [url]:
            best = snap
    return best
