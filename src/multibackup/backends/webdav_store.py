"""WebDAV store: OpenDAL for everything but streamed writes, which go as one streamed PUT.

WebDAV has no multipart upload, and OpenDAL's WebDAV writer takes an object in one
request only, so it must hold the object whole in memory. A streamed write here sends
the chunks as the body of a single PUT (with Content-Length when the size is known) to
a temporary name below ``.tmp/``, then MOVEs it onto the key: a killed process leaves
no truncated object at the key, only a temporary file that a later write never reuses.

Some servers (Apache's mod_dav) also take a PUT with ``Content-Range``, which writes into
an existing file at an offset: there :class:`WebDAVPartial` appends a large object's
parts to a temporary file, so a killed migration resumes in the middle of the object.
Others ignore the header and would replace the whole file with the part, so
:meth:`WebDAVStore.takes_ranged_puts` tries it on a file of its own first.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from multibackup.backends.opendal_store import OpenDALStore
from multibackup.backends.partial_file import AppendedFile
from multibackup.errors import ObjectExists, ObjectNotFound, StorageFull, StoreError

#: where streamed writes are put together before they are moved onto their key
TMP_DIR = ".tmp"


class WebDAVStore(OpenDALStore):
    """An OpenDAL WebDAV store whose ``put_stream`` streams instead of buffering."""

    def __init__(self, description: str, retries: int = 4, **options: str) -> None:
        super().__init__("webdav", description, retries=retries, **options)
        #: True: put_stream streams (one PUT whose body is the chunks)
        self.writes_multi = True
        self._endpoint = options["endpoint"].rstrip("/")
        #: path segments of the root below the endpoint, which MKCOL makes too
        self._root = [p for p in options.get("root", "/").split("/") if p]
        self._headers: dict[str, str] = {}
        if options.get("username"):
            pair = f"{options['username']}:{options.get('password', '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._pool: Any = None
        self._collections: set[str] = set()
        self._ranged: bool | None = None

    def _url(self, path: str, *, from_endpoint: bool = False) -> str:
        """URL of ``path`` below the root (or below the endpoint, ``from_endpoint``)."""
        segments = ([] if from_endpoint else self._root) + [path]
        return f"{self._endpoint}/{quote('/'.join(segments))}"

    def _request(self, method: str, path: str, action: str, key: str, *,
                 headers: dict[str, str] | None = None, body: Any = None,
                 ok: tuple[int, ...] = (200, 201, 204), from_endpoint: bool = False) -> int:
        """One request; its status, or a one-line StoreError naming ``action`` on ``key``."""
        import urllib3

        if self._pool is None:
            self._pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(
                connect=15, read=300))
        where = f"{self.description}: {action} {key}"
        try:
            reply = self._pool.request(method, self._url(path, from_endpoint=from_endpoint),
                                       body=body,
                                       headers={**self._headers, **(headers or {})},
                                       preload_content=True, redirect=False)
        except StoreError:
            raise
        except urllib3.exceptions.HTTPError as exc:
            text = self._scrub(" ".join(str(exc).split()))
            raise StoreError(f"{where}: cannot reach the server ({text})") from None
        if reply.status in ok:
            return int(reply.status)
        if reply.status in (401, 403):
            raise StoreError(f"{where}: access denied, check the credentials "
                             f"(HTTP {reply.status})")
        if reply.status == 507:
            raise StorageFull(f"{where}: no space left on the destination")
        if reply.status == 412:
            raise ObjectExists(f"{where}: object already exists")
        raise StoreError(f"{where}: HTTP {reply.status} {reply.reason or ''}".rstrip())

    def _collection(self, path: str, key: str) -> None:
        """Make sure collection ``path`` below the root exists, and every collection above
        it up to the endpoint (MKCOL, parents first; a new root may not exist yet)."""
        parts = self._root + [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub in self._collections:
                continue
            # 201: made; 405: it exists already
            self._request("MKCOL", sub + "/", "creating the folder of", key, ok=(201, 405),
                          from_endpoint=True)
            self._collections.add(sub)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, create_only: bool = False,
                   part_size: int = 16 << 20, content_type: str | None = None,
                   user_metadata: dict[str, str] | None = None,
                   size: int | None = None) -> int:
        """Stream ``chunks`` into ``key`` through a temporary file; returns the size.

        WebDAV keeps neither content type nor metadata, so those are ignored. With
        ``create_only`` the MOVE is refused when the key exists (``Overwrite: F``). If
        ``chunks`` raises, the temporary file is deleted and nothing reaches the key.
        """
        if create_only and self.exists(key):
            raise ObjectExists(f"{self.description}: writing {key}: object already exists")
        temp = f"{TMP_DIR}/upload-{uuid.uuid4().hex}"
        self._collection(TMP_DIR, key)
        sent = 0

        def body() -> Iterable[bytes]:
            nonlocal sent
            for chunk in chunks:
                sent += len(chunk)
                yield chunk

        # without a known size urllib3 sends the body chunked (Transfer-Encoding)
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        try:
            self._request("PUT", temp, "writing", key, headers=headers, body=body())
            if size is not None and sent != size:
                raise StoreError(f"{self.description}: writing {key}: sent {sent} bytes, "
                                 f"expected {size}")
            self.move(temp, key, overwrite=not create_only)
        except BaseException:
            try:
                self._request("DELETE", temp, "removing the temporary file of", key,
                              ok=(200, 204, 404))
            except StoreError:
                pass
            raise
        return sent

    def sweep_temporary(self, older_than: float) -> int:
        """Delete streamed uploads (``.tmp/upload-*``) that a killed process left behind
        more than ``older_than`` seconds ago; returns how many went."""
        cutoff_ns = int((time.time() - older_than) * 1e9)
        removed = 0
        try:
            leftovers = [o for o in self.list(f"{TMP_DIR}/")
                         if o.key.startswith(f"{TMP_DIR}/upload-")
                         and (o.mtime_ns or 0) <= cutoff_ns]
        except StoreError:
            return 0
        for o in leftovers:
            try:
                self.delete(o.key)
                removed += 1
            except StoreError:
                continue
        return removed

    def takes_ranged_puts(self) -> bool:
        """True when the server writes a PUT with ``Content-Range`` into the existing file
        at that offset (RFC 9110 lets a server refuse it, and some ignore it and replace
        the file): tried once, on a temporary file of its own."""
        if self._ranged is None:
            probe = f"{TMP_DIR}/probe-{uuid.uuid4().hex}"
            head, tail = b"multibackup", b" ranged put"
            try:
                self._collection(TMP_DIR, probe)
                self._request("PUT", probe, "writing", probe, body=head)
                try:
                    self.put_at(probe, len(head), tail)
                    self._ranged = bytes(self.get(probe)) == head + tail
                finally:
                    self._request("DELETE", probe, "removing", probe, ok=(200, 204, 404))
            except StoreError:
                self._ranged = False
        return self._ranged

    def put_at(self, key: str, offset: int, data: bytes) -> None:
        """Write ``data`` into the existing file ``key`` at ``offset`` (one ranged PUT; only
        where :meth:`takes_ranged_puts`)."""
        end = offset + len(data) - 1
        self._request("PUT", key, "writing", key, body=data, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {offset}-{end}/*"})

    def move(self, source: str, key: str, *, overwrite: bool = True) -> None:
        """Rename ``source`` onto ``key``, its folder made if need be; an existing ``key``
        is replaced, or (not ``overwrite``) the move refused (412: ObjectExists)."""
        if "/" in key:
            self._collection(key.rsplit("/", 1)[0], key)
        self._request("MOVE", source, "writing", key, headers={
            "Destination": self._url(key), "Overwrite": "T" if overwrite else "F"})


class WebDAVPartial(AppendedFile):
    """Resumable large-object writes into a WebDAV server that takes ranged PUTs: the parts
    are appended, in order, to ``.tmp/migrate-<id>.part``, which is moved onto the key when
    complete; a rerun asks the file's size and sends only what is missing."""

    def __init__(self, store: WebDAVStore, part_size: int) -> None:
        super().__init__(part_size)
        self.store = store
        self.description = store.description

    def usable(self) -> bool:
        """Whether the server takes ranged PUTs (else large objects are streamed whole)."""
        return self.store.takes_ranged_puts()

    def _tmp(self, name: str) -> str:
        return f"{TMP_DIR}/{name}"

    def _create(self, name: str) -> None:
        self.store._collection(TMP_DIR, name)
        self.store._request("PUT", self._tmp(name), "writing", name, body=b"")

    def _append(self, name: str, offset: int, data: bytes) -> None:
        self.store.put_at(self._tmp(name), offset, data)

    def _size(self, name: str) -> int | None:
        try:
            return self.store.stat(self._tmp(name)).size
        except ObjectNotFound:
            return None

    def _commit(self, name: str, key: str) -> None:
        self.store.move(self._tmp(name), key)

    def _remove(self, name: str) -> None:
        self.store._request("DELETE", self._tmp(name), "removing", name, ok=(200, 204, 404))
