"""Resumable large-object writes built from a temporary file, for destinations without
multipart uploads (SFTP, local disk, FTP, WebDAV).

S3 has multipart uploads that survive the client; a file has none, so the same idea is
built from a temporary file: parts are written into it, the migration journal records each
part written, and a rerun continues the same file after checking it is still there and
long enough. Only the completed file is renamed to its key, so no truncated object ever
appears. The interface matches :class:`~multibackup.backends.s3_multipart.S3Multipart`'s
upload methods; subclasses supply the file operations in their destination's terms.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Mapping

from multibackup.errors import ObjectNotFound, StoreError


class PartialFile:
    """Parts written at their offsets (in parallel where the destination allows);
    subclasses supply the file operations."""

    description: str

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size

    # file operations, in the destination's own terms --------------------------------------
    def _write_at(self, name: str, offset: int, data: bytes) -> None: ...
    def _size(self, name: str) -> int | None: ...
    def _create(self, name: str) -> None: ...
    def _commit(self, name: str, key: str) -> None: ...
    def _remove(self, name: str) -> None: ...

    def _check_target(self, key: str) -> None:
        """Raise OSError where ``key`` can plainly never be written (a directory in its
        place), before any byte is sent; where that costs nothing."""

    def _new_name(self, key: str) -> str:
        """The temporary file's name (the "upload id") for a new write of ``key``."""
        return f"migrate-{uuid.uuid4().hex}.part"

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        """A new, empty temp file for ``key``; returns its name (the "upload id")."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{self.description}: invalid object key {key!r}")
        self._guard(lambda: self._check_target(key), "writing", key)
        name = self._new_name(key)
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


class AppendedFile(PartialFile):
    """For destinations that only add bytes where the file ends (FTP's APPE, a WebDAV PUT
    with Content-Range): parts go one at a time, in order, and a rerun sends only the bytes
    after what the file holds, even from the middle of a part (a kill after the server
    took some of them)."""

    #: appends go in order: one part in flight per object
    parts_at_once = 1

    def __init__(self, part_size: int) -> None:
        super().__init__(part_size)
        self._held: dict[str, int] = {}  # upload id -> bytes the file holds
        self._lock = threading.Lock()

    def _append(self, name: str, offset: int, data: bytes) -> None:
        """Add ``data`` at ``offset``, where the file ends."""

    def _held_now(self, key: str, upload_id: str) -> int:
        size = self._guard(lambda: self._size(upload_id), "resuming", key)
        if size is None:
            raise ObjectNotFound(f"{self.description}: resuming {key}: the partial file is gone")
        with self._lock:
            self._held[upload_id] = size
        return size  # type: ignore[no-any-return]

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        upload_id = super().create(key, content_type, metadata)
        with self._lock:
            self._held[upload_id] = 0
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    md5: bytes | None = None, total: int | None = None) -> str:
        """Append part ``number`` where the file ends; bytes it holds already are not sent
        again, a gap before the part is refused. Returns the part's MD5."""
        offset, end = (number - 1) * self.part_size, (number - 1) * self.part_size + len(data)
        with self._lock:
            held = self._held.get(upload_id)
        if held is None:
            held = self._held_now(key, upload_id)
        if held < offset:
            raise StoreError(f"{self.description}: writing part {number} of {key}: the "
                             f"partial file holds {held} bytes, the part starts at {offset}")
        if held < end:
            rest = bytes(memoryview(data)[held - offset:])
            try:
                self._guard(lambda: self._append(upload_id, held, rest),
                            f"writing part {number} of", key)
            except BaseException:
                with self._lock:
                    self._held.pop(upload_id, None)  # ask the server again next time
                raise
            with self._lock:
                self._held[upload_id] = end
        return (md5 or hashlib.md5(data).digest()).hex()

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str | None, int]]:
        self._held_now(key, upload_id)
        return super().list_parts(key, upload_id)

    def complete(self, key: str, upload_id: str, etags: list[str],
                 content_type: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> str:
        done = super().complete(key, upload_id, etags, content_type, metadata)
        with self._lock:
            self._held.pop(upload_id, None)
        return done

    def abort(self, key: str, upload_id: str) -> None:
        with self._lock:
            self._held.pop(upload_id, None)
        super().abort(key, upload_id)
