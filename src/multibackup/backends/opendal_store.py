"""ObjectStore over Apache OpenDAL: local disk, S3-compatible, Azure Blob, GCS, WebDAV, memory.

OpenDAL does the I/O in Rust and releases the GIL, so many threads can upload at once.
Its errors are multi-line and carry request context; they are reduced here to one line
that names the problem (credentials, bucket, network, disk full) and nothing secret.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import opendal
from opendal import exceptions as oe
from opendal.layers import RetryLayer, TimeoutLayer

from multibackup.backends.base import ObjectInfo, not_an_object
from multibackup.backends.spool import SpoolFile
from multibackup.errors import ObjectExists, ObjectNotFound, StorageFull, StoreError

# S3 and Azure: `code: "NoSuchBucket", message: "..."`; GCS: `code: 404, message: "..."`
_CODE_MESSAGE = re.compile(r'code: "?(?P<code>[^",]*)"?, message: "(?P<message>[^"]*)"')
_STATUS = re.compile(r"status: (?P<status>\d{3})")
# request ids and timestamps make every message unique and say nothing to a user
_NOISE = re.compile(r"\s*(RequestId|Time):\S*")
# a SAS token or presigned URL in a message carries its signature
_SIGNATURE = re.compile(r"(?i)\b(sig|signature|x-amz-signature|x-amz-security-token)=[^&\s\"]+")
#: option names whose values are secrets, scrubbed from every message
_SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token", "account_key",
                   "sas_token", "password", "credential", "token",
                   "server_side_encryption_customer_key")
_BUCKET_MISSING = ("NoSuchBucket", "ContainerNotFound", "bucket does not exist",
                   "container does not exist")
_AUTH_CODES = ("AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
               "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
               "InvalidAuthenticationInfo")
_UNREACHABLE = ("Connection refused", "error sending request", "dns error", "timed out",
                "Connection reset", "certificate", "timeout reached")
#: seconds a remote service may stay silent in one request, or one read or write of a
#: transfer, before the attempt fails (and is retried): a server that stopped answering
#: must not hang a run; a mirror then goes on with its other copies
TIMEOUT = 30.0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timeout() -> float:
    """:data:`TIMEOUT`, or ``$MULTIBACKUP_TIMEOUT`` seconds when that is a positive number."""
    try:
        value = float(os.environ.get("MULTIBACKUP_TIMEOUT", ""))
    except ValueError:
        return TIMEOUT
    return value if value > 0 else TIMEOUT


def _mtime_ns(meta: object) -> int:
    """An object's last-modified time in ns since the epoch, 0 when the service has none."""
    when = getattr(meta, "last_modified", None)
    if not isinstance(when, datetime):
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def _local_etag(st: os.stat_result) -> str:
    """An ETag for a local file, as web servers make one: inode, size, modification and
    change time. A file rewritten in place (even with its old time put back, which only
    the change time tells) or replaced (a new inode) gets a new one, so a migration's
    journal sees a file changed by hand on either side."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}"


def _one_line(exc: Exception) -> str:
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    match = _CODE_MESSAGE.search(text)
    if match:
        message = _NOISE.sub("", match["message"]).strip()
        return f"{match['code']}: {message}" if message else match["code"]
    first = re.sub(r"\s*\((persistent|permanent|temporary)\)", "", first)
    first = re.sub(r"^\w+ at [\w:]+ => ", "", first)
    source = re.search(r"Source:\s*\n\s*(.+)", text)
    if source and source.group(1).strip() not in first:
        first = f"{first}: {source.group(1).strip()}"
    return first


class OpenDALStore:
    """One OpenDAL operator with retries, behind the ObjectStore interface."""

    def __init__(self, scheme: str, description: str, retries: int = 4, **options: str) -> None:
        self.description = description
        self.scheme = scheme
        self.is_local = scheme in ("fs", "memory")
        # local disk: one write in flight already keeps up (and each holds a pack in memory)
        self.concurrency = 1 if self.is_local else 8
        self._atomic_dir = options.get("atomic_write_dir")
        # Longest first, so that a secret containing another is scrubbed whole.
        self._secrets = sorted((v for k, v in options.items() if k in _SECRET_OPTIONS and v),
                               key=len, reverse=True)
        #: a local store opened only to be read (no temporary directory): writes refused
        self._read_only = scheme == "fs" and not self._atomic_dir
        try:
            if self._read_only and not os.path.isdir(options.get("root", "")):
                # OpenDAL would make the missing directory; read as what it is, empty
                op = opendal.Operator("memory")
            else:
                op = opendal.Operator(scheme, **options)
        except Exception as exc:  # configuration errors from OpenDAL
            raise StoreError(f"{description}: invalid configuration: "
                             f"{self._scrub(_one_line(exc))}") from None
        #: False where the service has no conditional write (WebDAV): put_new then checks
        #: first and writes second, which is not safe against a concurrent writer.
        self.create_only_atomic = bool(op.capability().write_with_if_not_exists)
        #: True where a read can be made conditional on the ETag (``get_if_match``)
        self.reads_if_match = bool(op.capability().read_with_if_match)
        #: False where a write must be one request (WebDAV): put_stream cannot stream there
        self.writes_multi = bool(op.capability().write_can_multi)
        #: False where the service lists one level at a time (WebDAV): see _walk
        self._lists_deep = bool(getattr(op.capability(), "list_with_recursive", True))
        # what put_stream may carry over: cloud services only (not a local disk's xattrs)
        self._keeps_type = bool(op.capability().write_with_content_type) and not self.is_local
        self._keeps_meta = (bool(getattr(op.capability(), "write_with_user_metadata", False))
                            and not self.is_local)
        #: True where writes can carry content type or user metadata (cloud services)
        self.keeps_attributes = self._keeps_type or self._keeps_meta
        #: True where ``put_buffer`` writes from the caller's buffer and ``get_view`` reads
        #: into it, without a copy or an allocation of their own (local disk)
        self.direct_buffers = scheme == "fs" and bool(options.get("root"))
        #: keys of the symlinks the last local listing passed over (not objects): a
        #: write below one would land wherever it points
        self.symlinks: set[str] = set()
        #: the entries below the prefix that the last local listing passed over as no
        #: objects (symlinks, pipes, sockets, devices), each with what it is: a migration
        #: reports them as not copied instead of leaving them out without a word
        self.passed_over: list[tuple[ObjectInfo, str]] = []
        self._root = options.get("root", "")
        if not self.is_local:
            limit = _timeout()
            op = op.layer(TimeoutLayer(timeout=limit, io_timeout=limit))
        if retries:
            op = op.layer(RetryLayer(max_times=retries, factor=2.0, jitter=True,
                                     min_delay=0.2, max_delay=5.0))
        self._op = op

    @property
    def identity(self) -> str:
        """Where the objects live, for telling two destinations apart: a local folder by
        its real path (a symlink to a folder is that folder), else the description."""
        if self.scheme == "fs" and self._root:
            return "fs:" + os.path.realpath(self._root)
        return self.description

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return _SIGNATURE.sub(r"\1=***", message)

    def _error(self, exc: Exception, action: str, key: str) -> StoreError:
        text = str(exc)
        message = self._scrub(_one_line(exc))
        where = f"{self.description}: {action} {key}"
        status = _STATUS.search(text)
        code = int(status["status"]) if status else 0
        if any(marker in text for marker in _BUCKET_MISSING) or (
                self.scheme == "azblob" and "ResourceNotFound" in text):
            what = ("container (or the storage account)" if self.scheme == "azblob"
                    else "bucket")
            return StoreError(f"{where}: the {what} does not exist ({message})")
        if isinstance(exc, oe.NotFound):
            return ObjectNotFound(f"{where}: object not found")
        if isinstance(exc, oe.ConditionNotMatch | oe.AlreadyExists):
            return ObjectExists(f"{where}: object already exists")
        if "No space left" in message or "os error 28" in message or "StorageFull" in text:
            return StorageFull(f"{where}: no space left on the destination")
        if (isinstance(exc, oe.PermissionDenied) or code in (401, 403)
                or any(c in text for c in _AUTH_CODES)):
            return StoreError(f"{where}: access denied, check the credentials ({message})")
        if "failed to load signing credential" in text:
            return StoreError(f"{where}: cannot load the credentials ({message})")
        if any(marker in text for marker in _UNREACHABLE):
            return StoreError(f"{where}: cannot reach the server ({message})")
        if "reqsign::Sign" in text:  # e.g. a malformed private key
            return StoreError(f"{where}: cannot use the credentials ({message})")
        return StoreError(f"{where}: {message}")

    def _discard_partial(self, key: str) -> None:
        """Remove what a failed atomic write left in the temp directory.

        OpenDAL's fs backend writes ``<atomic_write_dir>/<name>.<random>`` and renames it;
        when the disk is full the partial file stays and keeps it full, so that even a
        restore - which must write a lock - would fail too. Only done for a full disk:
        after other errors (a lost create-only race) the temp file may be another writer's.
        """
        if not self._atomic_dir:
            return
        prefix = key.rsplit("/", 1)[-1] + "."
        try:
            names = [n for n in os.listdir(self._atomic_dir) if n.startswith(prefix)]
        except OSError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self._atomic_dir, name))
            except OSError:
                pass

    def _local_path(self, key: str) -> str:
        """Where ``key`` lives on local disk (``direct_buffers`` stores)."""
        return os.path.join(self._root, *key.split("/"))

    def _writable(self, key: str) -> None:
        if self._read_only:
            raise StoreError(f"{self.description}: opened read-only, {key} cannot be written")

    def _check_key(self, key: str) -> None:
        """Refuse a key with white space at either end: OpenDAL trims every path, so
        " notes.txt" would read or write "notes.txt", another object."""
        if key != key.strip():
            raise StoreError(f"{self.description}: {key!r}: a key that begins or ends with "
                             "white space cannot be used here (the storage library would "
                             "address the key without it)")

    def put(self, key: str, data: bytes | bytearray, *, content_type: str | None = None,
            user_metadata: dict[str, str] | None = None) -> None:
        """Write ``data`` in one request; ``content_type`` and ``user_metadata`` are kept
        where the service stores them (``keeps_attributes``) and ignored elsewhere."""
        if self.direct_buffers:  # local disk keeps no attributes; a failed write leaves no temp file
            self.put_buffer(key, memoryview(data))
            return
        self._check_key(key)
        self._writable(key)
        options = self._attribute_options(content_type, user_metadata)
        try:
            self._op.write(key, data, **options)
        except Exception as exc:
            error = self._error(exc, "writing", key)
            if isinstance(error, StorageFull):
                self._discard_partial(key)
            raise error from None

    def get_view(self, key: str, offset: int, length: int, buffer: bytearray) -> memoryview:
        """``get`` of a range, as a view: on local disk read into ``buffer`` (at least
        ``length`` long, the caller's to reuse: no fresh allocation and its page faults per
        read), elsewhere a view of the bytes read. Valid until ``buffer`` is reused."""
        self._check_key(key)
        if not self.direct_buffers:
            return memoryview(self.get(key, offset, length))
        view = memoryview(buffer)[:length]
        try:
            fd = os.open(self._local_path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.description}: reading {key}: object not found") from None
        except OSError as exc:
            raise StoreError(f"{self.description}: reading {key}: {exc.strerror or exc}") from None
        try:
            got = 0
            while got < length:
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    break  # shorter than asked: the caller finds the blobs cut off
                got += n
        except OSError as exc:
            raise StoreError(f"{self.description}: reading {key}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        return view[:got]

    def put_buffer(self, key: str, data: memoryview) -> None:
        """Write ``data`` as :meth:`put` does, straight from the caller's buffer where
        ``direct_buffers`` (local disk: the file is written with the GIL released, synced,
        and renamed into place from the temp directory, as OpenDAL's fs writer does);
        elsewhere as ``put`` of a copy."""
        self._check_key(key)
        if not self.direct_buffers:
            self.put(key, bytes(data))
            return
        spool = self.spool(key.rsplit("/", 1)[-1], key)
        try:
            spool.write_at(data, 0)
        except BaseException:
            spool.discard()
            raise
        self.put_spool(key, spool)

    def spool(self, stem: str, what: str) -> SpoolFile:
        """A temporary file to fill in place and then ``put_spool`` (``direct_buffers``
        stores only): an object built on disk rather than in memory."""
        self._writable(what)
        assert self._atomic_dir is not None
        return SpoolFile(self._atomic_dir, stem, self.description, what)

    def put_spool(self, key: str, spool: SpoolFile) -> None:
        """Store a filled ``spool`` as ``key``: synced, then renamed into place."""
        self._check_key(key)
        spool.commit(self._local_path(key), key)

    def put_new(self, key: str, data: bytes) -> None:
        """Create-only; atomic where the service has conditional writes.

        Without them (WebDAV) it is a check then a write: two clients racing for the same
        new key can both succeed, the later one winning. The keys written this way (the
        repository config, key slots) are created by one ``init`` or ``key add`` at a time.
        """
        self._check_key(key)
        self._writable(key)
        try:
            if self.create_only_atomic:
                self._op.write(key, data, if_not_exists=True)
            else:
                if self.exists(key):
                    raise ObjectExists(f"{self.description}: writing {key}: object already exists")
                self._op.write(key, data)
        except StoreError:
            raise
        except Exception as exc:
            error = self._error(exc, "writing", key)
            if isinstance(error, StorageFull):
                self._discard_partial(key)
            raise error from None

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self._check_key(key)
        try:
            if offset == 0 and length is None:
                return self._op.read(key)
            if length is None:
                size = self.stat(key).size
                length = size - offset
            if length == 0:
                return b""
            data = self._op.read(key, offset=offset, size=length)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, "reading", key) from None
        if len(data) != length:
            # Some servers ignore ranges; never hand back the wrong bytes silently.
            raise StoreError(f"{self.description}: reading {key}: short or wrong-sized ranged read")
        return data

    def stat(self, key: str) -> ObjectInfo:
        self._check_key(key)
        if self.direct_buffers:
            try:
                st = os.stat(self._local_path(key))
            except FileNotFoundError:
                raise ObjectNotFound(f"{self.description}: reading metadata of {key}: "
                                     "object not found") from None
            except OSError as exc:
                raise StoreError(f"{self.description}: reading metadata of {key}: "
                                 f"{exc.strerror or exc}") from None
            return ObjectInfo(key, st.st_size, _local_etag(st), st.st_mtime_ns // 1000 * 1000)
        try:
            meta = self._op.stat(key)
        except Exception as exc:
            raise self._error(exc, "reading metadata of", key) from None
        return ObjectInfo(key, meta.content_length, meta.etag, _mtime_ns(meta))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if self.direct_buffers:
            yield from self._list_local(prefix)
            return
        try:
            # (the lister is no named local: one kept alive by an error's traceback would be
            # dropped on another thread, which OpenDAL reports on stderr)
            for entry in (self._op.list(prefix, recursive=True) if self._lists_deep
                          else self._walk(prefix)):
                path = entry.path
                if path.endswith("/"):
                    continue
                meta = entry.metadata
                yield ObjectInfo(path, meta.content_length if meta else 0,
                                 meta.etag if meta else None, _mtime_ns(meta))
        except StoreError:
            raise
        except oe.NotFound as exc:
            error = self._error(exc, "listing", prefix or "/")
            if not isinstance(error, ObjectNotFound):
                raise error from None  # a missing bucket is not an empty listing
            return
        except Exception as exc:
            raise self._error(exc, "listing", prefix or "/") from None

    def _walk(self, prefix: str) -> Iterator[Any]:
        """The entries below ``prefix``, one directory listing at a time, for a service
        that lists one level only (WebDAV).

        OpenDAL's own recursive listing of such a service, behind its retry layer, ends
        early without an error when a directory's listing fails (a 503, a server that
        went down): a sync would then delete everything that seemed gone. A listing of
        one level raises, and so does this walk. A directory removed meanwhile is empty.
        """
        head = prefix.rpartition("/")[0] + "/" if "/" in prefix else ""
        stack = [head]
        while stack:
            directory = stack.pop()
            try:
                entries = list(self._op.list(directory))
            except oe.NotFound:
                if directory == head:
                    raise
                continue
            except Exception as exc:
                raise self._error(exc, "listing", directory or "/") from None
            for entry in entries:
                path = entry.path
                if path == directory or not path.startswith(directory):
                    continue  # the directory itself, as some servers list it
                if path.endswith("/"):
                    if path.startswith(prefix) or prefix.startswith(path):
                        stack.append(path)
                elif path.startswith(prefix):
                    yield entry

    def _list_local(self, prefix: str) -> Iterator[ObjectInfo]:
        """Regular files below the root on local disk, read from the directories.

        OpenDAL's listing trims white space off each path, so " a.txt" would be listed
        as "a.txt", another file; names here are exact (one in another encoding keeps
        its surrogate escapes, which the caller can refuse by name). Symlinks and special
        files are not objects; times are cut to microseconds, as OpenDAL gives them, and
        each file gets an ETag of its own (:func:`_local_etag`)."""
        head, _, _ = prefix.rpartition("/")
        stack = [head]
        links: set[str] = set()
        self.symlinks = links  # the last listing's, see the attribute's comment
        passed: list[tuple[ObjectInfo, str]] = []
        self.passed_over = passed
        while stack:
            rel = stack.pop()
            try:
                entries = list(os.scandir(os.path.join(self._root, *rel.split("/"))
                                          if rel else self._root))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"{self.description}: listing {rel or '/'}: "
                                 f"{exc.strerror or exc}") from None
            for entry in entries:
                key = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                            stack.append(key)
                        continue
                    if entry.is_symlink():
                        links.add(key)
                    if not entry.is_file(follow_symlinks=False):
                        if key.startswith(prefix):
                            st = entry.stat(follow_symlinks=False)
                            what = not_an_object(st.st_mode)
                            if what:
                                passed.append((ObjectInfo(key, st.st_size, None,
                                                          st.st_mtime_ns // 1000 * 1000), what))
                        continue
                    if not key.startswith(prefix):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # gone since the directory was read
                yield ObjectInfo(key, st.st_size, _local_etag(st), st.st_mtime_ns // 1000 * 1000)

    def list_children(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """One level below ``prefix`` (``""`` or ending in ``/``), like a directory listing.

        Objects come with size, ETag and last-modified time; the common prefixes below
        (sub-"directories") come as keys ending in ``/`` with size 0. For walking a bucket
        as a tree without listing everything below each level again.
        """
        try:
            for entry in self._op.list(prefix, recursive=False):
                path = entry.path
                if path == prefix or not path.startswith(prefix):
                    continue  # some services list the directory itself
                meta = entry.metadata
                if path.endswith("/") or (meta is not None and meta.is_dir):
                    yield ObjectInfo(path if path.endswith("/") else path + "/", 0)
                    continue
                yield ObjectInfo(path, meta.content_length if meta else 0,
                                 meta.etag if meta else None, _mtime_ns(meta))
        except StoreError:
            raise
        except oe.NotFound as exc:
            error = self._error(exc, "listing", prefix or "/")
            if not isinstance(error, ObjectNotFound):
                raise error from None
            return
        except Exception as exc:
            raise self._error(exc, "listing", prefix or "/") from None

    def get_if_match(self, key: str, etag: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``, only from the version whose ETag is ``etag``.

        Reading a large object in ranges could otherwise stitch two versions together
        when it is replaced mid-read. Needs ``reads_if_match``; raises ``StoreError`` when
        the object has changed.
        """
        self._check_key(key)
        if length == 0:
            return b""
        try:
            data = self._op.read(key, offset=offset, size=length, if_match=etag)
        except oe.ConditionNotMatch:
            raise StoreError(f"{self.description}: reading {key}: the object changed while "
                             "it was read") from None
        except Exception as exc:
            raise self._error(exc, "reading", key) from None
        if len(data) != length:
            raise StoreError(f"{self.description}: reading {key}: short or wrong-sized ranged read")
        return data

    def attributes(self, key: str) -> tuple[str | None, dict[str, str]]:
        """Content type and user metadata of an object, for copies that keep them."""
        self._check_key(key)
        try:
            meta = self._op.stat(key)
        except Exception as exc:
            raise self._error(exc, "reading metadata of", key) from None
        return meta.content_type or None, dict(getattr(meta, "user_metadata", None) or {})

    def put_stream(self, key: str, chunks: Iterable[bytes], *, create_only: bool = False,
                   part_size: int = 16 << 20, content_type: str | None = None,
                   user_metadata: dict[str, str] | None = None,
                   size: int | None = None) -> int:
        """Write an object from chunks without holding it whole; returns its size.

        ``size``, when known, is only a hint (a one-request service streams with it).

        ``content_type`` and ``user_metadata`` are kept where the service stores them
        (and ignored elsewhere). Large objects go up as a multipart upload of ``part_size`` parts, which becomes
        visible only when complete: if ``chunks`` raises, the upload is abandoned (not
        completed), so no truncated object appears. ``create_only`` is atomic where the
        service has conditional writes, a check then a write elsewhere (as ``put_new``).
        """
        self._check_key(key)
        self._writable(key)
        if create_only and not self.create_only_atomic and self.exists(key):
            raise ObjectExists(f"{self.description}: writing {key}: object already exists")
        options: dict[str, object] = {"chunk": part_size,
                                      **self._attribute_options(content_type, user_metadata)}
        if create_only and self.create_only_atomic:
            options["if_not_exists"] = True
        try:
            writer = self._op.open(key, "wb", **options)
        except Exception as exc:
            raise self._error(exc, "writing", key) from None
        size = 0
        # An exception from ``chunks`` propagates with the writer never closed: dropping
        # it abandons the upload instead of completing a truncated object.
        for chunk in chunks:
            try:
                writer.write(chunk)
            except Exception as exc:
                raise self._write_error(exc, key) from None
            size += len(chunk)
        try:
            writer.close()
        except Exception as exc:
            raise self._write_error(exc, key) from None
        return size

    def _attribute_options(self, content_type: str | None,
                           user_metadata: dict[str, str] | None) -> dict[str, object]:
        """The write options that carry content type and user metadata, where kept."""
        options: dict[str, object] = {}
        if content_type and self._keeps_type:
            options["content_type"] = content_type
        if user_metadata and self._keeps_meta:
            options["user_metadata"] = user_metadata
        return options

    def _write_error(self, exc: Exception, key: str) -> StoreError:
        error = self._error(exc, "writing", key)
        if isinstance(error, StorageFull):
            self._discard_partial(key)
        return error

    def delete(self, key: str) -> None:
        self._check_key(key)
        self._writable(key)
        try:
            self._op.delete(key)
        except Exception as exc:
            error = self._error(exc, "deleting", key)
            if isinstance(error, ObjectNotFound):
                return
            raise error from None

    def remove_empty_temporary(self) -> None:
        """Remove a local folder's temporary directory when nothing is left in it: a
        migration into a plain folder leaves only what it copied (a killed run's partial
        files stay, for the next run to resume)."""
        if self.scheme == "fs" and self._atomic_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self._atomic_dir)

    def sweep_temporary(self, older_than: float) -> int:
        """A write killed mid-way on local disk leaves its temp file behind: drop old ones."""
        if not self._atomic_dir:
            return 0
        removed = 0
        cutoff = time.time() - older_than
        try:
            entries = list(os.scandir(self._atomic_dir))
        except OSError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        return removed

    def exists(self, key: str) -> bool:
        self._check_key(key)
        try:
            self._op.stat(key)
        except Exception as exc:
            error = self._error(exc, "reading metadata of", key)
            if isinstance(error, ObjectNotFound):
                return False
            raise error from None
        return True
