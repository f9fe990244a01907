"""Resumable uploads of large objects to Google Cloud Storage, for migrations.

GCS has no numbered parts. A resumable upload session (a URI the service hands out, valid
for a week) takes the object's bytes in order, in chunks of a multiple of 256 KiB, and
tells how many it has persisted; the object appears only when the last byte and the total
size are in. The session URI is the upload id the migration journal keeps: a migration
killed in the middle of an object asks the session how far it got and sends only the
rest. Parts therefore go one at a time (``parts_at_once``). Within one account, objects
are copied by the service (``rewrite``) instead. OpenDAL's GCS writer uses such
a session too but never names it, so this speaks the JSON API itself, with google-auth
for the tokens. Errors become one line, without secrets and without the session URI,
which lets anyone holding it write that object.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from multibackup.backends.base import ObjectInfo
from multibackup.backends.location import Location, operator_config
from multibackup.errors import ObjectNotFound, StoreError

GCS_ENDPOINT = "https://storage.googleapis.com"
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_RANGE = re.compile(r"^bytes=0-(\d+)$")
#: the service refuses chunks (other than the last) that are not a multiple of this
GRANULE = 256 << 10


def _credentials(info: Any) -> Any:
    """google-auth credentials of a service account key or a user's refresh token (what
    ``gcloud auth application-default login`` writes): the two kinds OpenDAL takes too."""
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(info, scopes=_SCOPES)
    if kind == "authorized_user":
        from google.oauth2 import credentials

        return credentials.Credentials.from_authorized_user_info(info, scopes=_SCOPES)
    raise ValueError(f"credential type {kind!r} is not supported")


class GcsResumable:
    """Resumable uploads below one bucket and prefix; the PartsTarget of a GCS side."""

    #: a session takes its bytes in order: one part in flight per object
    parts_at_once = 1

    def __init__(self, location: Location, part_size: int,
                 credentials: Mapping[str, str] | None = None) -> None:
        if part_size % GRANULE:
            raise ValueError(f"GCS parts must be a multiple of {GRANULE} bytes")
        _, options = operator_config(location, credentials)
        self.description = location.describe()
        self.part_size = part_size
        self._bucket = options["bucket"]
        self._root = options["root"].strip("/")
        self._endpoint = (options.get("endpoint") or GCS_ENDPOINT).rstrip("/")
        self._options = options
        self._session: Any = None
        self._lock = threading.Lock()
        #: bytes each session is known to hold, from its last answer
        self._persisted: dict[str, int] = {}
        #: sessions found complete, with their object's ETag
        self._done: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------------------

    def _http(self) -> Any:
        """An HTTP session that signs with the configured credential (made on first use)."""
        with self._lock:
            if self._session is None:
                self._session = self._new_session()
            return self._session

    def _new_session(self) -> Any:
        import requests
        from google.auth.transport.requests import AuthorizedSession

        o = self._options
        info: Any = None
        try:
            if o.get("credential"):
                info = json.loads(base64.b64decode(o["credential"]))
            elif o.get("credential_path"):
                with open(o["credential_path"], encoding="utf-8") as fh:
                    info = json.load(fh)
            creds = None if info is None else _credentials(info)
        except (OSError, ValueError) as exc:
            # google-auth's and json's messages name fields and positions, never values;
            # anything that looks like key material is dropped all the same
            reason = " ".join(str(exc).split())[:160]
            if not reason or "KEY" in reason.upper() and "-----" in reason:
                reason = type(exc).__name__
            raise StoreError(f"{self.description}: the GCS credential cannot be used "
                             f"({reason})") from None
        # None: a public bucket; the service will refuse writes, and say so
        session = requests.Session() if creds is None else AuthorizedSession(creds)
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=32, max_retries=2)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _name(self, key: str) -> str:
        return f"{self._root}/{key}" if self._root else key

    def _send(self, method: str, url: str, action: str, key: str, **kwargs: Any) -> Any:
        """One request; transport and auth failures become a one-line StoreError."""
        import requests

        try:
            return self._http().request(method, url, timeout=(15, 300), **kwargs)
        except StoreError:
            raise
        except requests.RequestException as exc:
            reason = type(exc).__name__
            if isinstance(exc, requests.ConnectionError):
                reason = "cannot reach the server"
            raise StoreError(f"{self.description}: {action} {key}: {reason}") from None
        except Exception as exc:  # google-auth's refresh errors, and the like
            raise StoreError(f"{self.description}: {action} {key}: "
                             f"{type(exc).__name__}") from None

    def _error(self, response: Any, action: str, key: str,
               gone: str = "the upload session is gone") -> StoreError:
        try:
            message = str(response.json()["error"]["message"])
        except Exception:
            message = response.reason or ""
        message = " ".join(message.split())[:200]
        where = f"{self.description}: {action} {key}"
        status = response.status_code
        if status in (404, 410):
            return ObjectNotFound(f"{where}: {gone} (HTTP {status})")
        if status in (401, 403):
            return StoreError(f"{where}: access denied, check the credentials (HTTP {status})")
        return StoreError(f"{where}: HTTP {status} {message}".rstrip())

    def _held(self, response: Any) -> int:
        """Bytes persisted, from a 308's Range header (none: nothing yet)."""
        found = _RANGE.match(response.headers.get("Range", ""))
        return int(found.group(1)) + 1 if found else 0

    # -- the PartsTarget interface -------------------------------------------------------

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        """Open a session for ``key``; content type and metadata are given now."""
        name = self._name(key)
        resource: dict[str, Any] = {"name": name}
        if content_type:
            resource["contentType"] = content_type
        if metadata:
            resource["metadata"] = dict(metadata)
        url = (f"{self._endpoint}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o"
               f"?uploadType=resumable&name={quote(name, safe='')}")
        response = self._send("POST", url, "starting an upload of", key, json=resource)
        session = response.headers.get("Location", "")
        if response.status_code != 200 or not session:
            raise self._error(response, "starting an upload of", key)
        with self._lock:
            self._persisted[session] = 0
        return session

    def _query(self, key: str, upload_id: str) -> int:
        """Bytes the session holds; a session already complete (a kill after its last
        part) holds them all, and its object's ETag is kept for :meth:`complete`."""
        response = self._send("PUT", upload_id, "resuming", key,
                              headers={"Content-Range": "bytes */*", "Content-Length": "0"})
        if response.status_code in (200, 201):
            held = self._finished(upload_id, response)
        elif response.status_code == 308:
            held = self._held(response)
        else:
            raise self._error(response, "resuming", key)
        with self._lock:
            self._persisted[upload_id] = held
        return held

    def _finished(self, upload_id: str, response: Any) -> int:
        try:
            resource = response.json()
            size, etag = int(resource["size"]), str(resource.get("etag") or "")
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.description}: the service's answer to a finished "
                             "upload is malformed") from None
        with self._lock:
            self._done[upload_id] = etag
        return size

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    md5: bytes | None = None, total: int | None = None) -> str:
        """Send part ``number`` (1-based) from wherever the session stands; returns the
        MD5 of the part. Bytes the session holds already (a kill after the service took
        them) are not sent again. Every part but the last is a multiple of 256 KiB, as
        the service requires; the last one (ending at ``total``) carries the size, and
        the object appears."""
        offset, end = (number - 1) * self.part_size, (number - 1) * self.part_size + len(data)
        last = total is not None and end >= total
        with self._lock:
            held = self._persisted.get(upload_id)
        if held is None:
            held = self._query(key, upload_id)
        action = f"writing part {number} of"
        while held < end:
            if held < offset:
                raise StoreError(f"{self.description}: {action} {key}: the upload holds "
                                 f"{held} bytes, the part starts at {offset}")
            size = f"{total}" if last else "*"
            response = self._send("PUT", upload_id, action, key,
                                  data=memoryview(data)[held - offset:],
                                  headers={"Content-Range": f"bytes {held}-{end - 1}/{size}"})
            if last and response.status_code in (200, 201):
                now = self._finished(upload_id, response)
            elif response.status_code == 308:
                now = self._held(response)
            else:
                with self._lock:
                    self._persisted.pop(upload_id, None)  # ask again before the next try
                raise self._error(response, action, key)
            if now <= held:  # the service kept none of it: never loop forever
                raise StoreError(f"{self.description}: {action} {key}: the service kept "
                                 "none of the bytes sent")
            held = now
            with self._lock:
                self._persisted[upload_id] = held
        return (md5 or hashlib.md5(data).digest()).hex()

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str | None, int]]:
        """The whole parts the session holds (all of them once it is complete). GCS keeps
        no checksum of a part, so no ETag (None): the finished object is read back and
        compared part by part."""
        held = self._query(key, upload_id)
        with self._lock:
            done = upload_id in self._done
        parts = {n: (None, self.part_size) for n in range(1, held // self.part_size + 1)}
        if done and held % self.part_size:
            parts[len(parts) + 1] = (None, held % self.part_size)
        return parts

    def complete(self, key: str, upload_id: str, etags: list[str],
                 content_type: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> str:
        """The object's ETag. The last part completed the session already; an object that
        ended on a part boundary with no size known yet gets it now (every byte is in)."""
        with self._lock:
            held = self._persisted.pop(upload_id, None)
            etag = self._done.pop(upload_id, None)
        if etag is not None:
            return etag
        if held is None:
            held = self._query(key, upload_id)
            with self._lock:
                self._persisted.pop(upload_id, None)
                etag = self._done.pop(upload_id, None)
            if etag is not None:
                return etag
        response = self._send("PUT", upload_id, "completing", key,
                              headers={"Content-Range": f"bytes */{held}",
                                       "Content-Length": "0"})
        if response.status_code not in (200, 201):
            raise self._error(response, "completing", key)
        try:
            return str(response.json().get("etag") or "")
        except ValueError:
            return ""

    def abort(self, key: str, upload_id: str) -> None:
        """Cancel the session (the service answers 499); it expires on its own anyway."""
        with self._lock:
            self._persisted.pop(upload_id, None)
            self._done.pop(upload_id, None)
        try:
            self._send("DELETE", upload_id, "cancelling the upload of", key,
                       headers={"Content-Length": "0"})
        except StoreError:
            pass

    # -- server-side copy --------------------------------------------------------------------

    def same_account(self, other: object) -> bool:
        """True when a copy from ``other`` can stay inside the service: the same endpoint
        and the same credential (which must be able to read the source)."""
        if not isinstance(other, GcsResumable):
            return False
        names = ("credential", "credential_path", "skip_signature")
        return self._endpoint == other._endpoint and all(
            self._options.get(n) == other._options.get(n) for n in names)

    def _object_url(self, bucket: str, name: str) -> str:
        return (f"{self._endpoint}/storage/v1/b/{quote(bucket, safe='')}/o/"
                f"{quote(name, safe='')}")

    def copy_from(self, source: GcsResumable, info: ObjectInfo) -> str:
        """Rewrite the object inside the service (bytes, content type and metadata), only
        from the generation that still has the listed ETag; then check the copy's size
        and MD5 against the source's. Returns the new object's ETag."""
        action, key = "copying (server-side)", info.key
        src_url = source._object_url(source._bucket, source._name(key))
        response = self._send("GET", src_url, action, key)
        if response.status_code != 200:
            raise self._error(response, action, key, gone="the source object is gone")
        src = response.json()
        if info.etag and src.get("etag") and src["etag"] != info.etag:
            raise StoreError(f"{source.description}: {key}: changed since it was listed")
        url = (f"{src_url}/rewriteTo/b/{quote(self._bucket, safe='')}/o/"
               f"{quote(self._name(key), safe='')}")
        params: dict[str, str] = {"ifSourceGenerationMatch": str(src.get("generation", ""))}
        while True:
            response = self._send("POST", url, action, key, params=params, json={})
            if response.status_code != 200:
                raise self._error(response, action, key, gone="the source object is gone")
            doc = response.json()
            if doc.get("done", True) and "resource" in doc:
                copied = doc["resource"]
                break
            params["rewriteToken"] = str(doc["rewriteToken"])  # a large object: go on
        if int(copied.get("size", -1)) != info.size or (
                src.get("md5Hash") and copied.get("md5Hash") != src["md5Hash"]):
            raise StoreError(f"{self.description}: {action} {key}: the copy holds "
                             f"{copied.get('size')} bytes, or another MD5, than the source")
        return str(copied.get("etag") or "")
