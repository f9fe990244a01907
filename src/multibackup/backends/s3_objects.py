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
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from multibackup.backends.location import Location, operator_config
from multibackup.backends.s3_rest import S3Rest, ca_bundle
from multibackup.errors import ObjectNotFound, StoreError

#: attribute names of the standard headers a copy carries; every other name is user metadata
STANDARD = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
            "Content-Type")
_HEADER_NAMES = {name.lower(): name for name in STANDARD}
_META = "x-amz-meta-"
_S3_ERROR = re.compile(rb"<Code>(?P<code>[^<]*)</Code>\s*<Message>(?P<message>[^<]*)</Message>")
_CODE = re.compile(rb"<Code>(?P<code>[^<]*)</Code>")
#: statuses worth another try: throttling and the server's own trouble
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_ATTEMPTS = 5  # the first and four more, over at most _RETRY_SECONDS
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
        https = self._rest.signed("GET")[0].startswith("https:")
        self._bundle = ca_bundle() if https else None

    def signed(self, method: str, key: str,
               headers: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """The URL of ``key`` (below the location's root) and the signed headers."""
        return self._rest.signed(method, self._root + key, None, headers)

    def _configure(self, curl: Any, req: _Request) -> None:
        """Set ``curl`` up for one attempt of ``req``, signed now."""
        pc = self._curl
        url, signed = self.signed(req.method, req.key, req.headers)
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
        req.chunks, req.lines = [], []
        curl.setopt(pc.WRITEFUNCTION, req.chunks.append)
        curl.setopt(pc.HEADERFUNCTION, req.lines.append)
        if req.method == "PUT":
            curl.setopt(pc.POSTFIELDS, req.body)  # sent from memory in one go
            curl.setopt(pc.POSTFIELDSIZE, len(req.body))
            curl.setopt(pc.CUSTOMREQUEST, "PUT")

    def _settle(self, req: _Request, status: int, error: Exception | None) -> float | None:
        """After one attempt: the seconds to wait before another (throttling, a server
        error, a broken connection), or None with ``req.result`` set, a StoreError for a
        failure (one line naming the action and key, never a credential)."""
        retry = error is not None or status in _RETRY_STATUS
        if retry and req.attempt < _ATTEMPTS and time.monotonic() < req.deadline:
            req.attempt += 1
            wait, req.delay = req.delay * (0.5 + random.random()), min(req.delay * 2, 5.0)
            return wait
        where = f"{self.description}: {req.action} {req.key}"
        body = b"".join(req.chunks)
        if error is not None:
            reason = error.args[1] if len(error.args) > 1 else str(error)
            req.result = StoreError(f"{where}: cannot reach the server "
                                    f"({' '.join(str(reason).split())[:200]})")
        elif status == 200:
            req.result = req.finish(_headers(req.lines), body)
        elif status == 404 and b"NoSuchBucket" in body:
            req.result = StoreError(f"{where}: the bucket does not exist "
                                    f"({_error_text(status, body)})")
        elif status == 404:
            req.result = ObjectNotFound(f"{where}: object not found")
        elif status == 412:
            req.result = StoreError(f"{where}: the object changed since it was listed")
        elif status in (401, 403):
            req.result = StoreError(f"{where}: access denied, check the credentials "
                                    f"({_error_text(status, body)})")
        else:
            req.result = StoreError(f"{where}: {_error_text(status, body)}")
        req.chunks = req.lines = []
        return None

    def _call(self, req: _Request) -> Any:
        """Send ``req`` from this thread, on its own handle; its result, or raise."""
        pc = self._curl
        curl = getattr(self._local, "curl", None)
        if curl is None:
            curl = self._local.curl = pc.Curl()
        while True:
            curl.reset()  # its connection stays open for the next request
            self._configure(curl, req)
            error: Exception | None = None
            try:
                curl.perform()
            except pc.error as exc:
                error = exc
            wait = self._settle(req, curl.getinfo(pc.RESPONSE_CODE) if error is None else 0,
                                error)
            if wait is None:
                if isinstance(req.result, StoreError):
                    raise req.result
                return req.result
            time.sleep(wait)

    def _get(self, key: str, etag: str | None) -> _Request:
        headers = {"if-match": f'"{etag.strip().strip(chr(34))}"'} if etag else {}
        return _Request("reading", "GET", key, headers, b"", _fetched)

    def _put(self, key: str, data: bytes, attributes: Mapping[str, str] | None) -> _Request:
        headers = {}
        for name, value in (attributes or {}).items():
            if name in STANDARD:
                headers[name.lower()] = value
            else:
                headers[_META + name.lower()] = value
        return _Request("writing", "PUT", key, headers, bytes(data), _written)

    def get(self, key: str, etag: str | None = None) -> Fetched:
        """The whole object, of version ``etag`` only when one is given (If-Match)."""
        return self._call(self._get(key, etag))  # type: ignore[no-any-return]

    def put(self, key: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Write ``data`` in one request; returns the ETag the server gave what it stored."""
        return self._call(self._put(key, data, attributes))  # type: ignore[no-any-return]


class _Request:
    """One request of :class:`S3Objects`, with its retry state and, once settled, its
    result: what ``finish`` makes of the headers and body of a 200, or a StoreError."""

    __slots__ = ("action", "method", "key", "headers", "body", "finish",
                 "attempt", "delay", "deadline", "chunks", "lines", "result")

    def __init__(self, action: str, method: str, key: str, headers: dict[str, str],
                 body: bytes, finish: Callable[[dict[str, str], bytes], Any]) -> None:
        self.action, self.method, self.key = action, method, key
        self.headers, self.body, self.finish = headers, body, finish
        self.attempt, self.delay = 1, 0.2
        self.deadline = time.monotonic() + _RETRY_SECONDS
        self.chunks: list[bytes] = []
        self.lines: list[bytes] = []
        self.result: Any = None


def _fetched(headers: dict[str, str], body: bytes) -> Fetched:
    attributes = {_HEADER_NAMES[name]: value for name, value in headers.items()
                  if name in _HEADER_NAMES}
    attributes.update((name[len(_META):], value) for name, value in headers.items()
                      if name.startswith(_META))
    return Fetched(body, headers.get("etag", "").strip('"'), attributes)


def _written(headers: dict[str, str], body: bytes) -> str:
    return headers.get("etag", "").strip('"')


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


def _error_text(status: int, body: bytes) -> str:
    """``Code: message`` of an S3 error reply, or its status."""
    match = _S3_ERROR.search(body)
    if match:
        message = " ".join(match["message"].decode("utf-8", "replace").split())
        return f"{match['code'].decode('utf-8', 'replace')}: {message}"
    match = _CODE.search(body)
    if match:
        return match["code"].decode("utf-8", "replace")
    return f"HTTP {status}"
