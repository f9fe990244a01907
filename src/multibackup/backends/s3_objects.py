"""Whole-object S3 reads and writes that keep what the plain store drops, for migrations.

Copying many small objects between buckets is bound by requests, not bytes. Through the
plain store each object costs four: a stat for its content type and metadata, the read,
the write, and a stat to verify what arrived. An S3 GET already answers with the
object's attributes and ETag, and a single-part PUT answers with the MD5 ETag of the body
the server stored, so two requests carry and prove the same. OpenDAL's Python API
returns neither, so these two requests are signed here (``S3Rest.signed``) and sent
through libcurl (pycurl), which does the I/O with the GIL released. A GET and a PUT of
10 KiB from 8 threads cost this client about 0.7 CPU-ms, a fifth less than through
object_store (obstore, whose runtime threads are woken for each request) and under half
of urllib3's. (One thread driving all requests through libcurl's multi interface took a
further fifth less CPU, but it finished later: every reply waited its turn there.)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multibackup.backends.location import Location, operator_config
from multibackup.backends.s3_rest import ATTEMPTS, RETRY_STATUS, Reply, S3Rest, ca_bundle
from multibackup.errors import ObjectNotFound, StoreError

#: attribute names of the standard headers a copy carries; every other name is user metadata
STANDARD = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
            "Content-Type")
_HEADER_NAMES = {name.lower(): name for name in STANDARD}
_META = "x-amz-meta-"
#: retries (``s3_rest.ATTEMPTS`` tries in all) end this long after the first try
_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class Fetched:
    """One object read whole: its bytes, the ETag they belong to and its attributes."""

    data: bytes
    etag: str
    #: content type, the other standard headers (``STANDARD``) and user metadata
    attributes: dict[str, str]


def attributes_from(content_type: str | None, metadata: Mapping[str, str]) -> dict[str, str]:
    """The attributes a PUT takes for a content type and user metadata."""
    out = dict(metadata)
    if content_type:
        out["Content-Type"] = content_type
    return out


def split_attributes(attributes: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """(content type, user metadata) of ``attributes``, as the plain stores take them;
    the other standard headers have no place there and are left out."""
    return (attributes.get("Content-Type"),
            {k: v for k, v in attributes.items() if k not in STANDARD})


def handles(key: str) -> bool:
    """True for keys these requests send as they are. A path with empty, ``.`` or ``..``
    segments may be cleaned on its way (by proxies, HTTP routers, some S3 servers), and
    some servers take a backslash for ``/``, which would write another key: such objects
    go through the plain store instead. Control characters are percent-encoded."""
    if not key or key[0] == "/" or key[-1] == "/" or "\\" in key:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


class S3Objects:
    """GET and PUT of whole objects below one bucket and prefix, with attributes and ETags.

    Only for keys that :func:`handles`; the caller sends any other through the store.
    Each thread gets its own libcurl handle, which keeps its connection open.
    """

    def __init__(self, location: Location, credentials: Mapping[str, str] | None = None) -> None:
        import pycurl

        self.description = location.describe()
        _, options = operator_config(location, credentials)
        self._rest = S3Rest(options)
        root = options["root"].strip("/")
        self._root = f"{root}/" if root else ""
        self._local = threading.local()
        self._curl = pycurl
        self._bundle = ca_bundle() if self._rest.scheme == "https" else None

    def signed(self, method: str, key: str,
               headers: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """The URL of ``key`` (below the location's root) and the signed headers."""
        return self._rest.signed(method, self._root + key, None, headers)

    def _configure(self, curl: Any, method: str, key: str, headers: Mapping[str, str],
                   body: bytes, chunks: list[bytes], lines: list[bytes]) -> None:
        """Set ``curl`` up for one try of a request, signed now; the reply's body goes
        into ``chunks`` and its header lines into ``lines``."""
        pc = self._curl
        url, signed = self.signed(method, key, headers)
        curl.setopt(pc.NOSIGNAL, 1)
        curl.setopt(pc.CONNECTTIMEOUT, 15)
        curl.setopt(pc.TIMEOUT, 300)
        curl.setopt(pc.PATH_AS_IS, 1)  # the signed path, not one with dot segments resolved
        curl.setopt(pc.FOLLOWLOCATION, 0)
        if self._bundle:
            curl.setopt(pc.CAINFO, self._bundle)
        curl.setopt(pc.URL, url)
        # an empty Expect: no 100-continue round trip before a small body
        sent = [f"{k}: {v}".encode() for k, v in signed.items() if k != "host"]
        sent.append(b"Expect:")
        if "content-type" not in signed:  # not libcurl's form type for a body
            sent.append(b"Content-Type:")
        curl.setopt(pc.HTTPHEADER, sent)
        curl.setopt(pc.WRITEFUNCTION, chunks.append)
        curl.setopt(pc.HEADERFUNCTION, lines.append)
        if method == "PUT":
            curl.setopt(pc.POSTFIELDS, body)  # sent from memory in one go
            curl.setopt(pc.POSTFIELDSIZE, len(body))
            curl.setopt(pc.CUSTOMREQUEST, "PUT")

    def _request(self, action: str, method: str, key: str, headers: Mapping[str, str],
                 body: bytes = b"") -> tuple[dict[str, str], bytes]:
        """One request from this thread, on its own handle, tried again (signed anew)
        after throttling, a server error or a broken connection: the headers (lower-case
        names) and body of its 200. Any failure is a StoreError of one line naming
        ``action`` and ``key``, never a credential."""
        pc = self._curl
        curl = getattr(self._local, "curl", None)
        if curl is None:
            curl = self._local.curl = pc.Curl()
        delay, deadline = 0.2, time.monotonic() + _RETRY_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            chunks: list[bytes] = []
            lines: list[bytes] = []
            curl.reset()  # its connection stays open for the next request
            self._configure(curl, method, key, headers, body, chunks, lines)
            error: Exception | None = None
            try:
                curl.perform()
                status = curl.getinfo(pc.RESPONSE_CODE)
            except pc.error as exc:
                error, status = exc, 0
            last = attempt == ATTEMPTS or time.monotonic() >= deadline
            if (error is not None or status in RETRY_STATUS) and not last:
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            break
        where = f"{self.description}: {action} {key}"
        if error is not None:
            reason = error.args[1] if len(error.args) > 1 else str(error)
            raise StoreError(f"{where}: cannot reach the server "
                             f"({' '.join(str(reason).split())[:200]})")
        data = b"".join(chunks)
        if status == 200:
            return _headers(lines), data
        code, message = Reply(status, {}, data).error()
        text = f"{code}: {' '.join(message.split())}" if message else code
        if status == 404 and code == "NoSuchBucket":
            raise StoreError(f"{where}: the bucket does not exist ({text})")
        if status == 404:
            raise ObjectNotFound(f"{where}: object not found")
        if status == 412:
            raise StoreError(f"{where}: the object changed since it was listed")
        if status in (401, 403):
            raise StoreError(f"{where}: access denied, check the credentials ({text})")
        raise StoreError(f"{where}: {text}")

    def get(self, key: str, etag: str | None = None) -> Fetched:
        """The whole object, of version ``etag`` only when one is given (If-Match)."""
        headers = {"if-match": f'"{etag.strip().strip(chr(34))}"'} if etag else {}
        got, data = self._request("reading", "GET", key, headers)
        attributes = {_HEADER_NAMES[name]: value for name, value in got.items()
                      if name in _HEADER_NAMES}
        attributes.update((name[len(_META):], value) for name, value in got.items()
                          if name.startswith(_META))
        return Fetched(data, got.get("etag", "").strip('"'), attributes)

    def put(self, key: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Write ``data`` in one request; returns the ETag the server gave what it stored."""
        headers = {(name.lower() if name in STANDARD else _META + name.lower()): value
                   for name, value in (attributes or {}).items()}
        got, _ = self._request("writing", "PUT", key, headers, bytes(data))
        return got.get("etag", "").strip('"')


def _headers(lines: list[bytes]) -> dict[str, str]:
    """The last response's headers (after any interim 1xx), lower-case names."""
    out: dict[str, str] = {}
    for raw in lines:
        if raw.startswith(b"HTTP/"):
            out = {}
            continue
        name, sep, value = raw.partition(b":")
        if sep:
            try:
                text = value.strip().decode()
            except UnicodeDecodeError:
                text = value.strip().decode("latin-1")
            out[name.strip().decode("latin-1").lower()] = text
    return out
