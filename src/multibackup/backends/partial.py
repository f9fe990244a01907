"""Resumable large-object writes for file-like destinations (SFTP, local disk).

S3 has multipart uploads that survive the client; a file system has none, so the same idea
is built from a temp file: parts are written at their fixed offsets into
``<root>/.tmp/migrate-<id>.part``, the migration journal records each part written, and a
rerun continues the same file after checking it is still there and long enough. Only the
completed file is renamed to its key, so no truncated object ever appears. The interface
matches :class:`~multibackup.backends.s3_multipart.S3Multipart`'s upload methods.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import uuid
from collections.abc import Mapping

from multibackup.backends.sftp_store import TMP_DIR, SFTPStore
from multibackup.errors import ObjectNotFound, StoreError


class _PartialFile:
    """Shared logic; subclasses supply the file operations."""

    description: str

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size

    # file operations, in the destination's own terms --------------------------------------
    def _write_at(self, name: str, offset: int, data: bytes) -> None: ...
    def _size(self, name: str) -> int | None: ...
    def _create(self, name: str) -> None: ...
    def _commit(self, name: str, key: str) -> None: ...
    def _remove(self, name: str) -> None: ...

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        """A new, empty temp file for ``key``; returns its name (the "upload id")."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{self.description}: invalid object key {key!r}")
        name = f"migrate-{uuid.uuid4().hex}.part"
        self._guard(lambda: self._create(name), "starting a write of", key)
        return name

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    md5: bytes | None = None, total: int | None = None) -> str:
        """Write part ``number`` (1-based) at its offset; returns the MD5 of what was written
        (``md5`` when the caller has it already)."""
        offset = (number - 1) * self.part_size
        self._guard(lambda: self._write_at(upload_id, offset, data), f"writing part {number} of",
                    key)
        return (md5 or hashlib.md5(data).digest()).hex()

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str | None, int]]:
        """Parts the temp file is long enough to hold; their content is checked later, when
        the finished object is read back, so no ETag (None)."""
        size = self._guard(lambda: self._size(upload_id), "resuming", key)
        if size is None:
            raise ObjectNotFound(f"{self.description}: resuming {key}: the partial file is gone")
        full = size // self.part_size
        return {n: (None, self.part_size) for n in range(1, full + 1)} | (
            {full + 1: (None, size % self.part_size)} if size % self.part_size else {})

    def complete(self, key: str, upload_id: str, etags: list[str],
                 content_type: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> str:
        """Rename the partial file to the key (files keep no content type or metadata)."""
        self._guard(lambda: self._commit(upload_id, key), "completing", key)
        return ""

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._remove(upload_id)
        except Exception:
            pass

    def _guard(self, operation, action: str, key: str):  # type: ignore[no-untyped-def]
        try:
            return operation()
        except StoreError:
            raise
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise StoreError(f"{self.description}: {action} {key}: {reason}") from None


class LocalPartial(_PartialFile):
    """Resumable writes below a local directory (``root``)."""

    def __init__(self, root: str, part_size: int) -> None:
        super().__init__(part_size)
        self.root = root
        self.description = root
        self._tmp = os.path.join(root, ".tmp")

    def _create(self, name: str) -> None:
        os.makedirs(self._tmp, exist_ok=True)
        with open(os.path.join(self._tmp, name), "xb"):
            pass

    def _write_at(self, name: str, offset: int, data: bytes) -> None:
        fd = os.open(os.path.join(self._tmp, name), os.O_WRONLY)
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        finally:
            os.close(fd)

    def _size(self, name: str) -> int | None:
        try:
            return os.stat(os.path.join(self._tmp, name)).st_size
        except FileNotFoundError:
            return None

    def _commit(self, name: str, key: str) -> None:
        path = os.path.join(self._tmp, name)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        target = os.path.join(self.root, *key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(path, target)

    def _remove(self, name: str) -> None:
        os.unlink(os.path.join(self._tmp, name))


class SFTPPartial(_PartialFile):
    """Resumable writes into an SFTP store's temp directory, over its connection pool."""

    def __init__(self, store: SFTPStore, part_size: int) -> None:
        super().__init__(part_size)
        self.store = store
        self.description = store.description
        self._tmp = posixpath.join(store.root, TMP_DIR)

    def _create(self, name: str) -> None:
        with self.store.session("writing", name) as sftp:
            self.store.ensure_dir(sftp, self._tmp)
            with sftp.open(posixpath.join(self._tmp, name), "w"):
                pass

    def _write_at(self, name: str, offset: int, data: bytes) -> None:
        with self.store.session("writing", name) as sftp, \
                sftp.open(posixpath.join(self._tmp, name), "r+") as fh:
            fh.set_pipelined(True)
            fh.seek(offset)
            fh.write(data)

    def _size(self, name: str) -> int | None:
        with self.store.session("resuming", name) as sftp:
            try:
                return sftp.stat(posixpath.join(self._tmp, name)).st_size or 0
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise

    def _commit(self, name: str, key: str) -> None:
        target = posixpath.join(self.store.root, key)
        with self.store.session("writing", key) as sftp:
            self.store.ensure_dir(sftp, posixpath.dirname(target))
            sftp.posix_rename(posixpath.join(self._tmp, name), target)

    def _remove(self, name: str) -> None:
        with self.store.session("deleting", name) as sftp:
            sftp.remove(posixpath.join(self._tmp, name))
