"""The object-store interface every backend and store implements."""

from __future__ import annotations

import stat as stat_mod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or stat says about one object."""

    key: str
    size: int
    etag: str | None = None
    #: last modification in ns since the epoch; 0 where the store leaves it out (SFTP, memory)
    mtime_ns: int = 0


#: what a file-system entry is that a listing of objects passes over, by its type bits
_NOT_OBJECTS = {stat_mod.S_IFLNK: "a symbolic link", stat_mod.S_IFIFO: "a named pipe",
                stat_mod.S_IFSOCK: "a socket", stat_mod.S_IFCHR: "a character device",
                stat_mod.S_IFBLK: "a block device"}


def not_an_object(mode: int) -> str | None:
    """What an entry of ``mode`` is when it is neither a regular file nor a directory
    ("a symbolic link", "a named pipe", ...), for a listing that passes it over."""
    return _NOT_OBJECTS.get(stat_mod.S_IFMT(mode))


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-ish objects addressed by ``/``-separated keys.

    Keys never start with ``/``. Implementations raise :class:`~multibackup.errors.ObjectNotFound`
    for a missing key, :class:`~multibackup.errors.ObjectExists` when a create-only put finds
    the key taken, and :class:`~multibackup.errors.StoreError` for everything else.
    """

    #: Human-readable location, safe to print (no credentials).
    description: str
    #: How many concurrent transfers pay off (local disk: few; clouds: more, to hide latency).
    concurrency: int
    #: True when reads are as cheap as a local cache would be (local disk, memory).
    is_local: bool

    def put(self, key: str, data: bytes | bytearray) -> None:
        """Store ``data`` under ``key``, replacing any previous object."""
        ...

    def put_new(self, key: str, data: bytes) -> None:
        """Store ``data`` only if ``key`` does not exist yet (create-only)."""
        ...

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read a whole object, or ``length`` bytes from ``offset``."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def exists(self, key: str) -> bool:
        ...

    def sweep_temporary(self, older_than: float) -> int:
        """Remove leftovers of interrupted writes older than ``older_than`` seconds.

        Returns how many were removed; stores whose writes are atomic return 0.
        """
        ...


def get_verified(store: ObjectStore, key: str, check: Callable[[bytes], T], offset: int = 0,
                 length: int | None = None) -> T:
    """Read bytes and hand them to ``check``, which raises IntegrityError if they are wrong.

    A single store has one copy, so this is ``check(get(...))``; a store with several
    copies (a mirror) implements ``get_verified`` itself and tries the next copy when one is
    missing or damaged. Only the caller knows what correct bytes look like, so it says.
    """
    method = getattr(store, "get_verified", None)
    if method is not None:
        return method(key, check, offset, length)
    return check(store.get(key, offset, length))


def read_view(store: ObjectStore, key: str, offset: int, length: int,
              buffer: Callable[[int], bytearray]) -> memoryview:
    """A range of ``key`` as a view, for a caller that consumes it before its next read:
    a store that can (local disk: ``get_view``) reads into ``buffer(length)``, reused by
    the caller, instead of a fresh allocation per read; any other store returns a view of
    the bytes it read."""
    get_view = getattr(store, "get_view", None)
    if get_view is None or not getattr(store, "direct_buffers", False):
        return memoryview(store.get(key, offset, length))
    return get_view(key, offset, length, buffer(length))  # type: ignore[no-any-return]
