"""One logical store over several destinations that hold the same objects.

Every write goes to every destination at once; a destination that fails is dropped for the
rest of the run (it *lags*) and the run goes on with the others - only when none is left
does a write fail. Because each put returns only once every live destination has the
object, the repository's write order (packs, index, snapshot) holds on each destination
separately: a destination that dropped out holds a consistent prefix of the run, never a
snapshot without its data.

Reads go to the fastest destination first (measured by a timed read when the first read
happens) and fall back to the next copy when an object is missing, unreachable or - with
:meth:`get_verified`, whose caller says what correct bytes look like - damaged. Listings
are the union of all copies, so an object lost on one destination stays visible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from multibackup.backends.base import ObjectInfo, ObjectStore
from multibackup.errors import (
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    StoreError,
    UsageError,
)
from multibackup.store.reassemble import reassemble

T = TypeVar("T")


@dataclass
class DestinationState:
    """What happened on one destination during this process's life."""

    store: ObjectStore
    failed: str | None = None  # first error that dropped it from writes
    failed_at: float | None = None
    writes: int = 0
    bytes_written: int = 0
    read_fallbacks: int = 0  # reads this destination could not serve (missing/damaged/down)
    latency: float | None = None  # seconds for the probe read; None = not measured
    missed_deletes: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return self.store.description

    def to_json(self) -> dict[str, object]:
        return {"destination": self.description, "ok": self.failed is None,
                "error": self.failed, "writes": self.writes, "bytes_written": self.bytes_written,
                "read_fallbacks": self.read_fallbacks,
                "latency_ms": None if self.latency is None else round(self.latency * 1000, 2)}


class MirrorStore:
    """An ObjectStore that mirrors every object onto all of its destinations."""

    def __init__(self, stores: Sequence[ObjectStore], probe_key: str = "config") -> None:
        if len(stores) < 2:
            raise UsageError("a mirror needs at least two destinations")
        names = [s.description for s in stores]
        places = [getattr(s, "identity", s.description) for s in stores]
        if len(set(names)) != len(names) or len(set(places)) != len(places):
            raise UsageError("the same destination is given twice")
        self.destinations = [DestinationState(s) for s in stores]
        self.description = " + ".join(names)
        # at least two writes in flight, even when every copy is a local disk (one each):
        # a pack waits for its slowest copy's write and sync, and the next one goes on
        # meanwhile (three local folders: about 2 s less in a 16 s backup of the bench set)
        self.concurrency = max(2, *(s.concurrency for s in stores))
        self.is_local = any(s.is_local for s in stores)
        self._probe_key = probe_key
        self._lock = threading.Lock()
        #: reads no copy held intact that the copies' intact parts answered together
        self.reassembled = 0
        self._order: list[DestinationState] | None = None
        self._pool = ThreadPoolExecutor(len(stores) * 4, thread_name_prefix="mirror")
        # objects deleted while a copy was down, which that copy holds until it is caught
        # up: not listed, so a forgotten snapshot does not come back in 'snapshots'
        self.hidden: frozenset[str] = frozenset()

    # ---- state ------------------------------------------------------------------------

    @property
    def live(self) -> list[DestinationState]:
        return [d for d in self.destinations if d.failed is None]

    @property
    def failures(self) -> list[DestinationState]:
        return [d for d in self.destinations if d.failed is not None]

    def mark_failed(self, dest: DestinationState, error: BaseException | str) -> None:
        with self._lock:
            if dest.failed is None:
                dest.failed = str(error)
                dest.failed_at = time.time()
                if self._order is not None:  # a dead copy is the last one to read from
                    self._order.remove(dest)
                    self._order.append(dest)

    def _require_live(self) -> list[DestinationState]:
        live = self.live
        if not live:
            first = self.destinations[0]
            raise StoreError(f"every destination failed; first: {first.failed}")
        return live

    # ---- writes -----------------------------------------------------------------------

    def _fan_out(self, action: Callable[[ObjectStore], None], size: int = 0,
                 on_fail: Callable[[DestinationState], None] | None = None) -> None:
        """Run ``action`` on every live destination at once; drop the ones that fail.

        ObjectExists is not a destination failure: it is the answer of a create-only put
        and goes to the caller.
        """
        live = self._require_live()
        futures = [(d, self._pool.submit(action, d.store)) for d in live]
        exists: ObjectExists | None = None
        last: BaseException | None = None
        for dest, fut in futures:
            try:
                fut.result()
            except ObjectExists as exc:
                exists = exc
            except StoreError as exc:
                last = exc
                self.mark_failed(dest, exc)
                if on_fail:
                    on_fail(dest)
            else:
                dest.writes += 1
                dest.bytes_written += size
        if exists is not None:
            raise exists
        if not self.live:
            raise StoreError(f"every destination failed; last: {last}")

    def put(self, key: str, data: bytes | bytearray) -> None:
        self._fan_out(lambda s: s.put(key, data), len(data))

    def put_new(self, key: str, data: bytes) -> None:
        self._fan_out(lambda s: s.put_new(key, data), len(data))

    def delete(self, key: str) -> None:
        def remember(dest: DestinationState) -> None:
            dest.missed_deletes.append(key)

        self._fan_out(lambda s: s.delete(key), on_fail=remember)
        for dest in self.failures:  # dropped earlier in the run: it still holds the object
            if key not in dest.missed_deletes:
                dest.missed_deletes.append(key)

    def sweep_temporary(self, older_than: float) -> int:
        total = 0
        for d in self.live:
            try:
                total += d.store.sweep_temporary(older_than)
            except StoreError as exc:
                self.mark_failed(d, exc)
        return total

    # ---- reads ------------------------------------------------------------------------

    def read_order(self) -> list[DestinationState]:
        """Destinations, fastest first; measured once by timing a small read on each."""
        with self._lock:
            if self._order is not None:
                return list(self._order)

        def probe(dest: DestinationState) -> float:
            start = time.perf_counter()
            try:
                dest.store.get(self._probe_key)
            except ObjectNotFound:
                pass  # reachable; the probe object may not exist yet
            except StoreError as exc:
                # unreachable now: no later read or write waits for it again in this run
                self.mark_failed(dest, exc)
                return float("inf")
            return time.perf_counter() - start

        timings = list(self._pool.map(probe, self.destinations))
        for dest, t in zip(self.destinations, timings, strict=True):
            dest.latency = None if t == float("inf") else t
        order = sorted(self.destinations,
                       key=lambda d: (d.failed is not None, d.latency is None,
                                      d.latency or 0.0))
        with self._lock:
            if self._order is None:
                self._order = order
            return list(self._order)

    def _demote(self, dest: DestinationState) -> None:
        with self._lock:
            if self._order is not None and self._order[-1] is not dest:
                self._order.remove(dest)
                self._order.append(dest)

    def get_verified(self, key: str, check: Callable[[bytes], T], offset: int = 0,
                     length: int | None = None) -> T:
        """Bytes that ``check`` accepts, from the first copy that has them.

        ``check`` raises IntegrityError for wrong bytes. A copy that is missing the object
        or holds it damaged is skipped; one that cannot be reached is also moved to the end
        of the read order, so the rest of the run stops waiting for it. When every copy
        read is damaged, the blocks each holds intact are put together
        (:mod:`~multibackup.store.reassemble`) and ``check`` proves the result.
        """
        errors: list[StoreError | IntegrityError] = []
        damaged: list[bytes] = []
        for dest in self.read_order():
            try:
                data = dest.store.get(key, offset, length)
            except ObjectNotFound as exc:
                errors.append(exc)
                dest.read_fallbacks += 1
                continue
            except StoreError as exc:
                errors.append(exc)
                dest.read_fallbacks += 1
                self._demote(dest)
                continue
            try:
                return check(data)
            except IntegrityError as exc:
                errors.append(IntegrityError(f"{dest.description}: {exc}"))
                dest.read_fallbacks += 1
                damaged.append(data)
        if len(damaged) > 1:  # damaged everywhere, but perhaps each in another place
            found: list[T] = []

            def proves(candidate: bytes) -> bool:
                try:
                    found.append(check(candidate))
                except IntegrityError:
                    return False
                return True

            if reassemble(damaged, proves) is not None:
                with self._lock:
                    self.reassembled += 1
                return found[-1]
        raise _best_error(errors, key)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.get_verified(key, lambda b: b, offset, length)

    def _readable(self) -> list[DestinationState]:
        """Read order without destinations already found down (all of them if every one is)."""
        order = self.read_order()
        return [d for d in order if d.failed is None] or order

    def stat(self, key: str) -> ObjectInfo:
        errors: list[StoreError] = []
        for dest in self._readable():
            try:
                return dest.store.stat(key)
            except StoreError as exc:
                errors.append(exc)
        raise _best_error(errors, key)

    def exists(self, key: str) -> bool:
        errors: list[StoreError] = []
        dests = self._readable()
        for dest in dests:
            try:
                if dest.store.exists(key):
                    return True
            except StoreError as exc:
                errors.append(exc)
                continue
        if len(errors) == len(dests):
            raise errors[0]
        return False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The union of every live destination's listing (the fastest copy's sizes win)."""
        seen: dict[str, ObjectInfo] = {}
        order = self.read_order()
        listings = {id(d): self._pool.submit(lambda s: list(s.list(prefix)), d.store)
                    for d in order if d.failed is None}
        ok = 0
        held: dict[str, int] = {}  # hidden keys: how many copies list them
        last: BaseException | None = None
        for dest in order:
            fut = listings.get(id(dest))
            if fut is None:
                continue
            try:
                infos = fut.result()
            except StoreError as exc:
                last = exc
                self.mark_failed(dest, exc)
                continue
            ok += 1
            for info in infos:
                seen.setdefault(info.key, info)
                if info.key in self.hidden:
                    held[info.key] = held.get(info.key, 0) + 1
        if not ok:
            raise StoreError(f"every destination failed to list {prefix or '/'}; last: {last}")
        # a hidden object that every copy listed was written again since: it is real
        yield from (i for k, i in seen.items() if held.get(k, ok) == ok)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class UnavailableStore:
    """Stands in for a destination that could not even be opened, so the others go on.

    Every operation fails with the error that opening it gave; the mirror then treats it
    like a destination that went down.
    """

    is_local = False
    concurrency = 1

    def __init__(self, description: str, error: StoreError) -> None:
        self.description = description
        self._error = error

    def _fail(self, *args: object, **kwargs: object) -> NoReturn:
        raise StoreError(str(self._error))

    put = put_new = get = stat = delete = exists = sweep_temporary = _fail

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._fail()


def _best_error(errors: Sequence[BaseException], key: str) -> BaseException:
    """The most telling error: damage beats absence beats unreachability."""
    for exc in errors:
        if isinstance(exc, IntegrityError):
            return IntegrityError(f"no intact copy of {key}: {exc}")
    if errors and all(isinstance(e, ObjectNotFound) for e in errors):
        return ObjectNotFound(f"{key}: object not found on any destination")
    for exc in errors:
        if not isinstance(exc, ObjectNotFound):
            return StoreError(f"no destination could serve {key}: {exc}")
    return StoreError(f"no destination could serve {key}")
