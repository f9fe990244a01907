"""Resumable uploads of large objects to Azure Blob Storage, for migrations.

A block blob is written as staged blocks (Put Block, each checked by its Content-MD5 at
the service) and made visible by one commit of the block list (Put Block List). Staged
blocks stay on the service, invisible, for a week, so a migration killed in the middle of
an object lists the blocks still held (Get Block List) and stages only the rest, as it
does with an S3 multipart upload. Within one storage account, Copy Blob copies an object
without its bytes passing through this machine. OpenDAL's writer stages blocks too but hides their ids;
the Azure SDK names them, so this uses the SDK. Errors become one line, without secrets.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from typing import Any

from multibackup.backends.base import ObjectInfo
from multibackup.backends.location import Location, operator_config
from multibackup.errors import ObjectNotFound, StoreError


def block_id(upload_id: str, number: int) -> str:
    """The id of part ``number`` of an upload: the same length for every block of a blob
    (the service requires that; the SDK base64-encodes it), and naming its upload so that
    blocks another upload left behind are never committed."""
    return f"{upload_id}-{number:06d}"


def _part_of(block: str, upload_id: str) -> int | None:
    prefix, _, number = block.rpartition("-")
    return int(number) if prefix == upload_id and number.isdigit() else None


def _code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


class AzureBlocks:
    """Block uploads below one container and prefix; the PartsTarget of an Azure side."""

    def __init__(self, location: Location, credentials: Mapping[str, str] | None = None) -> None:
        _, options = operator_config(location, credentials)
        self.description = location.describe()
        self._options = options
        self._root = options["root"].strip("/")
        self._secrets = [v for k, v in options.items() if k in ("account_key", "sas_token") and v]
        self._container: Any = None

    def _client(self, key: str) -> Any:
        """The SDK's client of one blob (the container client is made on first use)."""
        if self._container is None:
            from azure.storage.blob import ContainerClient

            o = self._options
            credential: Any = ({"account_name": o.get("account_name", ""),
                                "account_key": o["account_key"]}
                               if o.get("account_key") else o.get("sas_token"))
            self._container = ContainerClient(o["endpoint"], o["container"],
                                              credential=credential, max_block_size=64 << 20,
                                              retry_total=4, connection_timeout=15,
                                              read_timeout=300)
        return self._container.get_blob_client(f"{self._root}/{key}" if self._root else key)

    def _error(self, exc: Exception, action: str, key: str) -> StoreError:
        code = _code(exc)
        text = " ".join(str(getattr(exc, "reason", "") or str(exc).splitlines()[0]).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        where = f"{self.description}: {action} {key}"
        if code in ("BlobNotFound", "InvalidBlockList"):
            return ObjectNotFound(f"{where}: {code}")
        if code == "ContainerNotFound":
            return StoreError(f"{where}: the container does not exist ({code})")
        if code.startswith("Authentication") or code.startswith("Authorization"):
            return StoreError(f"{where}: access denied, check the credentials ({code})")
        if type(exc).__name__ == "ServiceRequestError":
            return StoreError(f"{where}: cannot reach the server ({text})")
        return StoreError(f"{where}: {code + ': ' if code else ''}{text}")

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        """A new upload id; nothing is sent until the first block."""
        return os.urandom(8).hex()

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes,
                    md5: bytes | None = None, total: int | None = None) -> str:
        """Stage one block with its Content-MD5; returns that MD5 (hex). The service
        refuses a block whose body does not match it, so an accepted block is proven."""
        digest = md5 or hashlib.md5(data).digest()
        try:
            reply = self._client(key).stage_block(block_id(upload_id, number), data,
                                                  length=len(data),
                                                  transactional_content_md5=digest)
        except Exception as exc:
            raise self._error(exc, f"staging block {number} of", key) from None
        echoed = reply.get("content_md5") if isinstance(reply, dict) else None
        return bytes(echoed or digest).hex()

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[None, int]]:
        """Staged blocks of this upload still held: number -> (None, size). The service
        names no block's MD5, so the finished object is read back to verify it."""
        try:
            _, uncommitted = self._client(key).get_block_list("uncommitted")
        except Exception as exc:
            if _code(exc) == "BlobNotFound":
                return {}  # no block staged (or all expired)
            raise self._error(exc, "listing the blocks of", key) from None
        parts: dict[int, tuple[None, int]] = {}
        for block in uncommitted:
            number = _part_of(block.id, upload_id)
            if number is not None:
                parts[number] = (None, int(block.size))
        return parts

    def complete(self, key: str, upload_id: str, etags: list[str],
                 content_type: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> str:
        """Commit blocks 1..N in order, with the content type and metadata; returns the
        blob's ETag."""
        from azure.storage.blob import BlobBlock, ContentSettings

        blocks = [BlobBlock(block_id(upload_id, n)) for n in range(1, len(etags) + 1)]
        try:
            reply = self._client(key).commit_block_list(
                blocks, content_settings=ContentSettings(content_type=content_type)
                if content_type else None, metadata=dict(metadata or {}) or None)
        except Exception as exc:
            raise self._error(exc, "committing the blocks of", key) from None
        return str(reply.get("etag", "")).strip('"')

    def abort(self, key: str, upload_id: str) -> None:
        """Nothing to do: staged blocks cannot be dropped without the blob, and the
        service discards uncommitted blocks after a week by itself."""

    # -- server-side copy --------------------------------------------------------------------

    def same_account(self, other: object) -> bool:
        """True when a copy from ``other`` can stay inside the service: the same storage
        account at the same endpoint, signed by the same kind of credential."""
        if not isinstance(other, AzureBlocks):
            return False
        a, b = self._options, other._options
        return (a.get("endpoint"), a.get("account_name"), bool(a.get("account_key"))) == (
            b.get("endpoint"), b.get("account_name"), bool(b.get("account_key")))

    def copy_from(self, source: AzureBlocks, info: ObjectInfo) -> str:
        """Copy Blob inside the account: the service copies the bytes, content type and
        metadata, only if the source still has the listed ETag. Waits for the copy, then
        checks its size and, where both blobs carry one, their Content-MD5. Returns the
        new blob's ETag."""
        from azure.core import MatchConditions

        src, dst = source._client(info.key), self._client(info.key)
        url = src.url
        if source._options.get("sas_token"):
            url += "?" + source._options["sas_token"]
        condition: dict[str, Any] = ({"source_etag": info.etag,
                                      "source_match_condition": MatchConditions.IfNotModified}
                                     if info.etag else {})
        try:
            dst.start_copy_from_url(url, **condition)
            props = dst.get_blob_properties()
            deadline = time.monotonic() + 3600
            while props.copy.status == "pending" and time.monotonic() < deadline:
                time.sleep(0.2)
                props = dst.get_blob_properties()
            if props.copy.status != "success":
                raise StoreError(f"{self.description}: copying {info.key} (server-side): "
                                 f"the copy ended {props.copy.status}")
            src_md5 = src.get_blob_properties().content_settings.content_md5
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, "copying (server-side)", info.key) from None
        dst_md5 = props.content_settings.content_md5
        if props.size != info.size or (src_md5 and dst_md5 and bytes(src_md5) != bytes(dst_md5)):
            raise StoreError(f"{self.description}: copying {info.key} (server-side): the copy "
                             f"holds {props.size} bytes, or another MD5, than the source")
        return str(props.etag or "").strip('"')
