"""Keeping the copies of a mirrored repository equal: survey, sync (catch-up) and repair.

Every object of the repository except ``config`` is named by the BLAKE3 of its bytes, so
a copy can be checked on its own, without the password, and a healthy copy is proven
healthy before it is written anywhere. ``config`` is checked by opening it with the
repository key. Locks are per-run and never copied.

Objects go out in the repository's own safe order - key slots, config, packs, index files,
snapshots - so a destination that is interrupted while catching up is still a consistent
repository (it may hold packs nothing references yet, never a snapshot without its data).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import blake3

from multibackup.backends.base import ObjectInfo, ObjectStore
from multibackup.engine.progress import Progress
from multibackup.errors import IntegrityError, ObjectNotFound, StoreError
from multibackup.repository import keys
from multibackup.repository.blob import open_file
from multibackup.repository.crypto import Cipher
from multibackup.repository.lock import PREFIX as LOCKS
from multibackup.repository.repository import CONFIG, DATA, INDEX, SNAPSHOTS
from multibackup.store.mirror import DestinationState, MirrorStore
from multibackup.store.reassemble import reassemble

#: Write order of a catch-up (and the reverse is the order of deletions).
ORDER = (keys.PREFIX, CONFIG, DATA, INDEX, SNAPSHOTS)
_PIECE = 4 * 1024 * 1024


def _rank(key: str) -> int:
    for i, prefix in enumerate(ORDER):
        if key.startswith(prefix):
            return i
    return len(ORDER)


def _wrote(survey: Survey, i: int, key: str, size: int) -> None:
    """Count ``key`` (``size`` bytes) written to copy ``i``: no longer missing or damaged
    there, and the copy's totals are what it holds now."""
    copy = survey.copies[i]
    held = (survey.listings[i] or {}).get(key)
    copy.copied += 1
    copy.bytes_copied += size
    copy.objects += held is None
    copy.bytes += size - (held.size if held else 0)
    if key in copy.missing:
        copy.missing.remove(key)
    copy.damaged.pop(key, None)


def _stale(i: int, deleted: Iterable[str],
           listings: list[dict[str, ObjectInfo] | None]) -> list[str]:
    """Of the keys deleted elsewhere while copy ``i`` was down, those it still holds and
    no other copy does (one written again since is kept)."""
    mine = listings[i]
    if mine is None:
        return []
    others = [lst for j, lst in enumerate(listings) if j != i and lst]
    return [k for k in deleted if k in mine and not any(k in lst for lst in others)]


def _is_repository_object(key: str) -> bool:
    return key == CONFIG or (key.startswith(ORDER) and not key.startswith(LOCKS)
                             and "/." not in key and not key.startswith("."))


@dataclass
class CopyReport:
    """One destination as the survey found it, and what sync or repair did to it."""

    description: str
    reachable: bool = True
    error: str | None = None
    objects: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # key -> why
    copied: int = 0
    bytes_copied: int = 0
    deleted: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # key -> why the copy failed
    #: objects deleted on the other copies while this one was down, still held here
    to_delete: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return (self.reachable and not self.missing and not self.damaged and not self.failed
                and not self.to_delete)

    def to_json(self) -> dict[str, Any]:
        return {"destination": self.description, "reachable": self.reachable,
                "error": self.error, "objects": self.objects, "bytes": self.bytes,
                "missing": sorted(self.missing), "damaged": dict(sorted(self.damaged.items())),
                "copied": self.copied, "bytes_copied": self.bytes_copied,
                "deleted": self.deleted, "failed": self.failed,
                "to_delete": sorted(self.to_delete), "in_sync": self.in_sync}


@dataclass
class Survey:
    """What every destination holds, and the objects no destination holds intact."""

    copies: list[CopyReport]
    listings: list[dict[str, ObjectInfo] | None]
    unrecoverable: dict[str, str] = field(default_factory=dict)
    read_data: bool = False
    #: distinct data packs read and hashed on at least one copy
    packs_read: int = 0
    #: unrecoverable objects that the copies' intact parts put together again (repair does)
    rebuildable: set[str] = field(default_factory=set)
    #: objects repair rebuilt that way and wrote back
    rebuilt: list[str] = field(default_factory=list)
    #: the rebuilt bytes of the rebuildable metadata objects (index files, snapshots),
    #: for a check to read the repository as repair will leave it; packs are not kept
    reassembled: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.in_sync for c in self.copies) and not self.unrecoverable

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "read_data": self.read_data, "packs_read": self.packs_read,
                "destinations": [c.to_json() for c in self.copies],
                "unrecoverable": dict(sorted(self.unrecoverable.items())),
                "rebuildable": sorted(self.rebuildable), "rebuilt": sorted(self.rebuilt)}


class Replicator:
    """Survey, sync and repair over the destinations of a mirror.

    ``cipher`` (the open repository's) lets the config object be verified; ``exclude``
    names objects a destination must not receive (snapshots its own retention forgot,
    objects deleted while it was down).
    """

    def __init__(self, mirror: MirrorStore, cipher: Cipher, workers: int = 4,
                 progress: Progress | None = None,
                 exclude: Callable[[DestinationState, str], bool] | None = None) -> None:
        self.mirror = mirror
        self.cipher = cipher
        self.workers = workers
        self.progress = progress or Progress()
        self.exclude = exclude or (lambda dest, key: False)
        self._lock = threading.Lock()

    # ---- verification -----------------------------------------------------------------

    def _verify_bytes(self, key: str, data: bytes) -> None:
        if key == CONFIG:
            open_file(self.cipher, b"config", data, "config")
            return
        name = key.rsplit("/", 1)[-1]
        if blake3.blake3(data).hexdigest() != name:
            raise IntegrityError("content does not match its name")

    def _hash_in_place(self, store: ObjectStore, key: str, size: int) -> None:
        """Verify a copy without holding it in memory: hash it piece by piece."""
        if key == CONFIG or size <= _PIECE:
            self._verify_bytes(key, store.get(key))
            return
        hasher = blake3.blake3()
        pos = 0
        while pos < size:
            n = min(_PIECE, size - pos)
            hasher.update(store.get(key, pos, n))
            pos += n
            self.progress.add(n)
        if hasher.hexdigest() != key.rsplit("/", 1)[-1]:
            raise IntegrityError("content does not match its name")

    # ---- survey -----------------------------------------------------------------------

    def survey(self, read_data: bool = False, read_metadata: bool = True,
               rebuildable: bool = False,
               missed_deletes: dict[str, list[str]] | None = None) -> Survey:
        """List every destination and find what each lacks or holds damaged.

        Sizes are compared always; the small metadata objects (keys, config, index files,
        snapshots) are read and verified with ``read_metadata``, data packs with
        ``read_data``. A catch-up needs neither: it only looks for what is missing.
        With ``rebuildable`` (a check), objects no copy holds intact are tried for a rebuild
        from their damaged copies (:meth:`heal` tries that itself). ``missed_deletes``
        (as for :meth:`heal`) names what a copy still holds that the others deleted.
        """
        dests = self.mirror.destinations
        copies = [CopyReport(d.description) for d in dests]

        def listing(dest: DestinationState) -> dict[str, ObjectInfo] | None:
            try:
                return {i.key: i for i in dest.store.list("") if _is_repository_object(i.key)}
            except StoreError as exc:
                self.mirror.mark_failed(dest, exc)
                return None

        with ThreadPoolExecutor(len(dests)) as pool:
            listings = list(pool.map(listing, dests))
        survey = Survey(copies, listings, read_data=read_data)
        for copy, lst, dest in zip(copies, listings, dests, strict=True):
            if lst is None:
                copy.reachable = False
                copy.error = dest.failed
            else:
                copy.objects = len(lst)
                copy.bytes = sum(i.size for i in lst.values())
        union: dict[str, list[int]] = {}
        for i, lst in enumerate(listings):
            for key in lst or {}:
                union.setdefault(key, []).append(i)

        for i, dest in enumerate(dests):
            copies[i].to_delete = _stale(i, (missed_deletes or {}).get(dest.description, ()),
                                         listings)
        checks: list[tuple[int, str, int]] = []
        for key, holders in union.items():
            sizes = [listings[i][key].size for i in holders]  # type: ignore[index]
            for i, lst in enumerate(listings):
                if lst is None:
                    continue
                if key not in lst:
                    if not self.exclude(dests[i], key):
                        copies[i].missing.append(key)
                    continue
                size = lst[key].size
                if key != CONFIG and sizes.count(size) * 2 < len(sizes):
                    copies[i].damaged[key] = f"size {size} differs from the other copies"
                    continue
                # sizes that disagree without a majority (two copies, one cut short): the
                # bytes decide, whatever was asked
                if (read_data or (read_metadata and not key.startswith(DATA))
                        or (key != CONFIG and len(set(sizes)) > 1)):
                    checks.append((i, key, size))
        survey.packs_read = len({key for _, key, _ in checks if key.startswith(DATA)})
        self.progress.total_items = len(checks)
        self.progress.total_bytes = sum(s for _, _, s in checks)

        def verify(item: tuple[int, str, int]) -> None:
            i, key, size = item
            try:
                self._hash_in_place(dests[i].store, key, size)
            except IntegrityError as exc:
                with self._lock:
                    copies[i].damaged[key] = str(exc)
            except ObjectNotFound:
                with self._lock:
                    copies[i].missing.append(key)
            except StoreError as exc:
                with self._lock:
                    copies[i].damaged[key] = f"unreadable: {exc}"
            self.progress.add(size if size <= _PIECE else 0, 1)

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(verify, checks))
        for key, holders in union.items():
            if all(key in copies[i].damaged for i in holders):
                survey.unrecoverable[key] = "no intact copy on any destination"
                data = self._reassembled(key, holders) if rebuildable else None
                if data is not None:
                    survey.rebuildable.add(key)
                    if not key.startswith("data/"):
                        survey.reassembled[key] = data
                    survey.unrecoverable[key] += (", but the parts each copy holds intact "
                                                  "rebuild it ('multibackup repair' does)")
        for copy in copies:  # nothing can heal these: don't count them as a destination's debt
            copy.missing = [k for k in copy.missing if k not in survey.unrecoverable]
        return survey

    def _reassembled(self, key: str, holders: Iterable[int]) -> bytes | None:
        """``key`` put together from its damaged copies on ``holders`` (destination
        indexes) and proven by its name, or None (see :mod:`reassemble`)."""
        copies = []
        for i in holders:
            try:
                copies.append(self.mirror.destinations[i].store.get(key))
            except StoreError:
                continue
        if len(copies) < 2:
            return None

        def matches(data: bytes) -> bool:
            try:
                self._verify_bytes(key, data)
            except IntegrityError:
                return False
            return True

        return reassemble(copies, matches)

    # ---- healing ----------------------------------------------------------------------

    def fetch_verified(self, key: str, holders: Iterable[DestinationState]) -> bytes:
        """The object from the first of ``holders`` whose copy verifies; nothing unverified
        is ever handed on to be written elsewhere."""
        errors = []
        for dest in holders:
            try:
                data = dest.store.get(key)
                self._verify_bytes(key, data)
                return data
            except (StoreError, IntegrityError) as exc:
                errors.append(f"{dest.description}: {exc}")
        raise IntegrityError("no intact copy to copy from (" + "; ".join(errors) + ")")

    def _rebuild(self, survey: Survey) -> None:
        """Write each object no copy holds intact that its damaged copies put together
        again (:mod:`reassemble`) to every reachable destination that should hold it."""
        dests = self.mirror.destinations
        for key in sorted(survey.unrecoverable):
            holders = [i for i, lst in enumerate(survey.listings) if lst and key in lst]
            data = self._reassembled(key, holders)
            if data is None:
                continue
            for i, copy in enumerate(survey.copies):
                if not copy.reachable or self.exclude(dests[i], key):
                    continue
                try:
                    dests[i].store.put(key, data)
                except StoreError as exc:
                    copy.failed[key] = str(exc)
                    continue
                _wrote(survey, i, key, len(data))
                if key not in survey.rebuilt:
                    survey.rebuilt.append(key)
            if key in survey.rebuilt:
                survey.unrecoverable.pop(key, None)
                survey.rebuildable.discard(key)

    def heal(self, survey: Survey, damaged: bool = True,
             missed_deletes: dict[str, list[str]] | None = None) -> Survey:
        """Write what each reachable destination lacks (and, with ``damaged``, replace its
        damaged copies) from verified copies elsewhere; then apply ``missed_deletes``
        (destination description -> keys deleted elsewhere while it was down)."""
        dests = self.mirror.destinations
        order = [(dests.index(d), d) for d in self.mirror.read_order()]  # fastest first
        self._rebuild(survey)
        work: list[tuple[int, str]] = []
        for i, copy in enumerate(survey.copies):
            if not copy.reachable:
                continue
            todo = list(copy.missing) + (list(copy.damaged) if damaged else [])
            work += [(i, k) for k in todo if k not in survey.unrecoverable]
        self.progress.total_items = len(work)
        self.progress.total_bytes = 0
        self.progress.items = self.progress.bytes = 0

        def copy_one(item: tuple[int, str]) -> None:
            i, key = item
            target = dests[i]
            sources = [d for j, d in order if j != i
                       and key in (survey.listings[j] or {})
                       and key not in survey.copies[j].damaged]
            try:
                data = self.fetch_verified(key, sources)
                target.store.put(key, data)
            except (StoreError, IntegrityError) as exc:
                with self._lock:
                    survey.copies[i].failed[key] = str(exc)
                return
            with self._lock:
                _wrote(survey, i, key, len(data))
            self.progress.add(len(data), 1)

        # In write order, one rank at a time: a snapshot never lands before its packs. A
        # destination where a write failed (full, gone) gets nothing of a later rank: an
        # index or snapshot there would name packs it does not hold; the rest stays missing.
        with ThreadPoolExecutor(self.workers) as pool:
            for rank in range(len(ORDER) + 1):
                held_back = {i for i, copy in enumerate(survey.copies) if copy.failed}
                batch = [w for w in work if _rank(w[1]) == rank and w[0] not in held_back]
                list(pool.map(copy_one, batch))

        for desc, deleted in (missed_deletes or {}).items():
            for i, dest in enumerate(dests):
                if dest.description != desc or not survey.copies[i].reachable:
                    continue
                mine = survey.listings[i] or {}
                copy = survey.copies[i]
                for key in sorted(_stale(i, deleted, survey.listings), key=_rank, reverse=True):
                    try:
                        dest.store.delete(key)
                        copy.deleted += 1
                        copy.objects -= 1
                        copy.bytes -= mine[key].size
                    except StoreError as exc:
                        copy.failed[key] = f"delete: {exc}"
                copy.to_delete = [k for k in copy.to_delete if k in copy.failed]
        return survey
