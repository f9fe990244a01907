"""Resumable large-object writes for SFTP and local disk: parts are written at their fixed
offsets, in parallel, into ``<root>/.tmp/migrate-<id>.part`` (see
:mod:`multibackup.backends.partial_file`).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from multibackup.backends.local_paths import make_parents
from multibackup.backends.partial_file import PartialFile
from multibackup.backends.sftp_store import TMP_DIR, SFTPStore


class LocalPartial(PartialFile):
    """Resumable writes below a local directory (``root``)."""

    def __init__(self, root: str, part_size: int) -> None:
        super().__init__(part_size)
        self.root = root
        self.description = root
        self._tmp = os.path.join(root, ".tmp")

    def _check_target(self, key: str) -> None:
        """A directory where the file goes, or a file where a directory must be: found
        before the transfer, not when the finished file is renamed into place."""
        target = os.path.join(self.root, *key.split("/"))
        if os.path.isdir(target):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        parent = os.path.dirname(target)
        while len(parent) > len(self.root) and not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))

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
        try:
            make_parents(target)
            os.replace(path, target)
        except (IsADirectoryError, NotADirectoryError):
            # another object's directory took the place (or a file took a directory's):
            # no rerun can finish this file, so it does not stay behind
            os.unlink(path)
            raise

    def _remove(self, name: str) -> None:
        os.unlink(os.path.join(self._tmp, name))


class SFTPPartial(PartialFile):
    """Resumable writes into an SFTP store's temp directory, over its connection pool."""

    def __init__(self, store: SFTPStore, part_size: int) -> None:
        super().__init__(part_size)
        self.store = store
        self.description = store.description
        self._tmp = posixpath.join(store.root, TMP_DIR)

    def _check_target(self, key: str) -> None:
        """As :meth:`LocalPartial._check_target`, over the connection: a stat of the key
        and of its parents up to the first that exists."""
        target = posixpath.join(self.store.root, key)
        with self.store.session("writing", key) as sftp:
            path = target
            while len(path) > len(self.store.root):
                try:
                    mode = sftp.stat(path).st_mode or 0
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                    path = posixpath.dirname(path)
                    continue
                if path == target and stat.S_ISDIR(mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                if path != target and not stat.S_ISDIR(mode):
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
                return

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
        partial = posixpath.join(self._tmp, name)
        with self.store.session("writing", key) as sftp:
            try:
                self.store.ensure_dir(sftp, posixpath.dirname(target))
                sftp.posix_rename(partial, target)
            except OSError:
                try:
                    in_the_way = stat.S_ISDIR(sftp.stat(target).st_mode or 0)
                except OSError:
                    in_the_way = False
                if not in_the_way:
                    raise
                # another object's directory took the place: no rerun can finish this file
                sftp.remove(partial)
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)) from None

    def _remove(self, name: str) -> None:
        with self.store.session("deleting", name) as sftp:
            sftp.remove(posixpath.join(self._tmp, name))
