"""A local file filled in place at known offsets, then renamed onto its key.

A local repository builds each data pack in one of these, below its temporary directory,
instead of in memory: the blobs go to the page cache as they are sealed, so a pack costs
the backup disk, not 17 MiB of its own memory, and nothing is copied twice. A reader never
sees the file before ``commit`` renames it into place, synced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets

from multibackup.backends.local_paths import make_parents
from multibackup.errors import StorageFull, StoreError


class SpoolFile:
    """A temporary file in ``directory``; ``write_at`` from any thread, then ``commit``
    (or ``discard``) once."""

    def __init__(self, directory: str, stem: str, description: str, what: str) -> None:
        self._description = description
        self._what = what  # what errors name: the key, or what the file will become
        # the stem cut to 200 bytes: with the 13 added, a name of up to 255 bytes (the most
        # a file system takes) still gets its temporary file
        stem = os.fsdecode(os.fsencode(stem)[:200])
        self.path = os.path.join(directory, f"{stem}.{secrets.token_hex(6)}")
        try:
            os.makedirs(directory, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                               0o666)
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> StoreError:
        where = f"{self._description}: writing {self._what}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull(f"{where}: no space left on the destination")
        return StoreError(f"{where}: {exc.strerror or exc}")

    def write_at(self, data: memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset`` (the GIL is released while it copies)."""
        try:
            while data:
                n = os.pwrite(self._fd, data, offset)
                data, offset = data[n:], offset + n
        except OSError as exc:
            raise self._error(exc) from None

    def read_at(self, buffer: memoryview, offset: int) -> int:
        """Read into ``buffer`` from ``offset``; the bytes read (0 at the end)."""
        try:
            return os.preadv(self._fd, [buffer], offset)
        except OSError as exc:
            raise StoreError(f"{self._description}: reading {self._what} back: "
                             f"{exc.strerror or exc}") from None

    def commit(self, target: str, key: str) -> None:
        """Sync the file and rename it onto ``target`` (the path of ``key``); on failure
        the temporary file is removed."""
        self._what = key
        try:
            make_parents(target)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.rename(self.path, target)
        except OSError as exc:
            self.discard()
            raise self._error(exc) from None

    def discard(self) -> None:
        """Close and remove the file (a pack given up on); safe to call more than once."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.path)
