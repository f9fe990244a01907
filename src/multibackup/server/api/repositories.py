"""Opened plan repositories, kept a short while for the snapshot browser.

Opening a repository derives its key with a memory-hard KDF (0.15 s here, seconds on a busy
machine) and, on a cloud, costs several requests; every page of the snapshot browser reads
the same repository. Entries are keyed by plan and by a fingerprint of the saved settings
(plan and destinations), so an edit opens afresh; the index is reloaded when the set of
snapshots changed (a backup or prune since); an entry unused for ``ttl`` seconds is closed.
Requests for one plan take turns on its entry; a download opens its own repository.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from multibackup.errors import MultibackupError
from multibackup.repository.repository import Repository

Opener = Callable[[ExitStack], Repository]


@dataclass
class _Entry:
    fingerprint: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    stack: ExitStack | None = None
    repo: Repository | None = None
    indexed: frozenset[str] | None = None
    used: float = 0.0
    stale: bool = False

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.stack = self.repo = self.indexed = None


class RepositoryCache:
    def __init__(self, ttl: float = 120.0) -> None:
        self.ttl = ttl
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, plan_id: int, fingerprint: str, opener: Opener,
               index: bool = False) -> Iterator[Repository]:
        """The plan's repository, opened by ``opener`` if needed; with ``index``, its
        index loaded and current."""
        with self._lock:
            self._sweep()
            entry = self._entries.get(plan_id)
            if entry is not None and entry.fingerprint != fingerprint:
                entry.stale = True  # closed by whoever holds it, or now if nobody does
                if entry.lock.acquire(blocking=False):
                    entry.close()
                    entry.lock.release()
                entry = None
            if entry is None:
                entry = self._entries[plan_id] = _Entry(fingerprint)
        with entry.lock:
            try:
                if entry.repo is None:
                    stack = ExitStack()
                    try:
                        entry.repo = opener(stack)
                    except BaseException:
                        stack.close()
                        raise
                    entry.stack = stack
                repo = entry.repo
                if index:
                    current = frozenset(repo.snapshot_ids())
                    if current != entry.indexed:
                        repo.load_index(recover=False)
                        entry.indexed = current
                yield repo
            except MultibackupError:
                entry.close()  # a store error or damage: open afresh next time
                raise
            finally:
                entry.used = time.monotonic()
                if entry.stale:
                    entry.close()

    def _sweep(self) -> None:
        now = time.monotonic()
        for plan_id, entry in list(self._entries.items()):
            if now - entry.used > self.ttl and entry.lock.acquire(blocking=False):
                try:
                    entry.close()
                    del self._entries[plan_id]
                finally:
                    entry.lock.release()

    def close(self) -> None:
        """Close every entry (the server is stopping)."""
        with self._lock:
            for entry in self._entries.values():
                with entry.lock:
                    entry.close()
            self._entries.clear()
