"""Turn a repository location string into an ObjectStore.

Accepted forms (restic users will recognise most):

- ``/srv/backup``, ``./repo``, ``local:/srv/backup``, ``file:///srv/backup`` - local disk
- ``s3://bucket/prefix`` - S3-compatible; endpoint from ``--s3-endpoint`` or ``AWS_ENDPOINT_URL``
- ``s3:https://host:port/bucket/prefix`` - S3 with the endpoint in the location
- ``memory://name`` - in-process memory (tests)

Credentials are never part of the location string: they come from the standard AWS
environment variables, so they never reach the process list.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from multibackup.backends.base import ObjectStore
from multibackup.backends.opendal_store import OpenDALStore
from multibackup.errors import UsageError


@dataclass(frozen=True)
class Location:
    """A parsed repository location; ``describe()`` is safe to print."""

    scheme: str  # "fs", "s3" or "memory"
    path: str = ""  # fs root, s3 prefix or memory name
    bucket: str = ""
    endpoint: str = ""
    options: dict[str, str] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        if self.scheme == "fs":
            return self.path
        if self.scheme == "memory":
            return f"memory://{self.path}"
        prefix = f"/{self.path}" if self.path else ""
        return f"s3://{self.bucket}{prefix}"


def parse_location(text: str, *, s3_endpoint: str | None = None, s3_region: str | None = None,
                   s3_addressing: str | None = None) -> Location:
    """Parse a location string; raises UsageError for anything unrecognised."""
    if not text:
        raise UsageError("no repository given: use -r/--repo or MULTIBACKUP_REPOSITORY")
    if text.startswith("memory://"):
        return Location("memory", text[len("memory://"):] or "default")
    if text.startswith("local:"):
        return Location("fs", os.path.abspath(text[len("local:"):]))
    if text.startswith("file://"):
        return Location("fs", os.path.abspath(urlsplit(text).path))
    if text.startswith("s3:") and not text.startswith("s3://"):
        parts = urlsplit(text[3:])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"invalid S3 location {text!r}: expected s3:https://host/bucket/prefix")
        bucket, _, prefix = parts.path.lstrip("/").partition("/")
        endpoint = f"{parts.scheme}://{parts.netloc}"
        return _s3(bucket, prefix, endpoint, s3_region, s3_addressing or "path", text)
    if text.startswith("s3://"):
        parts = urlsplit(text)
        endpoint = (s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL") or "")
        addressing = s3_addressing or os.environ.get("MULTIBACKUP_S3_ADDRESSING") or (
            "path" if endpoint else "virtual")
        return _s3(parts.netloc, parts.path.lstrip("/"), endpoint, s3_region, addressing, text)
    if "://" in text:
        raise UsageError(f"unsupported repository location {text!r}")
    return Location("fs", os.path.abspath(text))


def _s3(bucket: str, prefix: str, endpoint: str, region: str | None, addressing: str,
        text: str) -> Location:
    if not bucket:
        raise UsageError(f"invalid S3 location {text!r}: no bucket")
    if addressing not in ("path", "virtual"):
        raise UsageError(f"invalid S3 addressing {addressing!r}: use 'path' or 'virtual'")
    region = (region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
              or "us-east-1")
    prefix = prefix.strip("/")
    return Location("s3", prefix, bucket=bucket, endpoint=endpoint.rstrip("/"),
                    options={"region": region, "addressing": addressing})


_memory_stores: dict[str, OpenDALStore] = {}
_memory_lock = threading.Lock()


def open_store(location: Location, retries: int = 4) -> ObjectStore:
    """Open the store a location names (no I/O happens yet)."""
    if location.scheme == "memory":
        with _memory_lock:
            store = _memory_stores.get(location.path)
            if store is None:
                store = OpenDALStore("memory", location.describe(), retries=0)
                _memory_stores[location.path] = store
            return store
    if location.scheme == "fs":
        root = location.path
        return OpenDALStore("fs", location.describe(), retries=retries, root=root,
                            atomic_write_dir=os.path.join(root, ".tmp"))
    options = {
        "bucket": location.bucket,
        "root": "/" + location.path,
        "region": location.options["region"],
        "disable_config_load": "true",
        "disable_ec2_metadata": "true",
        "enable_virtual_host_style": "true" if location.options["addressing"] == "virtual"
        else "false",
    }
    if location.endpoint:
        options["endpoint"] = location.endpoint
    key_id = os.environ.get("AWS_ACCESS_KEY_ID")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key_id and secret:
        options["access_key_id"] = key_id
        options["secret_access_key"] = secret
        token = os.environ.get("AWS_SESSION_TOKEN")
        if token:
            options["session_token"] = token
    else:
        options["allow_anonymous"] = "true"
    return OpenDALStore("s3", location.describe(), retries=retries, **options)
