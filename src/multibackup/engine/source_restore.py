"""Restore to a target that is not a local directory: a remote host, a bucket, a database.

Files are streamed blob by blob in file order, with a few blobs read ahead (so a remote
repository's latency overlaps the target's writes) and never more than that in memory.
Every blob is verified as it is read, and a damaged one is re-read from another copy of a
mirrored repository by the repository layer itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from multibackup.engine.progress import Progress
from multibackup.engine.restore import RestoreSummary, _included
from multibackup.errors import SourceError, UsageError
from multibackup.repository.repository import Repository
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import DIR, FILE, SYMLINK, Node, is_safe_name
from multibackup.sources.base import RestoreTarget, join

READ_AHEAD = 4  # blobs in flight per file: at most ~4 x 8 MiB held


def iter_content(repo: Repository, node: Node, pool: ThreadPoolExecutor,
                 progress: Progress | None = None) -> Iterator[bytes]:
    """A file's bytes, blob by blob, in order, with ``READ_AHEAD`` blobs read ahead."""
    pending: deque[Future[bytes]] = deque()
    ids = iter(node.content)
    for blob_id in ids:
        pending.append(pool.submit(repo.load_blob, blob_id))
        if len(pending) >= READ_AHEAD:
            break
    try:
        while pending:
            data = pending.popleft().result()
            nxt = next(ids, None)
            if nxt is not None:
                pending.append(pool.submit(repo.load_blob, nxt))
            if progress is not None:
                progress.add(len(data))
            yield data
    finally:
        for fut in pending:
            fut.cancel()


def find_node(repo: Repository, snap: Snapshot, path: str) -> Node:
    """The node at a '/'-separated path inside a snapshot (``""`` is the root)."""
    node = Node("", DIR, subtree=snap.tree)
    for part in (p for p in path.strip("/").split("/") if p):
        if node.type != DIR or node.subtree is None:
            raise UsageError(f"{path!r} is not in snapshot {snap.short_id}")
        match = [n for n in repo.load_tree(node.subtree) if n.name == part]
        if not match:
            raise UsageError(f"{path!r} is not in snapshot {snap.short_id}")
        node = match[0]
    return node


class TargetRestorer:
    """Restores a snapshot (or the parts ``includes`` names) into a ``RestoreTarget``."""

    def __init__(self, repo: Repository, snapshot: Snapshot, target: RestoreTarget, *,
                 includes: list[str] | None = None, progress: Progress | None = None) -> None:
        self.repo = repo
        self.snapshot = snapshot
        self.target = target
        self.includes = [("/" + i.strip("/")) if i.strip("/") else "/" for i in includes or []]
        self.progress = progress or Progress()
        self.summary = RestoreSummary()
        self._order: dict[str, int] | None = None

    def _selected_files(self, tree_id: bytes, rel: str) -> list[str]:
        """Every file path the include filters select."""
        out: list[str] = []
        for node in self.repo.load_tree(tree_id):
            path = join(rel, node.name)
            take, descend = _included("/" + path, self.includes)
            if not is_safe_name(node.name) or not (take or descend):
                continue
            if node.type == DIR and node.subtree is not None:
                out += self._selected_files(node.subtree, path)
            elif node.type == FILE and take:
                out.append(path)
        return out

    def _walk(self, tree_id: bytes, rel: str, pool: ThreadPoolExecutor) -> None:
        nodes = self.repo.load_tree(tree_id)
        if self._order is not None:  # only the files the target planned, in its order
            order = self._order
            nodes = sorted((n for n in nodes if n.type == DIR or join(rel, n.name) in order),
                           key=lambda n: order.get(join(rel, n.name), -1))
        for node in nodes:
            if not is_safe_name(node.name):
                self.summary.errors.append(f"{join(rel, node.name)!r}: unsafe name, skipped")
                continue
            path = join(rel, node.name)
            take, descend = _included("/" + path, self.includes)
            if not (take or descend):
                continue
            try:
                if node.type == DIR and node.subtree is not None:
                    if take:
                        self.target.makedirs(path)
                        self.summary.dirs += 1
                    self._walk(node.subtree, path, pool)
                elif node.type == FILE and take:
                    self.target.write(path, iter_content(self.repo, node, pool, self.progress),
                                      size=node.size, mode=node.mode, mtime_ns=node.mtime)
                    self.summary.files += 1
                    self.summary.bytes += node.size
                    self.progress.add(0, 1, path)
                elif node.type == SYMLINK and take:
                    self.target.symlink(path, node.target)
                    self.summary.symlinks += 1
            except SourceError as exc:
                self.summary.errors.append(f"{path}: {exc}")
            except OSError as exc:
                self.summary.errors.append(f"{path}: {exc.strerror or exc}")

    def run(self) -> RestoreSummary:
        self.progress.total_bytes = int(self.snapshot.summary.get("total_bytes", 0) or 0)
        plan = getattr(self.target, "plan", None)
        if plan is not None:
            # A target that loads a server (a database) sees the whole selection first: it
            # refuses a bad one before writing anything and says which files, in which order.
            self._order = {p: i for i, p in enumerate(plan(self._selected_files(
                self.snapshot.tree, "")))}
        with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="restore") as pool:
            self._walk(self.snapshot.tree, "", pool)
        return self.summary
