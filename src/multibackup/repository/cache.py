"""A local cache of the small, hot, immutable parts of a remote repository.

Index files, snapshots and tree packs are content-addressed (their name is the BLAKE3 of
their bytes) and never change, so a local copy is always valid and is verified against
its name on every read. With them cached, an incremental backup or a listing touches the
cloud for a handful of requests instead of one per directory. Data packs are not cached.
``check`` never uses the cache: it must see what the cloud really holds.
"""

from __future__ import annotations

import os
import tempfile

from multibackup.repository.crypto import storage_id


def default_cache_dir() -> str:
    env = os.environ.get("MULTIBACKUP_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "multibackup")


class Cache:
    """Files under ``<root>/<repository id>/`` named like the objects they copy."""

    def __init__(self, root: str, repo_id: str) -> None:
        self.dir = os.path.join(root, repo_id)

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, *key.split("/"))

    def get(self, key: str) -> bytes | None:
        """The cached object, or None when absent or damaged (then it is dropped)."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        if storage_id(data) != key.rsplit("/", 1)[-1]:
            try:
                os.unlink(path)
            except OSError:
                pass
            return None
        return data

    def put(self, key: str, data: bytes | bytearray) -> None:
        """Best effort: a cache that cannot be written only costs speed."""
        path = self._path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            pass

    def forget_missing(self, prefix: str, existing: set[str]) -> None:
        """Drop cached objects under ``prefix`` that the repository no longer has."""
        root = self._path(prefix.rstrip("/"))
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name not in existing:
                    try:
                        os.unlink(os.path.join(dirpath, name))
                    except OSError:
                        pass
