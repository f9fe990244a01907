"""Restore: recreate a snapshot's files under a target directory, pack by pack.

Each pack that holds needed blobs is read once in as few ranged reads as possible, and
every blob is written at its offsets in every file that uses it (a file is created by its
first write; in an empty target, so is its directory). Metadata (mode, owner, mtime) is
applied last, directories deepest first, so writing a child does not disturb a
directory's restored mtime.

Every name is checked before it touches the disk: a tree entry such as ``..`` or one with a
``/`` in it is refused, and no directory on the way is ever a symlink, so nothing can be
written outside the target.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat as statmod
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from multibackup.backends.base import get_verified, read_view
from multibackup.engine.collector import collector_paused
from multibackup.engine.progress import Progress
from multibackup.engine.switching import short_switch_interval
from multibackup.errors import IntegrityError, MultibackupError, StoreError
from multibackup.repository.blob import ScratchBuffers, open_blob
from multibackup.repository.repository import Repository, pack_key
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import (
    CHARDEV,
    DIR,
    FIFO,
    FILE,
    SOCKET,
    SPECIAL,
    SYMLINK,
    Node,
    is_safe_name,
)

_MERGE_GAP = 1024 * 1024  # read over gaps up to this size rather than split a read
_MAX_READ = 4 * 1024 * 1024  # but keep each read (held in memory per worker) this small


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0  # named pipes and device nodes
    bytes: int = 0
    fallback_reads: int = 0  # blobs re-read (from another copy) after a damaged/failed read
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _File:
    path: str
    node: Node
    failed: bool = False
    remaining: int = 0  # blob writes still to come; the last writer sets the metadata


def _included(path: str, includes: list[str]) -> tuple[bool, bool]:
    """(restore this node, descend into it) for the include filters."""
    if not includes:
        return True, True
    descend = False
    for inc in includes:
        if any(ch in inc for ch in "*?["):
            if fnmatch.fnmatchcase(path, inc) or fnmatch.fnmatchcase(path, inc.rstrip("/") + "/*"):
                return True, True
            descend = True
        elif path == inc or path.startswith(inc.rstrip("/") + "/"):
            return True, True
        elif inc.startswith(path + "/"):
            descend = True
    return False, descend


_HOLE = 64 * 1024  # a sparse restore leaves out zeros that fill such a block of the file
_ZERO_BLOCK = bytes(_HOLE)
_ZERO_PAGE = bytes(4096)


def _data_runs(data: bytes, offset: int) -> list[tuple[int, int]]:
    """(start, end) in a blob of what a sparse restore writes when the blob lands at
    ``offset`` of its file: all but the blocks of the file the blob fills with zeros.

    Blobs are cut by content, so a run of zeros usually shares a blob with data at
    either end: skipping only blobs made of zeros left most of a disk image's holes
    filled. Unwritten parts of a new file read as zeros.
    """
    n = len(data)
    if n >= len(_ZERO_PAGE) and _ZERO_PAGE not in data:  # C speed: most data has no 4 KiB of zeros
        return [(0, n)]
    runs: list[tuple[int, int]] = []
    i = 0
    while i < n:
        j = min(n, (offset + i) // _HOLE * _HOLE + _HOLE - offset)  # the block's end
        piece = data[i:j]
        if piece != (_ZERO_BLOCK if j - i == _HOLE else bytes(j - i)):
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], j)
            else:
                runs.append((i, j))
        i = j
    return runs


def _write_sparse(fd: int, data: bytes, offset: int) -> None:
    """Write a blob at ``offset`` of a new file, leaving its zero-filled blocks as holes."""
    view = memoryview(data)
    for lo, hi in _data_runs(data, offset):
        os.pwrite(fd, view[lo:hi], offset + lo)


def _umask() -> int | None:
    """This process's umask, read from /proc (Linux): os.umask can only read it by
    setting it, for a moment, for every thread of the process. None when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


class Restorer:
    def __init__(self, repo: Repository, snapshot: Snapshot, target: str, *,
                 includes: list[str] | None = None, overwrite: bool = False,
                 workers: int | None = None, progress: Progress | None = None,
                 sparse: bool = False) -> None:
        self.repo = repo
        self.snapshot = snapshot
        self.target = os.path.abspath(target)
        self.includes = [("/" + i.strip("/")) if i.strip("/") else "/" for i in includes or []]
        self.overwrite = overwrite
        self.sparse = sparse  # leave runs of zeros as holes (see _restore_pack)
        # each worker holds one read of at most 4 MiB: as many as the store pays for
        self.workers = workers or max(2, repo.store.concurrency)
        self.progress = progress or Progress()
        self.summary = RestoreSummary()
        self._lock = threading.Lock()
        # files being restored, by number: a file leaves when its last blob is written
        # (failed ones stay, to be removed at the end), so memory follows the files in
        # flight, not the snapshot's size
        self._files: dict[int, _File] = {}
        self.files_planned = 0  # numbers handed out to files so far
        self._dirs: list[tuple[str, Node]] = []
        self._links: list[tuple[str, Node]] = []
        self._specials: list[tuple[str, Node]] = []
        self._hard: list[tuple[str, str, Node]] = []
        self._is_root = os.geteuid() == 0
        self._owner = (os.geteuid(), os.getegid())  # who owns what this process creates
        self._umask = _umask()
        self._fresh = False  # target was empty and not setgid: see run()
        self._scratch = ScratchBuffers()  # per worker, to decrypt blobs into
        self._reads = ScratchBuffers()  # per worker, to read pack ranges into

    def _error(self, msg: str) -> None:
        with self._lock:
            self.summary.errors.append(msg)

    # ---- plan -------------------------------------------------------------------------

    def _mkdir(self, path: str) -> bool:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
            return True
        if statmod.S_ISDIR(st.st_mode):
            return True
        if not self.overwrite:
            self._error(f"{path}: exists and is not a directory")
            return False
        os.unlink(path)  # a symlink or file in the way is never followed
        os.mkdir(path, 0o700)
        return True

    def _walk(self, tree_id: bytes, rel: str, dest: str,
              seen: dict[tuple[int, int], str]) -> Iterator[_File]:
        """The snapshot's files in tree order; directories, symlinks and hard links are
        collected on the way for the end of the run."""
        try:
            nodes = self.repo.load_tree(tree_id, keep=False)  # each is walked once
        except MultibackupError as exc:
            self._error(f"{rel or '/'}: cannot read directory listing: {exc}")
            return
        names: set[str] = set()
        for node in nodes:
            if not is_safe_name(node.name) or node.name in names:
                self._error(f"{rel}/{node.name!r}: refusing unsafe or duplicate name "
                            "(it would escape the target)")
                continue
            names.add(node.name)
            path = f"{rel}/{node.name}"
            take, descend = _included(path, self.includes)
            if not take and not descend:
                continue
            out = f"{dest}/{node.name}"  # a safe name: no separator in it
            if node.type == DIR:
                # a fresh target gets its directories from the workers, as their first
                # file needs them (see _open): creating 1,500 of them here, before any
                # data moves, took a second on its own
                if not self._fresh and not self._mkdir(out):
                    continue
                if node.subtree is not None:
                    yield from self._walk(node.subtree, path, out, seen)
                if take:
                    self._dirs.append((out, node))
            elif not take:
                continue
            elif node.type == FILE:
                key = (node.device, node.inode)
                if node.links > 1 and node.inode and key in seen:
                    self._hard.append((out, seen[key], node))
                    continue
                if node.links > 1 and node.inode:
                    seen[key] = out
                yield _File(out, node)
            elif node.type == SYMLINK:
                self._links.append((out, node))
            elif node.type in SPECIAL and node.type != SOCKET:
                # a socket is made by the program that listens on it: nothing to restore
                self._specials.append((out, node))

    def _prepare(self, f: _File) -> bool:
        """Clear the way for a file; empty ones are created now, others on first write.

        False (with the error noted) when the file cannot be restored: the others go on,
        as restoring has already begun."""
        path = f.path
        try:
            if not self._fresh and os.path.lexists(path):  # a fresh target holds nothing yet
                if not self.overwrite:
                    self._error(f"{path}: exists (use --overwrite)")
                    return False
                if os.path.isdir(path) and not os.path.islink(path):
                    self._error(f"{path}: exists and is a directory")
                    return False
                os.unlink(path)
            if not f.node.content:
                os.close(self._open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
        except OSError as exc:
            self._error(f"{path}: {exc.strerror or exc}")
            return False
        return True

    def _open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """Open (creating) a file; in a fresh target, its directory is made on first need."""
        try:
            return os.open(path, flags, mode)
        except FileNotFoundError:
            if not self._fresh:
                raise
            self._parent(path)
            return os.open(path, flags, mode)

    def _birth_mode(self, node: Node) -> int | None:
        """The mode to create a file with, when creating gives exactly its own: then no
        chmod follows (one system call, and one hand-over of the GIL, less per file).

        Only for modes the umask leaves alone, without setuid, setgid or sticky bits
        (root's chown would clear the first two), and writable by the owner, since a file
        of several blobs is opened again for each. None for the others: they are made
        0600 and get their mode with the rest of their metadata. (In a fresh target, the
        directories stay 0700 until the end, so no one else sees a partial file.)
        """
        mode = node.mode
        if self._umask is None or mode & (0o7000 | self._umask) or not mode & 0o200:
            return None
        return mode

    def _parent(self, path: str) -> None:
        """Make the directories above ``path`` in a fresh target (only names checked by
        _plan, below a target that held nothing: no symlink can be on the way)."""
        if self._fresh:
            os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)

    # ---- data -------------------------------------------------------------------------

    def _restore_pack(self, pack_id: bytes, blobs: list[tuple[int, int, int, bytes, list[tuple[int, int]]]]) -> None:
        blobs.sort(key=lambda b: b[0])
        groups: list[list[Any]] = []
        for b in blobs:
            if (groups and b[0] - (groups[-1][-1][0] + groups[-1][-1][1]) <= _MERGE_GAP
                    and b[0] + b[1] - groups[-1][0][0] <= _MAX_READ):
                groups[-1].append(b)
            else:
                groups.append([b])
        for group in groups:
            start = group[0][0]
            end = group[-1][0] + group[-1][1]
            key = pack_key(pack_id)
            try:
                data: memoryview | None = read_view(self.repo.store, key, start, end - start,
                                                    self._reads.get)
            except StoreError:
                data = None  # each blob is asked for again below, from any copy
            # a raw blob comes back as a view of the scratch buffer: written out below
            # before the next blob is opened into it
            scratch = self._scratch.get(max(b[1] for b in group))
            for offset, length, raw_length, blob_id, targets in group:
                try:
                    if data is None:
                        raise IntegrityError("unreadable")
                    plain = open_blob(self.repo.cipher, blob_id,
                                      data[offset - start:offset - start + length], raw_length,
                                      scratch=scratch)
                except IntegrityError:
                    # Damaged or unreadable here: a verified read of just this blob lets a
                    # mirrored repository take it from another copy.
                    try:
                        plain = self._blob_from_any_copy(key, blob_id, offset, length,
                                                         raw_length)
                    except (IntegrityError, StoreError) as exc:
                        self._fail(targets, f"pack {pack_id.hex()[:8]}: {exc}")
                        continue
                if self.sparse:  # zeros are not written; the last write sets the length
                    plain = bytes(plain)  # (a view of the scratch buffer otherwise)
                for file_no, file_offset in targets:
                    f = self._files.get(file_no)
                    if f is None or f.failed:
                        continue
                    try:
                        born = self._birth_mode(f.node)
                        fd = self._open(f.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW,
                                        0o600 if born is None else born)
                        try:
                            if not self.sparse:
                                os.pwrite(fd, plain, file_offset)
                            else:
                                _write_sparse(fd, plain, file_offset)  # type: ignore[arg-type]
                            with self._lock:
                                f.remaining -= 1
                                last = f.remaining == 0 and not f.failed
                            if last:  # every byte is in: set metadata through the open fd
                                if self.sparse:
                                    os.ftruncate(fd, f.node.size)
                                self._meta(f.path, f.node, fd=fd, chmod=born is None)
                                self._finished(file_no, f)
                        finally:
                            os.close(fd)
                    except OSError as exc:
                        self._fail([(file_no, 0)], exc.strerror or str(exc))
                        continue
                    self.progress.add(len(plain))

    def _blob_from_any_copy(self, key: str, blob_id: bytes, offset: int, length: int,
                            raw_length: int) -> bytes:
        plain = get_verified(self.repo.store, key,
                             lambda b: open_blob(self.repo.cipher, blob_id, b, raw_length),
                             offset, length)
        with self._lock:
            self.summary.fallback_reads += 1
        return plain

    def _finished(self, file_no: int, f: _File) -> None:
        """Count a file whose every byte and metadata are in, and let it go."""
        with self._lock:
            self._files.pop(file_no, None)
            self.summary.files += 1
            self.summary.bytes += f.node.size

    def _fail(self, targets: list[tuple[int, int]], reason: str) -> None:
        for file_no, _ in targets:
            f = self._files.get(file_no)
            if f is None:  # finished: every blob of it was written
                continue
            with self._lock:
                if f.failed:
                    continue
                f.failed = True
            self._error(f"{f.path}: {reason}")

    # ---- metadata ---------------------------------------------------------------------

    def _meta(self, path: str, node: Node, follow: bool = True, fd: int | None = None,
              chmod: bool = True) -> None:
        """Owner (as root), mode (unless the file was created with it) and mtime; through
        ``fd`` when the file is open."""
        target: str | int = path if fd is None else fd
        try:
            if self._is_root and not (self._fresh and (node.uid, node.gid) == self._owner):
                os.chown(target, node.uid, node.gid, follow_symlinks=follow)
            if follow and chmod:
                os.chmod(target, node.mode)
            os.utime(target, ns=(node.mtime, node.mtime), follow_symlinks=follow)
        except OSError as exc:
            self._error(f"{path}: cannot set metadata: {exc.strerror or exc}")

    # ---- plan and dispatch ------------------------------------------------------------

    def _dispatch(self, pool: ThreadPoolExecutor) -> list[Future[None]]:
        """Walk the snapshot and hand each pack to the workers once the walk has asked
        for all of it, or has gone well past it.

        Restoring starts while the walk goes on (the walk loads every directory listing
        and looks up every blob: a second on 38,000 files), and a planned file is held
        only until its last blob is written. The index says how many blobs each pack
        holds, and a pack goes out as soon as the walk has asked for every one. A pack
        of which this restore needs only some blobs (the rest belong to older versions
        of files, or lie outside ``--include``) goes out once the walk has planned
        ``window`` more blob writes (first 4,096) without needing it. Counting writes
        rather than bytes makes waiting as long as it is cheap: two large files that a
        backup read side by side share their packs, and the first file's packs wait for
        the second, however large, instead of being read twice.

        A file further on that needs a blob of a pack already sent (the same content
        elsewhere in the tree) gets it from a later, smaller read of that pack. A file
        that causes such returns doubles the window, so a snapshot whose packs do not
        follow the walk (content moved since it was first saved, packs rewritten by
        prune) costs a few extra reads before packs wait for the walk's end.

        The walk also waits while ``4 x workers`` packs are queued or being restored:
        it plans far faster than packs are written (38,000 files planned at once held
        about 40 MB).
        """
        window = 4096
        left = self.repo.index.blobs_per_pack()  # per pack: blobs not asked for yet
        sent: set[bytes] = set()
        pending: dict[bytes, dict[bytes, list[Any]]] = {}
        last_use: OrderedDict[bytes, int] = OrderedDict()  # pack -> writes planned then
        planned = 0  # blob writes planned so far
        futures: list[Future[None]] = []
        queued = threading.BoundedSemaphore(4 * self.workers)

        def send(pack_id: bytes) -> None:
            del last_use[pack_id]
            blobs = pending.pop(pack_id)
            sent.add(pack_id)
            queued.acquire()  # released when a worker is done with the pack
            future = pool.submit(self._restore_pack, pack_id,
                                 [tuple(v) for v in blobs.values()])
            future.add_done_callback(lambda _: queued.release())
            futures.append(future)

        lookup = self.repo.index.lookup
        for f in self._walk(self.snapshot.tree, "", self.target, {}):
            if not self._prepare(f):
                continue
            self.progress.total_items += 1
            self.progress.total_bytes += f.node.size
            file_no = self.files_planned
            self.files_planned += 1
            if not f.node.content:  # created empty by _prepare: done but for metadata
                self._meta(f.path, f.node)
                self._finished(file_no, f)
                continue
            f.remaining = len(f.node.content)  # before any worker can see the file
            self._files[file_no] = f
            offset = 0
            returned = False
            complete: list[bytes] = []
            for blob_id in f.node.content:
                loc = lookup(blob_id)
                if loc is None:
                    self._fail([(file_no, 0)], f"blob {blob_id.hex()[:16]} is missing")
                    break
                pack_id = loc.pack_id
                blobs = pending.get(pack_id)
                if blobs is None:
                    returned = returned or pack_id in sent
                    blobs = pending[pack_id] = {}
                entry = blobs.get(blob_id)
                if entry is None:
                    entry = blobs[blob_id] = [loc.offset, loc.length, loc.raw_length,
                                              blob_id, []]
                    if pack_id not in sent:
                        left[pack_id] -= 1
                        if not left[pack_id]:
                            complete.append(pack_id)
                entry[4].append((file_no, offset))
                offset += loc.raw_length
                planned += 1
                last_use[pack_id] = planned
                last_use.move_to_end(pack_id)
            if returned:
                window *= 2  # the packs do not follow the walk here
            for pack_id in complete:
                send(pack_id)
            while last_use:
                pack_id, at = next(iter(last_use.items()))
                if planned - at < window:
                    break
                send(pack_id)
        if self.includes and not (self.files_planned or self._dirs or self._links
                                  or self._hard or self._specials):
            raise MultibackupError("nothing in the snapshot matches --include "
                                   + " ".join(self.includes))
        for pack_id in list(last_use):
            send(pack_id)
        return futures

    # ---- run --------------------------------------------------------------------------

    def run(self) -> RestoreSummary:
        target = self.target
        if os.path.lexists(target) and not os.path.isdir(target):
            raise MultibackupError(f"restore target {target} exists and is not a directory")
        made = not os.path.lexists(target)
        os.makedirs(target, exist_ok=True)
        if os.listdir(target):
            if not self.overwrite:
                raise MultibackupError(f"restore target {target} is not empty (use --overwrite)")
        else:
            # Everything below is created by this run: no path can exist before its turn,
            # and new entries belong to this process (no setgid directory hands down a
            # group), so the existence checks and same-owner chowns can be skipped.
            self._fresh = not os.stat(target).st_mode & statmod.S_ISGID
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="restore")
        try:
            with collector_paused(), short_switch_interval():
                for fut in self._dispatch(pool):
                    fut.result()
        except BaseException as exc:
            pool.shutdown(wait=True, cancel_futures=True)
            if made and isinstance(exc, MultibackupError):
                with contextlib.suppress(OSError):
                    os.rmdir(target)  # made by this run, and nothing matched: not left behind
            raise
        pool.shutdown()
        s = self.summary
        for f in self._files.values():  # the failed files: restored ones have left
            if not f.failed:  # not expected: every blob of a file is sent to the workers
                self._error(f"{f.path}: not every part of it was written")
            try:
                os.unlink(f.path)  # never leave a file with wrong content behind
            except OSError:
                pass
        for path, first, _node in self._hard:
            try:
                if os.path.lexists(path) and self.overwrite:
                    os.unlink(path)
                self._parent(path)
                os.link(first, path)
                s.hardlinks += 1
            except OSError as exc:
                self._error(f"{path}: cannot create hard link: {exc.strerror or exc}")
        for path, node in self._links:
            try:
                if os.path.lexists(path) and self.overwrite:
                    os.unlink(path)
                self._parent(path)
                os.symlink(node.target, path)
                self._meta(path, node, follow=False)
                s.symlinks += 1
            except OSError as exc:
                self._error(f"{path}: cannot create symlink: {exc.strerror or exc}")
        for path, node in self._specials:
            what = "named pipe" if node.type == FIFO else "device node"
            try:
                if os.path.lexists(path) and self.overwrite:
                    os.unlink(path)  # never a directory: the plan made none at this name
                self._parent(path)
                if node.type == FIFO:
                    os.mkfifo(path, 0o600)
                else:  # needs root (CAP_MKNOD), as for restic and tar
                    kind = statmod.S_IFCHR if node.type == CHARDEV else statmod.S_IFBLK
                    os.mknod(path, 0o600 | kind, node.rdev)
                self._meta(path, node)  # just made here, by this process: not a symlink
                s.specials += 1
            except OSError as exc:
                self._error(f"{path}: cannot create {what}: {exc.strerror or exc}")
        if self._fresh:  # directories no file needed (empty ones), before any metadata
            for path, _node in self._dirs:
                try:
                    os.makedirs(path, 0o700, exist_ok=True)
                except OSError as exc:
                    self._error(f"{path}: cannot create directory: {exc.strerror or exc}")
        for path, node in reversed(self._dirs):
            self._meta(path, node)
            s.dirs += 1
        return s
