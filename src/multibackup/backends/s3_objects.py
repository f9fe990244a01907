"""Whole-object S3 reads and writes that keep what the plain store drops, for migrations.

Copying many small objects between buckets is bound by requests, not bytes. Through the
plain store each object costs four: a stat for its content type and metadata, the read,
the write, and a stat to verify what arrived. An S3 GET already answers with the
object's attributes and ETag, and a single-part PUT answers with the MD5 ETag of the body
the server stored, so two requests carry and prove the same. OpenDAL's Python API
returns neither, so these two requests go through obstore (Rust's object_store), which
does the I/O with the GIL released and returns both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from multibackup.backends.location import Location, operator_config
from multibackup.errors import ObjectNotFound, StoreError

#: attribute names obstore gives standard headers; every other name is user metadata
STANDARD = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
            "Content-Type")
_S3_ERROR = re.compile(r"<Code>(?P<code>[^<]*)</Code>\s*<Message>(?P<message>[^<]*)</Message>")
_UNREACHABLE = ("error sending request", "Connection refused", "dns error", "timed out",
                "connection closed", "certificate")


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


def store_config(location: Location,
                 credentials: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The S3Store keyword arguments for ``location`` (they contain secrets: never log).

    Built from the same options as the OpenDAL store, so both clients reach the same
    bucket with the same credentials. With virtual-hosted addressing object_store takes
    the endpoint as the bucket's own host, so the bucket is put in front of it here.
    """
    _, options = operator_config(location, credentials)
    virtual = options.get("enable_virtual_host_style") == "true"
    # the body is not hashed into the signature (as OpenDAL's S3 requests): TLS guards it
    # on the way, and the MD5 ETag of what was stored is checked against our own MD5
    config: dict[str, Any] = {"region": options["region"],
                              "virtual_hosted_style_request": virtual,
                              "unsigned_payload": True}
    endpoint = options.get("endpoint", "")
    if endpoint:
        if virtual:
            parts = urlsplit(endpoint)
            endpoint = urlunsplit(parts._replace(netloc=f"{options['bucket']}.{parts.netloc}"))
        config["endpoint"] = endpoint.rstrip("/")
    if options.get("allow_anonymous") == "true":
        config["skip_signature"] = True
    else:
        config["access_key_id"] = options["access_key_id"]
        config["secret_access_key"] = options["secret_access_key"]
        if options.get("session_token"):
            config["session_token"] = options["session_token"]
    return {"bucket": options["bucket"], "prefix": options["root"].strip("/") or None,
            "config": config,
            "client_options": {"allow_http": endpoint.startswith("http://"),
                               "connect_timeout": "15s", "timeout": "300s"}}


def handles(key: str) -> bool:
    """True for keys object_store takes as they are. It refuses empty, ``.`` and ``..``
    segments and control characters, and it turns a backslash into ``/``, which would
    write another key: such objects go through the plain store instead."""
    if not key or key[0] == "/" or key[-1] == "/" or "\\" in key:
        return False
    if any(ord(c) < 0x20 or c == "\x7f" for c in key):
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


class S3Objects:
    """GET and PUT of whole objects below one bucket and prefix, with attributes and ETags.

    Only for keys that :func:`handles`; the caller sends any other through the store.
    """

    def __init__(self, location: Location, credentials: Mapping[str, str] | None = None) -> None:
        from obstore.store import S3Store

        self.description = location.describe()
        kwargs = store_config(location, credentials)
        config = kwargs.pop("config")
        self._secrets = sorted((str(v) for k, v in config.items()
                                if k in ("access_key_id", "secret_access_key", "session_token")),
                               key=len, reverse=True)
        try:
            self._store = S3Store(**kwargs, **config, retry_config={
                "max_retries": 4, "retry_timeout": timedelta(seconds=60),
                "backoff": {"init_backoff": timedelta(milliseconds=200),
                            "max_backoff": timedelta(seconds=5), "base": 2.0}})
        except Exception as exc:
            raise StoreError(f"{self.description}: invalid configuration: "
                             f"{self._one_line(exc)}") from None

    def _one_line(self, exc: Exception) -> str:
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        match = _S3_ERROR.search(text)
        if match:
            return f"{match['code']}: {' '.join(match['message'].split())}"
        first = text.splitlines()[0] if text else type(exc).__name__
        return first.split(" - ", 1)[-1].strip() or first

    def _error(self, exc: Exception, action: str, key: str) -> StoreError:
        from obstore import exceptions as oe

        where = f"{self.description}: {action} {key}"
        message = self._one_line(exc)
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFound(f"{where}: object not found")
        if isinstance(exc, oe.PreconditionError):
            return StoreError(f"{where}: the object changed since it was listed")
        if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError):
            return StoreError(f"{where}: access denied, check the credentials ({message})")
        if "NoSuchBucket" in message:
            return StoreError(f"{where}: the bucket does not exist ({message})")
        if any(marker in str(exc) for marker in _UNREACHABLE):
            return StoreError(f"{where}: cannot reach the server ({message})")
        return StoreError(f"{where}: {message}")

    def get(self, key: str, etag: str | None = None) -> Fetched:
        """The whole object, of version ``etag`` only when one is given (If-Match)."""
        import obstore

        options: dict[str, Any] = {}
        if etag:
            options["if_match"] = f'"{etag.strip().strip(chr(34))}"'
        try:
            reply = obstore.get(self._store, key, options=options)
            data = bytes(reply.bytes())
        except Exception as exc:
            raise self._error(exc, "reading", key) from None
        return Fetched(data, (reply.meta.get("e_tag") or "").strip('"'),
                       {str(k): str(v) for k, v in reply.attributes.items()})

    def put(self, key: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Write ``data`` in one request; returns the ETag the server gave what it stored."""
        import obstore

        try:
            reply = obstore.put(self._store, key, data, attributes=dict(attributes or {}),
                                use_multipart=False)
        except Exception as exc:
            raise self._error(exc, "writing", key) from None
        return (reply.get("e_tag") or "").strip('"')
