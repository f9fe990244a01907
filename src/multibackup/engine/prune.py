"""Prune: delete data no snapshot references, repacking packs that are mostly garbage.

Runs under an exclusive lock, so no backup can be adding references meanwhile. Order of
writes keeps every step safe to interrupt: new packs, then an index that supersedes all old
index files, then deletion of the old index files, and only then deletion of packs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multibackup.engine.progress import Progress
from multibackup.errors import IntegrityError, MultibackupError
from multibackup.repository.blob import open_blob
from multibackup.repository.index import Index
from multibackup.repository.pack import PackEntry
from multibackup.repository.repository import INDEX, Repository, pack_key, read_whole


@dataclass
class PruneReport:
    packs_total: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    unindexed_deleted: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    bytes_repacked: int = 0
    dry_run: bool = False
    temporary_removed: int = 0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def used_blobs(repo: Repository) -> set[bytes]:
    """Every tree and data blob some snapshot references; fails if any tree is unreadable."""
    used: set[bytes] = set()
    for snap in repo.snapshots(strict=True):
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            if tree_id in used:
                continue
            used.add(tree_id)
            try:
                nodes = repo.load_tree(tree_id)
            except MultibackupError as exc:
                raise MultibackupError(f"snapshot {snap.short_id} cannot be read ({exc}); "
                                       "prune refuses to run on a damaged repository, run "
                                       "'multibackup check'") from None
            for n in nodes:
                if n.subtree is not None:
                    stack.append(n.subtree)
                used.update(n.content)
    return used


def prune(repo: Repository, *, max_unused: float = 0.1, dry_run: bool = False,
          progress: Progress | None = None) -> PruneReport:
    progress = progress or Progress()
    report = PruneReport(dry_run=dry_run)
    old_index = repo.index_files()
    packs: dict[bytes, list[PackEntry]] = {}
    superseded: set[str] = set()
    readable: list[str] = []
    contents: dict[str, dict[bytes, list[PackEntry]]] = {}
    for index_id in old_index:
        try:
            content, sup = repo.read_index_file(index_id)
        except IntegrityError as exc:
            raise MultibackupError(f"index file {index_id[:8]} is damaged ({exc}); run "
                                   "'multibackup repair index' before pruning") from None
        readable.append(index_id)
        superseded.update(s.hex() for s in sup)
        contents[index_id] = content
    for index_id, content in contents.items():
        if index_id in superseded:  # left by an interrupted prune: its successor is live
            continue
        for pack_id, entries in content.items():
            packs.setdefault(pack_id, entries)
    present = repo.list_packs()
    for name in present:
        pid = bytes.fromhex(name)
        if pid not in packs:
            packs[pid] = []
    repo.index = Index()
    for pid, entries in packs.items():
        repo.index.add_pack(pid, entries)
    repo.index.compact()
    used = used_blobs(repo)
    report.packs_total = len(present)

    keep: dict[bytes, list[PackEntry]] = {}
    delete: list[bytes] = []
    repack: list[tuple[bytes, list[PackEntry]]] = []
    seen: set[bytes] = set()
    for pid, entries in packs.items():
        if not entries:  # an unindexed pack left by an interrupted run
            report.unindexed_deleted += 1
            report.bytes_freed += present.get(pid.hex(), 0)
            delete.append(pid)
            continue
        live = [e for e in entries if e.id in used and e.id not in seen]
        size = present.get(pid.hex(), 0)
        dead_bytes = sum(e.length for e in entries) - sum(e.length for e in live)
        if not live:
            delete.append(pid)
            report.packs_deleted += 1
            report.blobs_removed += len(entries)
            report.bytes_freed += size
        elif dead_bytes > max_unused * size:
            repack.append((pid, live))
            seen.update(e.id for e in live)
            report.packs_repacked += 1
            report.blobs_removed += len(entries) - len(live)
            report.bytes_freed += dead_bytes
            report.bytes_repacked += sum(e.length for e in live)
        else:
            keep[pid] = entries
            seen.update(e.id for e in live)
    if dry_run:
        return report

    # Under the exclusive lock no one writes data; an hour's margin spares lock files.
    report.temporary_removed = repo.store.sweep_temporary(older_than=3600)
    repo.index = Index()
    for pid, entries in keep.items():
        repo.index.add_pack(pid, entries)
    repo.index.compact()
    progress.total_items = len(repack)
    for pid, live in repack:
        data = memoryview(read_whole(repo.store, pack_key(pid)))
        for e in live:
            plain = open_blob(repo.cipher, e.id, data[e.offset:e.offset + e.length], e.raw_length)
            repo.save_blob(e.type, plain, e.id)
        progress.add(len(data), 1)
    repo.flush()  # new packs and their index file
    repo.save_index_file(keep, supersedes=readable)
    for index_id in readable:
        repo.store.delete(INDEX + index_id)
    for pid in delete + [p for p, _ in repack]:
        repo.store.delete(pack_key(pid))
    return report
