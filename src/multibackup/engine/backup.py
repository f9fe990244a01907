"""Backup: walk the sources, store new content once, write trees and a snapshot.

The main thread walks directories and decides, from the parent snapshot, which files are
unchanged (same size, mtime, ctime and inode: not read at all). Changed files go to a
bounded pool of worker threads that read, chunk, hash, compress and encrypt them; all of
that runs in C or Rust with the GIL released. Directories become tree blobs in post-order
as soon as their children are done, so the walk never waits for a whole level.
"""

from __future__ import annotations

import getpass
import os
import socket
import stat as statmod
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from multibackup import __version__
from multibackup.engine.progress import Progress
from multibackup.engine.switching import short_switch_interval
from multibackup.errors import MultibackupError
from multibackup.repository.blob import BlobType
from multibackup.repository.chunker import Chunker, ThreadChunkers
from multibackup.repository.repository import Repository
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import DEVICES, DIR, FILE, SPECIAL, SYMLINK, Node
from multibackup.sources.fs import Excludes, kind_of, list_dir

_TARGET = object()
BATCH_FILES = 64  # small files handed to a worker at once
BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class BackupSummary:
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    dirs: int = 0
    total_files: int = 0
    total_bytes: int = 0
    bytes_read: int = 0
    data_added: int = 0  # bytes stored in the repository by this run
    data_added_raw: int = 0
    data_blobs: int = 0
    tree_blobs: int = 0
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)

    def take_stats(self, repo: Repository, started: float) -> None:
        """What the run stored (from the repository's counters) and how long it took."""
        st = repo.stats
        self.data_added = st.bytes_stored
        self.data_added_raw = st.bytes_raw
        self.data_blobs = st.data_blobs
        self.tree_blobs = st.tree_blobs
        self.duration = round(time.monotonic() - started, 3)

    def to_json(self, max_errors: int | None = None) -> dict[str, Any]:
        d = dict(self.__dict__)
        if max_errors is not None and len(self.errors) > max_errors:
            d["errors"] = self.errors[:max_errors] + [
                f"... and {len(self.errors) - max_errors} more"]
        return d


def node_from_stat(name: str, st: os.stat_result, kind: str) -> Node:
    node = Node(name=name, type=kind, mode=statmod.S_IMODE(st.st_mode), mtime=st.st_mtime_ns,
                uid=st.st_uid, gid=st.st_gid)
    if kind == FILE:
        node.size = st.st_size
        node.ctime = st.st_ctime_ns
        node.inode = st.st_ino
        node.device = st.st_dev
        node.links = st.st_nlink
    return node


def unchanged(old: Node | None, st: os.stat_result) -> bool:
    """True when size, mtime, ctime and inode all match: the content need not be read."""
    return (old is not None and old.type == FILE and old.size == st.st_size
            and old.mtime == st.st_mtime_ns and old.ctime == st.st_ctime_ns
            and old.inode == st.st_ino)


class _Result:
    """A child node, ready now or once a worker task fills it in.

    Cheaper than a Future (no lock, no condition variable) for the tens of thousands of
    files in a tree: workers set ``value`` then ``ready``; the walk only reads them.
    """

    __slots__ = ("value", "error", "ready", "task")

    def __init__(self, value: Node | None = None, ready: bool = False) -> None:
        self.value = value
        self.error: BaseException | None = None
        self.ready = ready
        self.task: Future[Any] | None = None  # the worker task that fills this in

    def done(self) -> bool:
        return self.ready

    def set(self, value: Node | None) -> None:
        self.value = value
        self.ready = True

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ready = True

    def result(self) -> Node | None:
        if not self.ready:
            if self.task is None:
                raise RuntimeError("result awaited before its task was submitted")
            self.task.result()  # re-raises what killed the task
        if self.error is not None:
            raise self.error
        return self.value


def _was_file(old: Node | None) -> bool:
    """Whether a file read now replaces a file of the parent snapshot (changed, not new)."""
    return old is not None and old.type == FILE


def _done(value: Node | None) -> _Result:
    return _Result(value, True)


class Archiver:
    def __init__(self, repo: Repository, excludes: Excludes | None = None, workers: int | None = None,
                 progress: Progress | None = None) -> None:
        self.repo = repo
        self.excludes = excludes or Excludes()
        self.workers = workers or max(2, os.cpu_count() or 2)
        self.progress = progress or Progress()
        self.summary = BackupSummary()
        self._chunkers = ThreadChunkers(repo.config.chunker)
        self._slots = threading.Semaphore(self.workers * 8)
        self._queue: deque[tuple[_Result, Node, list[Any],
                                 tuple[bytes | None, list[Node]] | None]] = deque()
        self._batch: list[tuple[str, str, os.stat_result, Node | None, _Result]] = []
        self._batch_bytes = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # ---- helpers ----------------------------------------------------------------------

    def _error(self, path: str, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else (
            exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        with self._lock:
            self.summary.errors.append(f"{path}: {reason}")

    def _chunker(self) -> Chunker:
        return self._chunkers.get()

    def _parent_tree(self, node: Node | None) -> list[Node] | None:
        if node is None or node.type != DIR or node.subtree is None:
            return None
        try:
            return self.repo.load_tree(node.subtree, keep=False)  # each is read once
        except MultibackupError:
            return None

    def _parent_nodes(self, node: Node | None) -> dict[str, Node] | None:
        nodes = self._parent_tree(node)
        return None if nodes is None else {n.name: n for n in nodes}

    # ---- files ------------------------------------------------------------------------

    def _reuse(self, name: str, st: os.stat_result, old: Node) -> Node | None:
        """The node of a file that is unchanged since the parent snapshot, or None."""
        if not (unchanged(old, st) and all(c in self.repo.index for c in old.content)):
            return None
        if (old.mode == statmod.S_IMODE(st.st_mode) and old.uid == st.st_uid
                and old.gid == st.st_gid and old.device == st.st_dev
                and old.links == st.st_nlink and old.name == name and not old.etag):
            # the parent's node in every field: shared, not copied (nodes are never
            # changed once made), which also lets an unchanged directory be told
            # unchanged by identity; a large directory is not held twice
            return old
        node = node_from_stat(name, st, FILE)
        node.content = old.content
        return node

    def _count_unchanged(self, files: int, nbytes: int) -> None:
        with self._lock:
            s = self.summary
            s.files_unchanged += files
            s.total_files += files
            s.total_bytes += nbytes
        self.progress.add(nbytes, files)

    def _file(self, path: str, name: str, st: os.stat_result, old: Node | None) -> _Result:
        node = self._reuse(name, st, old) if old is not None else None
        if node is not None:
            self._count_unchanged(1, node.size)
            return _done(node)
        return self._read(path, name, st, old)

    def _read(self, path: str, name: str, st: os.stat_result, old: Node | None) -> _Result:
        """A file to read (new or changed): small ones batched, others a task each."""
        res = _Result()
        if st.st_size <= self.repo.config.chunker.min_size:
            self._batch.append((path, name, st, old, res))
            self._batch_bytes += st.st_size
            if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
                self._submit_batch()
        else:
            res.task = self._submit(self._fill, res, self._read_file, path, name, old)
        return res

    @staticmethod
    def _fill(res: _Result, fn: Any, *args: Any) -> None:
        try:
            res.set(fn(*args))
        except BaseException as exc:
            res.fail(exc)
            raise

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        self._slots.acquire()  # bounded work in flight: the walk waits for the workers
        assert self._pool is not None
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(lambda _f: self._slots.release())
        return fut

    def _submit_batch(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:
            task = self._submit(self._read_batch, batch)
            for item in batch:
                item[4].task = task

    def _read_batch(self, batch: list[tuple[str, str, os.stat_result, Node | None,
                                            _Result]]) -> None:
        """Small files, many per task: one hand-off between threads per batch, not per file."""
        new = changed = nbytes = 0
        try:
            for i, (path, name, st, old, res) in enumerate(batch):
                try:
                    node = self._read_small(path, name, st, old)
                except BaseException as exc:
                    for item in batch[i:]:
                        item[4].fail(exc)
                    raise
                if node is not None:
                    if _was_file(old):
                        changed += 1
                    else:
                        new += 1
                    nbytes += node.size
                res.set(node)
        finally:  # one update per batch: the counters' lock is contended
            self._tally(new, changed, nbytes, batch[-1][0])

    def _read_small(self, path: str, name: str, st: os.stat_result,
                    old: Node | None) -> Node | None:
        """A file no bigger than one chunk: one open, one read, one blob.

        The walk's stat describes it; if the file changed since, the next backup sees a
        newer ctime and reads it again, so nothing is ever missed.
        """
        fd = self._open(path)
        if fd is None:
            return None
        try:
            data = os.read(fd, st.st_size + 1)
            grew = len(data) > st.st_size
        except OSError as exc:
            self._error(path, exc)
            return None
        finally:
            os.close(fd)
        if grew:  # it grew since the walk: read it the general way
            return self._read_file(path, name, old, count=False)
        node = node_from_stat(name, st, FILE)
        node.size = len(data)
        if data:
            node.content = [self.repo.save_blob(BlobType.DATA, data)[0]]
        return node

    def _open(self, path: str) -> int | None:
        """Open a source file (never through a symlink); an error is listed, not raised."""
        try:
            return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            self._error(path, exc)
            return None

    def _tally(self, new: int, changed: int, nbytes: int, path: str) -> None:
        """Count files that were read (new or changed) and their bytes."""
        with self._lock:
            s = self.summary
            s.files_new += new
            s.files_changed += changed
            s.total_files += new + changed
            s.total_bytes += nbytes
            s.bytes_read += nbytes
        self.progress.add(nbytes, new + changed, path)

    def _read_file(self, path: str, name: str, old: Node | None,
                   count: bool = True) -> Node | None:
        """Any file, streamed through the chunker; ``count`` unless a batch counts it."""
        fd = self._open(path)
        if fd is None:
            return None
        try:
            with os.fdopen(fd, "rb", buffering=0) as f:
                st = os.fstat(f.fileno())
                node = node_from_stat(name, st, FILE)
                content: list[bytes] = []
                size = 0
                if st.st_size <= self.repo.config.chunker.min_size:
                    data = f.read()
                    chunks: Any = (data,) if data else ()
                else:
                    chunks = self._chunker().split_stream(f)
                for chunk in chunks:
                    blob_id, _ = self.repo.save_blob(BlobType.DATA, chunk)
                    content.append(blob_id)
                    size += len(chunk)
                    self.progress.add(len(chunk))
        except OSError as exc:
            self._error(path, exc)
            return None
        node.size = size
        node.content = content
        self.progress.add(-size)  # counted as a whole below, or by the batch
        if count:
            changed = _was_file(old)
            self._tally(int(not changed), int(changed), size, path)
        return node

    # ---- directories ------------------------------------------------------------------

    def _entry(self, path: str, name: str, st: os.stat_result,
               old: Node | None) -> _Result | None:
        kind = kind_of(st)
        if kind == FILE:
            return self._file(path, name, st, old)
        if kind == DIR:
            return self._dir(path, name, st, old)
        if kind == SYMLINK:
            node = node_from_stat(name, st, SYMLINK)
            try:
                node.target = os.readlink(path)
            except OSError as exc:
                self._error(path, exc)
                return None
            return _done(node)
        if kind in SPECIAL:  # metadata only: a pipe or device is never opened
            node = node_from_stat(name, st, kind)
            if kind in DEVICES:
                node.rdev = st.st_rdev
            return _done(node)
        return None

    def _dir(self, path: str, name: str, st: os.stat_result, old: Node | None) -> _Result:
        old_nodes = self._parent_tree(old)
        parent = {} if old_nodes is None else {n.name: n for n in old_nodes}
        children: list[_Result | Node] = []  # a Node: an unchanged file, done at once
        try:
            listing = list_dir(path)
        except OSError as exc:
            self._error(path, exc)
            listing = []
        prefix = path if path.endswith("/") else path + "/"
        excludes = self.excludes.match if self.excludes.patterns else None
        same = same_bytes = 0  # unchanged files, counted once for the directory
        for child_name, child_st in listing:
            child_path = prefix + child_name
            if excludes is not None and excludes(child_path, child_name):
                continue
            old_child = parent.get(child_name)
            if statmod.S_ISREG(child_st.st_mode):
                # the common case of a backup after the first, in line: most files
                # are unchanged, and a call and a result object per file added ~10 %;
                # a changed one goes to be read without being compared again
                node = (self._reuse(child_name, child_st, old_child)
                        if old_child is not None else None)
                if node is None:
                    children.append(self._read(child_path, child_name, child_st, old_child))
                    continue
                children.append(node)
                same += 1
                same_bytes += node.size
                continue
            fut = self._entry(child_path, child_name, child_st, old_child)
            if fut is not None:
                children.append(fut)
        if same:
            self._count_unchanged(same, same_bytes)
        reuse = (old.subtree, old_nodes) if old is not None and old_nodes is not None else None
        return self._queue_dir(node_from_stat(name, st, DIR), children, reuse)

    def _queue_dir(self, node: Node, children: list[_Result | Node] | list[_Result],
                   reuse: tuple[bytes | None, list[Node]] | None = None) -> _Result:
        """Finish ``node`` once its children are; ``reuse`` is the parent snapshot's tree."""
        fut = _Result()
        self._queue.append((fut, node, children, reuse))
        self._drain(block=False)
        return fut

    def _drain(self, block: bool) -> None:
        """Finish directories, in post-order, whose children are all done."""
        while self._queue:
            fut, node, children, reuse = self._queue[0]
            if not block and not all(type(c) is Node or c.done()  # type: ignore[union-attr]
                                     for c in children):
                return
            self._queue.popleft()
            nodes = [n for n in (c if type(c) is Node else c.result()  # type: ignore[union-attr]
                                 for c in children) if n is not None]
            if reuse is not None and reuse[0] is not None and reuse[1] == nodes:
                tree_id = reuse[0]  # unchanged directory: no need to encode and hash it again
            else:
                tree_id, _ = self.repo.save_tree(nodes)
            node.subtree = tree_id
            with self._lock:
                self.summary.dirs += 1
            fut.set(node)

    def _virtual(self, layout: dict[str, Any], fs_path: str,
                 parent: dict[str, Node] | None) -> list[_Result]:
        """Children of a directory that is only on the way to the paths being backed up."""
        out = []
        for name in sorted(layout):
            path = os.path.join(fs_path, name)
            old = parent.get(name) if parent else None
            try:
                st = os.lstat(path)
            except OSError as exc:
                self._error(path, exc)
                continue
            if layout[name] is _TARGET:
                fut = self._entry(path, name, st, old)
            else:
                if kind_of(st) != DIR:
                    self._error(path, "is not a directory (a symlink?); the paths below it "
                                "were not backed up")
                    continue
                kids = self._virtual(layout[name], path, self._parent_nodes(old))
                fut = self._queue_dir(node_from_stat(name, st, DIR), kids)
            if fut is not None:
                out.append(fut)
        return out

    # ---- run --------------------------------------------------------------------------

    def run(self, paths: list[str], *, parent: Snapshot | None = None, tags: list[str] | None = None,
            hostname: str | None = None, time_: Any = None) -> Snapshot:
        started = time.monotonic()
        abs_paths = sorted({os.path.abspath(p) for p in paths})
        missing = [p for p in abs_paths if not os.path.lexists(p)]
        for p in missing:
            self._error(p, "does not exist")
        present = [p for p in abs_paths if p not in missing]
        if not present:
            raise MultibackupError("none of the paths to back up exist: " + ", ".join(abs_paths))
        layout: dict[str, Any] = {}
        whole_root = "/" in present
        for p in present:
            if whole_root:
                break
            parts = p.strip("/").split("/")
            cur = layout
            for comp in parts[:-1]:
                nxt = cur.setdefault(comp, {})
                if nxt is _TARGET:
                    break
                cur = nxt
            else:
                cur[parts[-1]] = _TARGET
        parent_root = None
        if parent is not None:
            try:
                parent_root = {n.name: n for n in self.repo.load_tree(parent.tree)}
            except MultibackupError:
                parent_root = None
        with short_switch_interval(), \
                ThreadPoolExecutor(self.workers, thread_name_prefix="backup") as pool:
            self._pool = pool
            if whole_root:
                root_parent = Node("", DIR, subtree=parent.tree) if parent else None
                root_future = self._dir("/", "", os.lstat("/"), root_parent)
                self._submit_batch()
                self._drain(block=True)
                root_node = root_future.result()
                assert root_node is not None and root_node.subtree is not None
                root_id = root_node.subtree
            else:
                children = self._virtual(layout, "/", parent_root)
                self._submit_batch()
                self._drain(block=True)
                nodes = [n for n in (c.result() for c in children) if n is not None]
                root_id, _ = self.repo.save_tree(nodes)
        self.repo.flush()
        s = self.summary
        s.take_stats(self.repo, started)
        snap = Snapshot(time=time_ or Repository.now(), tree=root_id, paths=abs_paths,
                        hostname=hostname or socket.gethostname(), username=_user(),
                        tags=sorted(set(tags or [])), parent=parent.id if parent else None,
                        summary=s.to_json(max_errors=100), program_version=f"multibackup {__version__}")
        self.repo.save_snapshot(snap)
        return snap


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def find_parent(repo: Repository, paths: list[str], hostname: str) -> Snapshot | None:
    """The latest snapshot of the same host and the same set of paths."""
    abs_paths = sorted({os.path.abspath(p) for p in paths})
    best = None
    for snap in repo.snapshots():
        if snap.hostname == hostname and sorted(snap.paths) == abs_paths:
            best = snap
    return best
