"""Check: is every snapshot restorable, and (with read_data) is every stored byte intact?

Without read_data the check compares the index with the packs that exist and their sizes,
and walks every snapshot's trees. With read_data each pack is downloaded, its hash compared
with its name, and every blob decrypted and its id verified. Damaged blobs are traced back
to the snapshots and files that use them, so the user knows exactly what is at risk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import blake3

from multibackup.backends.base import get_verified, read_view
from multibackup.engine.collector import collector_paused
from multibackup.engine.progress import Progress
from multibackup.errors import IntegrityError, MultibackupError, ObjectNotFound, StoreError
from multibackup.repository.blob import ScratchBuffers, open_blob
from multibackup.repository.pack import PackEntry, header_size
from multibackup.repository.repository import INDEX, SNAPSHOTS, Repository, pack_key
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import decode_tree

_PIECE = 4 * 1024 * 1024


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    snapshots: int = 0
    packs: int = 0
    blobs: int = 0
    packs_read: int = 0
    affected: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> paths

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "warnings": self.warnings,
                "snapshots": self.snapshots, "packs": self.packs, "blobs": self.blobs,
                "packs_read": self.packs_read, "affected": self.affected}


def expected_pack_size(entries: list[PackEntry]) -> int:
    end = max((e.offset + e.length for e in entries), default=0)
    return end + header_size(len(entries))


class Checker:
    def __init__(self, repo: Repository, read_data: bool = False, workers: int | None = None,
                 progress: Progress | None = None, salvage: Iterable[str] = (),
                 pack_sizes: Mapping[str, set[int]] | None = None,
                 rebuilt: Mapping[str, bytes] | None = None) -> None:
        self.repo = repo
        self.read_data = read_data
        #: packs a mirror holds damaged on every copy: each blob is read from whichever
        #: copy has it intact, and only blobs intact nowhere count as damaged
        self.salvage = set(salvage)
        #: a mirror's pack sizes, every copy's: a pack is the right size when one copy's is
        #: (the mirror's own listing gives one copy's size, which may be a truncated one)
        self.pack_sizes = pack_sizes or {}
        #: a mirror's index files and snapshots damaged on every copy, as their intact
        #: parts rebuild them (key -> verified bytes): read as repair will write them
        self.rebuilt = rebuilt or {}
        self.workers = workers or max(2, repo.store.concurrency)  # one 4 MiB piece each
        self.progress = progress or Progress()
        self.report = CheckReport()
        self._packs: dict[bytes, list[PackEntry]] = {}
        self._damaged: set[bytes] = set()
        #: tree id -> (names of its damaged files, its subdirectories as (name, tree id)),
        #: or None when the tree itself is missing or unreadable
        self._trees: dict[bytes, tuple[list[str], list[tuple[str, bytes]]] | None] = {}
        self._order: list[bytes] = []  # surveyed trees, parents before children
        self._dirty: set[bytes] = set()  # trees with damage at or below them
        self._sizes: dict[str, int] = {}
        self._scratch = ScratchBuffers()  # per worker, to decrypt blobs into
        self._reads = ScratchBuffers()  # per worker, to read pack pieces into
        self._unindexed = 0  # packs present that no index file names

    def _load_index(self) -> None:
        r = self.report
        superseded: set[str] = set()
        files = {}
        for index_id in self.repo.index_files():
            try:
                files[index_id], sup = self.repo.read_index_file(
                    index_id, self.rebuilt.get(INDEX + index_id))
            except (IntegrityError, ObjectNotFound) as exc:
                r.errors.append(f"index file {index_id[:8]}: {exc}; "
                                "run 'multibackup repair index' to rebuild it from the packs")
                continue
            superseded.update(s.hex() for s in sup)
        for index_id, packs in files.items():
            if index_id in superseded:
                continue
            for pack_id, entries in packs.items():
                self._packs.setdefault(pack_id, entries)
                self.repo.index.add_pack(pack_id, entries)
        self.repo.index.compact()

    def _check_packs(self) -> None:
        r = self.report
        present = self.repo.list_packs()
        self._sizes = present
        r.packs = len(present)
        for pack_id, entries in self._packs.items():
            name = pack_id.hex()
            size = present.get(name)
            if size is None:
                r.errors.append(f"pack {name[:8]} is missing ({len(entries)} blobs lost)")
                self._damaged.update(e.id for e in entries)
            elif size != expected_pack_size(entries) \
                    and expected_pack_size(entries) not in self.pack_sizes.get(name, ()):
                r.errors.append(f"pack {name[:8]} has size {size}, expected "
                                f"{expected_pack_size(entries)} (truncated or damaged)")
                self._damaged.update(e.id for e in entries)
        for name in present:
            if bytes.fromhex(name) not in self._packs:
                self._unindexed += 1
                r.warnings.append(f"pack {name[:8]} is not in any index (left by an "
                                  "interrupted run; the next backup or prune takes care of it)")
        r.blobs = len(self.repo.index)

    def _salvage(self) -> None:
        r = self.report
        for name in sorted(self.salvage):
            entries = self._packs.get(bytes.fromhex(name))
            if entries is None:
                continue  # in no index: no snapshot needs it
            key = pack_key(name)
            lost = 0
            for e in entries:
                if e.id in self._damaged:
                    lost += 1
                    continue
                try:
                    get_verified(self.repo.store, key,
                                 lambda b, e=e: open_blob(self.repo.cipher, e.id, b,
                                                          e.raw_length),
                                 e.offset, e.length)
                except (IntegrityError, StoreError):
                    self._damaged.add(e.id)
                    lost += 1
            if lost:
                r.errors.append(f"pack {name[:8]}: {lost} of {len(entries)} blobs are intact "
                                "on no destination")
            else:
                r.warnings.append(f"pack {name[:8]} is damaged on every destination, but "
                                  "each of its blobs is intact on one of them: the "
                                  "snapshots that use it still restore whole")

    def _read_pack(self, pack_id: bytes, entries: list[PackEntry]) -> list[str]:
        """Verify one pack, reading it in pieces of at most 4 MiB (or one blob).

        Reading whole packs would hold a pack per worker in memory; pieces keep check's
        memory near a backup's while still hashing every byte against the pack's name.
        """
        name = pack_id.hex()
        what = f"pack {name[:8]}"
        key = pack_key(name)
        size = self._sizes.get(name, expected_pack_size(entries))
        errors: list[str] = []
        try:
            stored = self.repo.read_pack_header(name, size)
        except IntegrityError as exc:
            errors.append(str(exc))
            stored = sorted(entries, key=lambda e: e.offset)  # the index's view of the pack
        except StoreError as exc:
            self._damaged.update(e.id for e in entries)
            return [f"{what}: {exc}"]
        groups: list[list[PackEntry]] = []
        for e in stored:
            g = groups[-1] if groups else None
            if (g and e.offset == g[-1].offset + g[-1].length
                    and e.offset + e.length - g[0].offset <= _PIECE):
                g.append(e)
            else:
                groups.append([e])
        hasher = blake3.blake3()
        hashable = True
        pos = bad = 0
        for group in groups:
            start, end = group[0].offset, group[-1].offset + group[-1].length
            try:
                if start > pos:  # bytes no entry describes (only with a damaged header)
                    hasher.update(self.repo.store.get(key, pos, start - pos))
                data = read_view(self.repo.store, key, start, end - start, self._reads.get)
            except StoreError as exc:
                errors.append(f"{what}: {exc}")
                self._damaged.update(e.id for e in group)
                bad += len(group)
                hashable = False
                continue
            if start < pos:
                hashable = False
            hasher.update(data)
            pos = max(pos, end)
            scratch = self._scratch.get(max(e.length for e in group))
            for e in group:
                try:
                    open_blob(self.repo.cipher, e.id, data[e.offset - start:e.offset - start
                                                          + e.length], e.raw_length,
                              scratch=scratch)
                except (IntegrityError, ValueError):
                    self._damaged.add(e.id)
                    bad += 1
            self.progress.add(end - start)
        try:
            if pos < size:
                hasher.update(self.repo.store.get(key, pos, size - pos))
        except StoreError as exc:
            errors.append(f"{what}: {exc}")
            hashable = False
        if hashable and hasher.hexdigest() != name:
            errors.append(f"{what}: content does not match its name (damaged)")
        if bad:
            errors.append(f"{what}: {bad} of {len(stored)} blobs are damaged")
        self.progress.add(0, 1)
        return errors

    def _survey(self, root: bytes) -> None:
        """Read every tree below ``root`` not surveyed yet, once for all snapshots.

        Each tree is decoded once, its own damaged entries and its subdirectories noted,
        and its nodes dropped: memory holds the directory structure, not every file node
        of a snapshot, and snapshots that share trees cost nothing more.
        """
        stack = [root]
        while stack:
            tree_id = stack.pop()
            if tree_id in self._trees:
                continue
            if tree_id in self._damaged or tree_id not in self.repo.index:
                self._trees[tree_id] = None
                continue
            try:
                nodes = decode_tree(self.repo.load_blob(tree_id), f"tree {tree_id.hex()[:16]}")
            except MultibackupError:
                self._trees[tree_id] = None
                continue
            hits, subdirs = [], []
            for node in nodes:
                if node.subtree is not None:
                    subdirs.append((node.name, node.subtree))
                    stack.append(node.subtree)
                elif any(c in self._damaged or c not in self.repo.index for c in node.content):
                    hits.append(node.name)
            self._trees[tree_id] = (hits, subdirs)
            self._order.append(tree_id)

    def _mark_dirty(self) -> None:
        """Which surveyed trees have damage anywhere below them (children before parents:
        the survey met every parent before its children)."""
        self._dirty.update(t for t, entry in self._trees.items() if entry is None)
        for tree_id in reversed(self._order):
            entry = self._trees[tree_id]
            assert entry is not None
            hits, subdirs = entry
            if hits or any(sub in self._dirty for _, sub in subdirs):
                self._dirty.add(tree_id)
        self._order.clear()

    def _damaged_paths(self, root: bytes) -> list[str]:
        """Paths in the snapshot of tree ``root`` that use missing or damaged blobs."""
        found: list[str] = []
        stack = [(root, "")]
        while stack:
            tree_id, prefix = stack.pop()
            entry = self._trees[tree_id]
            if entry is None:  # the directory's own listing is lost
                found.append(prefix or "/")
                continue
            hits, subdirs = entry
            found.extend(f"{prefix}/{name}" for name in hits)
            stack.extend((sub, f"{prefix}/{name}") for name, sub in subdirs
                         if sub in self._dirty)
        return sorted(found)

    def run(self) -> CheckReport:
        with collector_paused():
            return self._run()

    def _run(self) -> CheckReport:
        r = self.report
        self._load_index()
        self._check_packs()
        self._salvage()
        if self.read_data:
            todo = [(p, e) for p, e in self._packs.items() if not all(x.id in self._damaged for x in e)]
            self.progress.total_items = len(todo)
            self.progress.total_bytes = sum(expected_pack_size(e) for _, e in todo)
            with ThreadPoolExecutor(self.workers, thread_name_prefix="check") as pool:
                for errs in pool.map(lambda pe: self._read_pack(*pe), todo):
                    r.errors.extend(errs)
            r.packs_read = len(todo)
        snaps: list[Snapshot] = []
        for snap_id in self.repo.snapshot_ids():
            try:
                snaps.append(self.repo.load_snapshot(snap_id,
                                                     self.rebuilt.get(SNAPSHOTS + snap_id)))
            except (IntegrityError, ObjectNotFound) as exc:
                r.errors.append(str(exc))
        r.snapshots = len(snaps)
        self._packs.clear()  # not needed below: the index answers from here on
        for snap in snaps:
            self._survey(snap.tree)
        self._mark_dirty()
        per_snapshot: dict[str, list[str]] = defaultdict(list)
        for snap in snaps:
            paths = self._damaged_paths(snap.tree) if snap.tree in self._dirty else []
            if paths:
                per_snapshot[snap.id] = paths
                shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
                r.errors.append(f"snapshot {snap.short_id}: {len(paths)} damaged or missing "
                                f"paths: {shown}")
        r.affected = dict(per_snapshot)
        if per_snapshot and self._unindexed:
            # an index file lost: the blobs may well be in the packs no index names
            r.errors.append(f"{self._unindexed} pack(s) are in no index and may hold what "
                            "the snapshots miss: run 'multibackup repair index' to rebuild "
                            "the index from the packs, then check again")
        return r
