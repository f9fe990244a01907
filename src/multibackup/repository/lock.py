"""Repository locks: shared for backup/check/restore/forget, exclusive for prune and repair.

Key management takes no lock: key files are independent of the data, and the key in use
can never be removed.

A lock is a sealed JSON file ``locks/<random id>`` refreshed every 5 minutes by a
background thread. A lock is stale when it has not been refreshed for 30 minutes, or when
it was taken on this host by a process that no longer exists. Taking a lock writes it and
then re-reads the others, so two processes racing for conflicting locks both back off
rather than both proceeding.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from multibackup.backends.base import ObjectStore
from multibackup.errors import IntegrityError, LockConflict, ObjectNotFound, StoreError
from multibackup.repository.blob import open_file, seal_file
from multibackup.repository.crypto import Cipher

PREFIX = "locks/"
KIND = b"lock"
REFRESH = timedelta(minutes=5)
STALE_AFTER = timedelta(minutes=30)


@dataclass
class LockInfo:
    id: str
    time: datetime
    exclusive: bool
    hostname: str
    pid: int
    command: str

    def is_stale(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        if now - self.time > STALE_AFTER:
            return True
        if self.hostname == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        return (f"{kind} lock {self.id[:8]} by {self.command} (pid {self.pid} on {self.hostname}, "
                f"since {self.time:%Y-%m-%d %H:%M:%S})")


def read_locks(store: ObjectStore, cipher: Cipher) -> list[LockInfo]:
    locks = []
    for info in store.list(PREFIX):
        lock_id = info.key[len(PREFIX):]
        try:
            d = json.loads(open_file(cipher, KIND, store.get(info.key), "lock"))
            locks.append(LockInfo(lock_id, datetime.fromisoformat(d["time"]), d["exclusive"],
                                  d["hostname"], d["pid"], d.get("command", "")))
        except (IntegrityError, ObjectNotFound, ValueError, KeyError, TypeError):
            continue
    return locks


class Lock:
    """A held lock; use as a context manager."""

    def __init__(self, store: ObjectStore, cipher: Cipher, exclusive: bool, command: str) -> None:
        self._store = store
        self._cipher = cipher
        self.exclusive = exclusive
        self.command = command
        self.id = secrets.token_hex(16)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        body = json.dumps({"time": datetime.now(UTC).isoformat(), "exclusive": self.exclusive,
                           "hostname": socket.gethostname(), "pid": os.getpid(),
                           "command": self.command}).encode()
        self._store.put(PREFIX + self.id, seal_file(self._cipher, KIND, body))

    def _conflicts(self) -> list[LockInfo]:
        return [lk for lk in read_locks(self._store, self._cipher)
                if lk.id != self.id and (lk.exclusive or self.exclusive) and not lk.is_stale()]

    def acquire(self) -> Lock:
        conflicts = self._conflicts()
        if not conflicts:
            self._write()
            conflicts = self._conflicts()
            if conflicts:
                self._store.delete(PREFIX + self.id)
        if conflicts:
            raise LockConflict(f"repository is locked: {conflicts[0].describe()}; "
                               "if that process is gone, run 'multibackup unlock'")
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH.total_seconds()):
            try:
                self._write()
            except StoreError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self._store.delete(PREFIX + self.id)
        except StoreError:
            pass

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_locks(store: ObjectStore, cipher: Cipher, remove_all: bool = False) -> list[str]:
    removed = []
    for lk in read_locks(store, cipher):
        if remove_all or lk.is_stale():
            store.delete(PREFIX + lk.id)
            removed.append(lk.id)
    return removed
