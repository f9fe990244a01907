"""What every non-local source and restore target offers the engine.

A *tree source* is a tree of files somewhere else: a directory on an SFTP or FTP host, a
bucket prefix, or the dump of a database (one or a few virtual files whose bytes come from
the database's own dump tool). The engine walks it with ``list_dir`` and reads files with
``open``; it never needs to know which kind it is. The local filesystem keeps its own,
faster path (``sources.fs`` and ``engine.backup``).

Paths inside a source are relative and '/'-separated; ``""`` is the source's root. The
snapshot's tree holds the root's contents directly, so restoring to a directory ``T``
puts ``T/<name>`` for every name at the root.

A *restore target* is the other direction: where restored files are written (a remote
host, a bucket) or a server a dump is loaded into.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from multibackup.errors import SourceError

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"

UNKNOWN_SIZE = -1  # a stream (a dump) whose length is known only once it has been read


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a source directory, with what change detection needs."""

    name: str
    kind: str  # FILE, DIR or SYMLINK
    size: int = UNKNOWN_SIZE
    mtime_ns: int = 0
    mode: int = 0o644
    target: str = ""  # a symlink's target
    etag: str = ""  # a content token besides size and mtime (a bucket object's ETag)


@runtime_checkable
class TreeSource(Protocol):
    """A tree of files the engine can back up.

    ``complete_only`` sources (database dumps) must be read whole or not at all: any
    error while reading fails the backup and no snapshot is written. Other sources (file
    trees) skip an unreadable file, name it in the run's errors and go on, like the local
    filesystem.
    """

    scheme: str
    complete_only: bool

    def describe(self) -> str:
        """The source as a URL without secrets: the snapshot's path and its parent key."""
        ...

    def list_dir(self, path: str) -> list[Entry]:
        """The entries of a directory, sorted by name; raises ``SourceError``."""
        ...

    def open(self, path: str, entry: Entry) -> AbstractContextManager[BinaryIO]:
        """A stream of a file's bytes (with ``readinto``).

        Leaving the context normally checks that the stream was complete (a dump tool's
        exit status, a size that changed mid-read) and raises ``SourceError`` if not.
        """
        ...

    def close(self) -> None:
        """Release connections; the source is not used afterwards."""
        ...


@runtime_checkable
class RestoreTarget(Protocol):
    """Where ``restore --target URL`` writes.

    ``write`` gets a file's bytes as an iterator of chunks in order, so nothing is held
    whole in memory. A target that loads dumps into a server (a database) takes only the
    files its source produced; it says which by raising ``SourceError`` for others.
    """

    scheme: str

    def describe(self) -> str:
        ...

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents (no error if it exists)."""
        ...

    def write(self, path: str, chunks: Iterator[bytes], *, size: int, mode: int,
              mtime_ns: int) -> None:
        """Write a whole file, atomically where the target allows."""
        ...

    def symlink(self, path: str, target: str) -> None:
        ...

    def close(self) -> None:
        ...


def temporary_name(name: str) -> str:
    """The hidden name a file is written under before it is renamed onto ``name``: the
    name cut to 200 bytes (whole characters), so that with its 18 more it stays within
    the 255 bytes a file name may have; a name near that length still gets its copy."""
    stem = name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")
    return f".{stem or '_'}.tmp-{uuid.uuid4().hex[:12]}"


def refuse_non_empty(where: str, busy: list[str], holding: str) -> None:
    """A database restore loads into new or empty databases only: name the busy ones."""
    if busy:
        names = ", ".join(busy[:5]) + (", ..." if len(busy) > 5 else "")
        raise SourceError(f"{where}: database(s) {names} already hold {holding}; restore "
                          "into a new or empty database")


def refuse_several_dumps(where: str, dumps: list[str]) -> None:
    """A target that names one database takes one dump of the snapshot, not several."""
    if len(dumps) > 1:
        shown = ", ".join(dumps[:5]) + (", ..." if len(dumps) > 5 else "")
        raise SourceError(f"{where}: the snapshot holds {len(dumps)} database dumps ({shown}) "
                          f"and the target names one database: choose one with "
                          f"--include /{dumps[0]}")


def join(parent: str, name: str) -> str:
    """A child's path below ``parent`` ("" is the root)."""
    return f"{parent}/{name}" if parent else name


def safe_relative(path: str) -> bool:
    """Whether a relative path stays inside its root (no '..', no absolute part)."""
    if not path:
        return True
    if path.startswith("/") or "\\" in path:
        return False
    return all(p not in ("", ".", "..") for p in path.split("/"))


def sorted_entries(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: e.name)


__all__ = ["DIR", "FILE", "SYMLINK", "UNKNOWN_SIZE", "Entry", "RestoreTarget", "TreeSource",
           "join", "safe_relative", "sorted_entries"]
