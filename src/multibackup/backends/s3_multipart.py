"""Explicit S3 multipart uploads and server-side copies, for migrations.

OpenDAL's streaming writer uploads in parts too, but hides the upload id: a killed process
cannot continue it. A migration of a large object needs the id and each completed part
(number, ETag) in its journal, so that a rerun lists the parts the server holds and sends
only the rest. Server-side copy (CopyObject, UploadPartCopy) moves bytes inside one provider
without passing them through this machine. The calls every large object makes (HEAD,
create, parts, complete) are signed and sent by :mod:`s3_rest`, at a fraction of
boto3's CPU; the rare ones (listing an upload's parts to resume it, server-side copies,
URL-encoded listings) go through boto3. Errors become one line.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from multibackup.backends.base import ObjectInfo
from multibackup.backends.location import Location, operator_config
from multibackup.backends.s3_rest import Reply, S3Error, S3Rest
from multibackup.errors import ObjectNotFound, StoreError

#: CopyObject copies at most 5 GiB in one request; larger objects are copied by parts
COPY_LIMIT = 5 << 30
COPY_PART = 512 << 20


@dataclass(frozen=True)
class _Endpoint:
    endpoint: str
    region: str
    access_key_id: str
    virtual: bool


class S3Multipart:
    """Multipart uploads and copies below one bucket and prefix (``root``)."""

    def __init__(self, location: Location, credentials: Mapping[str, str] | None = None) -> None:
        _, options = operator_config(location, credentials)
        self.description = location.describe()
        self.bucket = options["bucket"]
        self.root = options["root"].strip("/")
        self._options = options
        self._rest = S3Rest(options)
        self._made: Any = None
        self._making = threading.Lock()
        #: whether the server takes part checksums: None until the first upload tells
        self._checksums: bool | None = None
        virtual = options.get("enable_virtual_host_style") == "true"
        #: same endpoint and account: a server-side copy between the two is possible
        self.identity = _Endpoint(options.get("endpoint", ""), options["region"],
                                  options.get("access_key_id", ""), virtual)

    @property
    def _client(self) -> Any:
        """The boto3 client, made on first use: importing boto3 and building a client
        cost about a third of a second, which a migration of small objects never needs."""
        with self._making:
            if self._made is None:
                self._made = self._new_client()
            return self._made

    def _new_client(self) -> Any:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        options = self._options
        config = Config(request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        retries={"max_attempts": 5, "mode": "standard"},
                        # every body we send (a part) carries its Content-MD5, which is
                        # signed and checked by the server: no SHA-256 of each 8 MiB part
                        # over plain HTTP, as botocore already does over HTTPS
                        s3={"addressing_style": "virtual" if self.identity.virtual else "path",
                            "payload_signing_enabled": False},
                        max_pool_connections=32,
                        **({"signature_version": UNSIGNED}
                           if options.get("allow_anonymous") else {}))
        return boto3.session.Session().client(
            "s3", endpoint_url=options.get("endpoint") or None, region_name=options["region"],
            aws_access_key_id=options.get("access_key_id"),
            aws_secret_access_key=options.get("secret_access_key"),
            aws_session_token=options.get("session_token"), config=config)

    def _key(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _error(self, exc: Exception, action: str, key: str) -> StoreError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "") or str(exc)
        where = f"{self.description}: {action} {key}"
        if code in ("NoSuchKey", "NoSuchUpload", "404"):
            return ObjectNotFound(f"{where}: {code}")
        text = " ".join(f"{code}: {message}".split()) if code else " ".join(message.split())
        return StoreError(f"{where}: {text}")

    def _call(self, action: str, key: str, method: str, query: Mapping[str, str] | None = None,
              headers: Mapping[str, str] | None = None, body: bytes | memoryview = b"",
              sign_body: bool = False, ok: tuple[int, ...] = (200,),
              into: memoryview | None = None) -> Reply:
        """One signed request for ``key``; an error status becomes a one-line StoreError
        (ObjectNotFound for a missing object or upload)."""
        try:
            reply = self._rest.request(method, self._key(key), query, headers, body, sign_body,
                                       into)
        except S3Error as exc:
            raise StoreError(f"{self.description}: {action} {key}: {exc}") from None
        if reply.status in ok:
            return reply
        raise self._failed(action, key, reply)

    def _failed(self, action: str, key: str, reply: Reply) -> StoreError:
        """The one-line error of a reply that says the request failed."""
        code, message = reply.error()
        where = f"{self.description}: {action} {key}"
        if code in ("NoSuchKey", "NoSuchUpload", "NotFound"):
            return ObjectNotFound(f"{where}: {code}")
        return StoreError(f"{where}: " + " ".join(f"{code}: {message}".split()).rstrip(": "))

    def _create(self, key: str, headers: dict[str, str],
                ok: tuple[int, ...] = (200,)) -> Reply:
        return self._call("starting an upload of", key, "POST", {"uploads": ""}, headers,
                          ok=ok)

    def create(self, key: str, content_type: str | None = None,
               metadata: Mapping[str, str] | None = None,
               headers: Mapping[str, object] | None = None) -> str:
        """Start an upload; returns its id. ``headers`` (from :meth:`headers` of an S3
        source) replace ``content_type`` and ``metadata`` when given."""
        reply = self._create(key, _http_headers(headers or _attributes(content_type, metadata)))
        return _upload_id(reply, self.description, key)

    def create_checked(self, key: str, content_type: str | None = None,
                       metadata: Mapping[str, str] | None = None,
                       headers: Mapping[str, object] | None = None) -> tuple[str, str]:
        """Start an upload whose parts the server verifies by CRC32C: (upload id,
        "CRC32C"), or (upload id, "") where it takes no checksums (the parts then carry a
        Content-MD5, which every S3 checks, at about 25 times the CPU: MD5 runs at some
        600 MB/s a core, CRC32C in hardware at gigabytes)."""
        if self._checksums is not False:
            extra = _http_headers(headers or _attributes(content_type, metadata))
            # an S3 that does not know the header may refuse it (400 or 501): then the
            # upload is made without it, which names any other problem
            reply = self._create(key, {**extra, "x-amz-checksum-algorithm": CHECKSUM},
                                 ok=(200, 400, 501))
            if reply.status == 200:
                upload_id = _upload_id(reply, self.description, key)
                if reply.headers.get("x-amz-checksum-algorithm", "").upper() == CHECKSUM:
                    return upload_id, CHECKSUM
                # the header was ignored: a plain upload, and so are the next ones
                self._checksums = False
                return upload_id, ""
            self._checksums = False
        return self.create(key, content_type, metadata, headers), ""

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes | memoryview,
                    md5: bytes | None = None, total: int | None = None,
                    crc32c: str | None = None) -> str:
        """Send one part; returns its ETag (the part's MD5 at S3). The server refuses a
        part whose body does not match its Content-MD5 (``md5``, computed if not given),
        or, in an upload made by :meth:`create_checked` with a checksum, its ``crc32c``
        (base64); a server that does not say it checked the CRC has the part's MD5
        compared with the ETag it returns instead."""
        proof: dict[str, str] = {"x-amz-checksum-crc32c": crc32c} if crc32c else {
            "content-md5": base64.b64encode(md5 or hashlib.md5(data).digest()).decode()}
        reply = self._call(f"uploading part {number} of", key, "PUT",
                           {"partNumber": str(number), "uploadId": upload_id}, proof, data)
        etag = reply.headers.get("etag", "").strip('"')
        if not etag:
            raise StoreError(f"{self.description}: {key}: part {number}: no ETag in the reply")
        if crc32c and reply.headers.get("x-amz-checksum-crc32c") != crc32c:
            digest = hashlib.md5(data).hexdigest()
            if etag.lower() != digest:
                raise StoreError(f"{self.description}: {key}: part {number} arrived damaged "
                                 f"(ETag {etag}, MD5 {digest})")
        return etag

    def read_into(self, key: str, etag: str | None, offset: int, into: memoryview) -> None:
        """Fill ``into`` with the bytes of ``key`` from ``offset`` - of the version whose
        ETag is ``etag`` only, when given: a large object replaced mid-read must not come
        out stitched from two versions."""
        if not len(into):
            return
        headers = {"range": f"bytes={offset}-{offset + len(into) - 1}"}
        if etag:
            headers["if-match"] = f'"{etag.strip(chr(34))}"'
        reply = self._call("reading", key, "GET", None, headers, into=into, ok=(200, 206, 412))
        if reply.status == 412:
            raise StoreError(f"{self.description}: reading {key}: the object changed while "
                             "it was read")

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """Parts the server holds for an upload: number -> (ETag, size)."""
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        try:
            while True:
                reply = self._client.list_parts(Bucket=self.bucket, Key=self._key(key),
                                                UploadId=upload_id, PartNumberMarker=marker)
                for p in reply.get("Parts", []):
                    parts[int(p["PartNumber"])] = (p["ETag"].strip('"'), int(p["Size"]))
                if not reply.get("IsTruncated"):
                    return parts
                marker = int(reply["NextPartNumberMarker"])
        except Exception as exc:
            raise self._error(exc, "listing the parts of", key) from None

    def complete(self, key: str, upload_id: str, etags: list[str],
                 content_type: str | None = None,
                 metadata: Mapping[str, str] | None = None,
                 checksums: list[str] | None = None) -> str:
        """Assemble parts 1..N in order; returns the object's ETag. (S3 took the content
        type and metadata when the upload was created.) An upload with a checksum names
        each part's (``checksums``), as S3 requires."""
        sums = list(checksums or ())
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>&quot;{escape(e)}&quot;</ETag>"
            + (f"<Checksum{CHECKSUM}>{escape(sums[n - 1])}</Checksum{CHECKSUM}>"
               if n <= len(sums) else "") + "</Part>"
            for n, e in enumerate(etags, 1))
        xml = f'<CompleteMultipartUpload xmlns="{_NS}">{body}</CompleteMultipartUpload>'.encode()
        action = "completing the upload of"
        reply = self._call(action, key, "POST", {"uploadId": upload_id},
                           {"content-type": "application/xml"}, xml, sign_body=True)
        # S3 may answer 200 and put an error in the body (the assembly failed late)
        root = _xml(reply, self.description, key)
        if root.tag.rpartition("}")[2] == "Error":
            raise self._failed(action, key, reply)
        return (root.findtext("{*}ETag") or "").strip('"')

    def abort(self, key: str, upload_id: str) -> None:
        """Drop an upload (best effort: an upload already gone is fine)."""
        try:
            self._rest.request("DELETE", self._key(key), {"uploadId": upload_id})
        except S3Error:
            pass

    def _head(self, key: str) -> dict[str, str]:
        return self._call("reading metadata of", key, "HEAD").headers

    def head(self, key: str) -> tuple[str | None, dict[str, str]]:
        """Content type and user metadata of an object."""
        found = self._head(key)
        return found.get("content-type"), _metadata(found)

    def headers(self, key: str) -> dict[str, object]:
        """An object's standard headers and user metadata, as a new upload takes them:
        a gzipped script must keep its Content-Encoding, a download its disposition."""
        found = self._head(key)
        out: dict[str, object] = {name: found[h] for name, h in _HEADERS.items() if found.get(h)}
        if metadata := _metadata(found):
            out["Metadata"] = metadata
        return out

    def stat(self, key: str) -> ObjectInfo:
        """Size and ETag of an object, for any key S3 takes (the OpenDAL store trims
        white space off keys and refuses such keys)."""
        found = self._head(key)
        return ObjectInfo(key, int(found.get("content-length") or 0),
                          found.get("etag", "").strip('"'))

    def list_exact(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object below the root, its name exactly as stored.

        Listings are XML, which cannot carry most control characters: a name holding one
        comes back garbled (U+FFFD) unless the keys are sent URL-encoded, as botocore asks
        for and undoes. Slower than the store's own listing, so only for the names that
        one garbles (see :func:`garbled`)."""
        root = f"{self.root}/" if self.root else ""
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix)
            for page in pages:
                for o in page.get("Contents", []):
                    key = o["Key"][len(root):]
                    if key and not key.endswith("/"):
                        stamp = o["LastModified"]
                        yield ObjectInfo(key, int(o["Size"]), o.get("ETag"),
                                         int(stamp.timestamp()) * 1_000_000_000
                                         + stamp.microsecond * 1000)
        except Exception as exc:
            raise self._error(exc, "listing", prefix or "/") from None

    def same_account(self, other: object) -> bool:
        """True when a server-side copy from ``other`` to here can work."""
        return isinstance(other, S3Multipart) and self.identity == other.identity


    def copy_from(self, source: S3Multipart, info: ObjectInfo) -> str:
        """Server-side copy of ``info`` from ``source``; returns the new ETag.

        Content type and user metadata travel with the copy (MetadataDirective COPY), and
        ``CopySourceIfMatch`` makes the copy fail rather than take a newer version.
        """
        src = {"Bucket": source.bucket, "Key": source._key(info.key)}
        match = {"CopySourceIfMatch": info.etag} if info.etag else {}
        key = self._key(info.key)
        try:
            if info.size <= COPY_LIMIT:
                reply = self._client.copy_object(Bucket=self.bucket, Key=key, CopySource=src,
                                                 MetadataDirective="COPY", **match)
                return reply["CopyObjectResult"]["ETag"].strip('"')
            content_type, metadata = source.head(info.key)
            upload_id = self.create(info.key, content_type, metadata)
            etags = []
            try:
                for n, offset in enumerate(range(0, info.size, COPY_PART), 1):
                    end = min(offset + COPY_PART, info.size) - 1
                    reply = self._client.upload_part_copy(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n,
                        CopySource=src, CopySourceRange=f"bytes={offset}-{end}", **match)
                    etags.append(reply["CopyPartResult"]["ETag"].strip('"'))
                return self.complete(info.key, upload_id, etags)
            except BaseException:
                self.abort(info.key, upload_id)
                raise
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, "copying (server-side)", info.key) from None



#: the part checksum uploads ask for (see :meth:`S3Multipart.create_checked`)
CHECKSUM = "CRC32C"


#: characters XML 1.0 cannot hold, which an S3 listing without URL-encoded keys garbles
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def garbled(key: str) -> bool:
    """True for a name a plain S3 listing cannot give exactly: one holding a character
    XML cannot carry, or U+FFFD, which stands in for such characters when they come back."""
    return "\ufffd" in key or _NOT_XML.search(key) is not None


#: the headers of an object that a copy carries over: boto3's names (which the callers
#: use) and the HTTP headers they stand for
_HEADERS = {"ContentType": "content-type", "ContentEncoding": "content-encoding",
            "ContentDisposition": "content-disposition", "ContentLanguage": "content-language",
            "CacheControl": "cache-control"}
_META = "x-amz-meta-"
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    return {k[len(_META):]: v for k, v in headers.items() if k.startswith(_META)}


def _http_headers(attributes: Mapping[str, object]) -> dict[str, str]:
    """The request headers for boto3-named attributes (``Metadata`` a dict)."""
    out = {_HEADERS[k]: str(v) for k, v in attributes.items() if k in _HEADERS and v}
    for k, v in dict(attributes.get("Metadata") or {}).items():  # type: ignore[call-overload]
        out[_META + str(k).lower()] = str(v)
    return out


def _xml(reply: Reply, description: str, key: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(reply.body)
    except ElementTree.ParseError:
        raise StoreError(f"{description}: {key}: the server's reply is not XML") from None


def _upload_id(reply: Reply, description: str, key: str) -> str:
    upload_id = _xml(reply, description, key).findtext("{*}UploadId")
    if not upload_id:
        raise StoreError(f"{description}: starting an upload of {key}: no upload id in the reply")
    return upload_id


def _attributes(content_type: str | None,
                metadata: Mapping[str, str] | None) -> dict[str, object]:
    """The boto3 keyword arguments that carry an object's content type and user metadata."""
    extra: dict[str, object] = {}
    if content_type:
        extra["ContentType"] = content_type
    if metadata:
        extra["Metadata"] = dict(metadata)
    return extra
