"""The repository: sealed blobs in packs, an index, trees and snapshots on one ObjectStore.

Write order is packs, then index, then snapshot, so a reader never sees a snapshot whose
data is missing, and a run killed at any moment leaves only unreferenced packs behind. The
next run finds packs no index lists, reads their headers and indexes them, so nothing
uploaded is uploaded again.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from multibackup import __version__
from multibackup.backends.base import ObjectStore, get_verified
from multibackup.errors import (
    IntegrityError,
    MultibackupError,
    ObjectExists,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    StoreError,
    UsageError,
)
from multibackup.repository import keys
from multibackup.repository.blob import (
    DEFAULT_LEVEL,
    BlobType,
    ScratchBuffers,
    blob_body,
    open_blob,
    open_file,
    seal_file,
)
from multibackup.repository.cache import Cache
from multibackup.repository.chunker import ChunkerParams
from multibackup.repository.crypto import (
    OVERHEAD,
    Cipher,
    KDFParams,
    MasterKey,
    storage_hasher,
    storage_id,
)
from multibackup.repository.index import Index, decode_index, decode_index_raw, encode_index
from multibackup.repository.lock import Lock
from multibackup.repository.pack import (
    Buffer,
    PackBuilder,
    PackEntry,
    PackFile,
    SpooledPackBuilder,
    header_length,
    header_size,
    parse_header,
)
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import Node, decode_tree, encode_tree

FORMAT_VERSION = 1
CONFIG = "config"
DATA = "data/"
INDEX = "index/"
SNAPSHOTS = "snapshots/"
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
INDEX_EVERY_PACKS = 8


def _is_object_name(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _named_by_content(key: str) -> Callable[[bytes], bytes]:
    """A check that an object's bytes hash to its name (packs, index files, snapshots)."""
    name = key.rsplit("/", 1)[-1]
    kind = {DATA: "pack", INDEX: "index file", SNAPSHOTS: "snapshot"}.get(
        key[:key.index("/") + 1] if "/" in key else key, "object")

    def check(data: bytes) -> bytes:
        if storage_id(data) != name:
            raise IntegrityError(f"{kind} {name[:8]} content does not match its name (damaged)")
        return data

    return check


def read_whole(store: ObjectStore, key: str) -> bytes:
    """A whole content-addressed object, verified against its name (any intact copy)."""
    return get_verified(store, key, _named_by_content(key))


def pack_key(pack_id: bytes | str) -> str:
    h = pack_id.hex() if isinstance(pack_id, bytes) else pack_id
    return f"{DATA}{h[:2]}/{h}"


@dataclass
class RepoConfig:
    id: str
    chunker: ChunkerParams
    pack_size: int = DEFAULT_PACK_SIZE
    compression: int = DEFAULT_LEVEL
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        return json.dumps({"version": self.version, "id": self.id,
                           "chunker": self.chunker.to_dict(), "pack_size": self.pack_size,
                           "compression": self.compression}, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> RepoConfig:
        try:
            d = json.loads(data)
            cfg = cls(d["id"], ChunkerParams.from_dict(d["chunker"]), int(d["pack_size"]),
                      int(d["compression"]), int(d["version"]))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError("repository config is malformed") from None
        if cfg.version != FORMAT_VERSION:
            raise MultibackupError(f"repository format version {cfg.version} is not supported")
        return cfg


@dataclass
class LoadReport:
    """What loading the index found besides the index itself."""

    index_files: int = 0
    damaged_index_files: list[str] = field(default_factory=list)
    recovered_packs: list[str] = field(default_factory=list)
    damaged_packs: list[str] = field(default_factory=list)
    pack_sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class WriteStats:
    data_blobs: int = 0
    tree_blobs: int = 0
    bytes_raw: int = 0  # plaintext of new blobs
    bytes_stored: int = 0  # sealed bytes of new blobs
    packs: int = 0


class Repository:
    """An open repository. Blob writes are thread-safe; call flush() before saving a snapshot."""

    def __init__(self, store: ObjectStore, master: MasterKey, config: RepoConfig, key_id: str,
                 upload_concurrency: int | None = None, cache_dir: str | None = None) -> None:
        self.store = store
        self.cache = Cache(cache_dir, config.id) if cache_dir else None
        self.master = master
        self.cipher = Cipher(master)
        self.config = config
        self.key_id = key_id
        self.index = Index()
        self.compression = config.compression
        self.stats = WriteStats()
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._builders: dict[BlobType, PackBuilder | SpooledPackBuilder] = {}
        self._unsaved: dict[bytes, list[PackEntry]] = {}
        # Packs in memory are bounded: one being built per blob type plus one per upload slot.
        uploads = upload_concurrency or min(store.concurrency, 4)
        self._uploader = ThreadPoolExecutor(uploads, thread_name_prefix="upload")
        self._upload_slots = threading.Semaphore(uploads)
        self._uploads: set[Future[None]] = set()
        self._upload_error: BaseException | None = None
        self._tree_cache: OrderedDict[bytes, list[Node]] = OrderedDict()
        self._tree_packs: OrderedDict[bytes, bytes] = OrderedDict()
        self._spare_buffers: dict[int, list[Buffer]] = {}
        # On local disk, data packs are filled in place in a file (``spool``): each writer
        # seals a blob into its own scratch buffer, touched only as far as the largest blob
        self._spools = bool(getattr(store, "direct_buffers", False))
        self._seal_scratch = ScratchBuffers(reserve=config.chunker.max_size + OVERHEAD)
        self._read_back = ScratchBuffers()
        self.snapshot_errors: list[str] = []

    # ---- life cycle -------------------------------------------------------------------

    @classmethod
    def init(cls, store: ObjectStore, password: str, *, chunker: ChunkerParams | None = None,
             pack_size: int = DEFAULT_PACK_SIZE, compression: int = DEFAULT_LEVEL,
             kdf: KDFParams | None = None) -> Repository:
        if store.exists(CONFIG):
            raise RepositoryExists(f"repository already initialised at {store.description}")
        if any(True for _ in store.list(keys.PREFIX)):
            raise RepositoryExists(f"{store.description} already holds repository keys")
        if not 1 <= compression <= 22 and compression != 0:
            raise UsageError("compression level must be 0 (off) or 1-22")
        if not 1024 * 1024 <= pack_size <= 1024 * 1024 * 1024:
            raise UsageError("pack size must be between 1 and 1024 MiB")
        master = MasterKey.generate()
        config = RepoConfig(secrets.token_hex(32), chunker or ChunkerParams(), pack_size,
                            compression)
        slot = keys.new_slot(master, password, kdf)
        keys.save_slot(store, slot)
        try:
            store.put_new(CONFIG, seal_file(Cipher(master), b"config", config.encode()))
        except ObjectExists:
            store.delete(keys.PREFIX + slot.id)
            raise RepositoryExists(f"repository already initialised at {store.description}") from None
        return cls(store, master, config, slot.id)

    @classmethod
    def open(cls, store: ObjectStore, password: str, upload_concurrency: int | None = None,
             cache_dir: str | None = None) -> Repository:
        """Open with the password; ``cache_dir`` enables the local cache (remote stores)."""
        try:
            sealed = store.get(CONFIG)
        except ObjectNotFound:
            raise RepositoryNotFound(
                f"no repository at {store.description} (run 'multibackup init' first)") from None
        master, key_id = keys.open_master_key(store, password)

        def decode(raw: bytes) -> RepoConfig:
            return RepoConfig.decode(open_file(Cipher(master), b"config", raw, "config"))

        try:
            config = decode(sealed)
        except IntegrityError:  # a damaged copy: another destination may hold a good one
            config = get_verified(store, CONFIG, decode)
        return cls(store, master, config, key_id, upload_concurrency, cache_dir)

    def close(self) -> None:
        """Wait for uploads; a pack still open here belongs to a failed run: its file
        (local disk) is removed, so it does not keep a full disk full."""
        self._uploader.shutdown(wait=True)
        with self._lock:
            builders, self._builders = list(self._builders.values()), {}
        for b in builders:
            if isinstance(b, SpooledPackBuilder):
                b.file.discard()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lock(self, exclusive: bool = False, command: str = "") -> Lock:
        return Lock(self.store, self.cipher, exclusive, command).acquire()

    # ---- index ------------------------------------------------------------------------

    def index_files(self) -> list[str]:
        return [i.key[len(INDEX):] for i in self.store.list(INDEX)]

    def _read_cached(self, key: str) -> bytes:
        """A content-addressed object, from the local cache when it holds a valid copy.

        The bytes are checked against the object's name; a store with several copies then
        falls back to another copy when one is damaged.
        """
        data = self.cache.get(key) if self.cache is not None else None
        if data is None:
            data = get_verified(self.store, key, _named_by_content(key))
            if self.cache is not None:
                self.cache.put(key, data)
        return data

    def read_index_file(self, index_id: str, raw: bytes | None = None
                        ) -> tuple[dict[bytes, list[PackEntry]], list[bytes]]:
        """An index file's packs and the index files it supersedes; from ``raw`` (its
        verified bytes, e.g. rebuilt from damaged copies) when given, else read."""
        what = f"index file {index_id[:8]}"
        return decode_index(self._open_index(index_id, raw, what), what)

    def _open_index(self, index_id: str, raw: bytes | None, what: str) -> bytes:
        raw = self._read_cached(INDEX + index_id) if raw is None else raw
        return open_file(self.cipher, b"index", raw, what)

    def list_packs(self) -> dict[str, int]:
        """Pack name -> size; files under data/ that are not named like packs are ignored."""
        out = {}
        for info in self.store.list(DATA):
            name = info.key.rsplit("/", 1)[1]
            if _is_object_name(name):
                out[name] = info.size
        return out

    def load_index(self, recover: bool = True,
                   progress: Callable[[int], None] | None = None) -> LoadReport:
        """Load every index file; index packs no index lists (from an interrupted run).

        Damaged index files are reported, not fatal: the packs they described are indexed
        again from their own headers, so every intact blob stays reachable.
        """
        report = LoadReport()
        files: dict[str, dict[bytes, bytes]] = {}
        superseded: set[str] = set()
        listed = self.index_files()
        if self.cache:
            self.cache.forget_missing(INDEX, set(listed))
        for index_id in listed:
            try:
                what = f"index file {index_id[:8]}"
                packs, sup = decode_index_raw(self._open_index(index_id, None, what), what)
            except (IntegrityError, ObjectNotFound) as exc:
                report.damaged_index_files.append(f"{index_id}: {exc}")
                continue
            files[index_id] = packs
            superseded.update(s.hex() for s in sup)
            if progress:
                progress(1)
        for index_id, packs in files.items():
            if index_id in superseded:
                continue
            report.index_files += 1
            for pack_id, block in packs.items():
                self.index.add_pack_records(pack_id, block)
        if recover:
            report.pack_sizes = self.list_packs()
            if self.cache:
                self.cache.forget_missing(DATA, set(report.pack_sizes))
            for name, size in report.pack_sizes.items():
                pack_id = bytes.fromhex(name)
                if self.index.has_pack(pack_id):
                    continue
                try:
                    entries = self.read_pack_header(name, size)
                except (IntegrityError, StoreError) as exc:
                    report.damaged_packs.append(f"{name}: {exc}")
                    continue
                self.index.add_pack(pack_id, entries)
                with self._index_lock:
                    self._unsaved[pack_id] = entries
                report.recovered_packs.append(name)
        self.index.compact()
        return report

    def read_pack_header(self, name: str, size: int) -> list[PackEntry]:
        what = f"pack {name[:8]}"
        if size < 4:
            raise IntegrityError(f"{what} is truncated")

        def parse(tail: bytes) -> list[PackEntry]:
            hlen = header_length(tail)
            if hlen + 4 > size:
                raise IntegrityError(f"{what} header length is out of range (truncated?)")
            if hlen + 4 <= len(tail):
                sealed = tail[len(tail) - 4 - hlen:len(tail) - 4]
            else:
                sealed = self.store.get(pack_key(name), size - 4 - hlen, hlen)
            return parse_header(self.cipher, sealed, size, what)

        return get_verified(self.store, pack_key(name), parse, max(0, size - 4096),
                            min(size, 4096))

    def save_index_file(self, packs: dict[bytes, list[PackEntry]],
                        supersedes: list[str] = ()) -> str:  # type: ignore[assignment]
        body = encode_index(packs, [bytes.fromhex(s) for s in supersedes])
        sealed = seal_file(self.cipher, b"index", body, self.compression or DEFAULT_LEVEL)
        index_id = storage_id(sealed)
        self.store.put(INDEX + index_id, sealed)
        if self.cache:
            self.cache.put(INDEX + index_id, sealed)
        return index_id

    def _save_unsaved_index(self) -> None:
        with self._index_lock:
            packs, self._unsaved = self._unsaved, {}
            if packs:
                try:
                    self.save_index_file(packs)
                except BaseException:
                    self._unsaved.update(packs)
                    raise

    # ---- blobs ------------------------------------------------------------------------

    def save_blob(self, blob_type: BlobType, data: bytes | memoryview,
                  blob_id: bytes | None = None) -> tuple[bytes, bool]:
        """Store a blob unless the repository already has it; returns (id, was_new)."""
        if self._upload_error is not None:
            raise self._upload_error
        if blob_id is None:
            blob_id = self.cipher.blob_id(data)
        with self._lock:
            if blob_id in self.index or blob_id in self._pending:
                return blob_id, False
            self._pending.add(blob_id)
        body = blob_body(data, self.compression)  # zstd runs here, without any lock
        length = len(body) + OVERHEAD
        ready: list[PackBuilder | SpooledPackBuilder] = []
        try:
            with self._lock:
                builder = self._builders.get(blob_type)
                if builder is not None and not builder.fits(length):
                    ready += self._close(blob_type)
                    builder = None
                if builder is None:
                    builder = self._builders[blob_type] = self._new_builder(blob_type, length)
                slot = builder.reserve(blob_type, blob_id, length, len(data))
                st = self.stats
                if blob_type is BlobType.DATA:
                    st.data_blobs += 1
                else:
                    st.tree_blobs += 1
                st.bytes_raw += len(data)
                st.bytes_stored += length
            try:
                if isinstance(slot, memoryview):
                    with slot:
                        self.cipher.seal_into(slot, body, blob_id)  # straight into the pack
                else:
                    assert isinstance(builder, SpooledPackBuilder)
                    try:
                        with memoryview(self._seal_scratch.get(length))[:length] as out:
                            self.cipher.seal_into(out, body, blob_id)
                            builder.file.write_at(out, slot)
                    except BaseException as exc:
                        # a hole in the pack: it is discarded, and the error stops every later
                        # write and the flush, so no snapshot can name the blobs it held
                        builder.broken = True
                        if self._upload_error is None:
                            self._upload_error = exc
                        raise
            finally:
                with self._lock:
                    builder.pending -= 1
                    if builder.closed:
                        if builder.pending == 0:  # the last writer of a closed pack sends it
                            ready.append(builder)
                    elif builder.size >= self._target_size(blob_type):
                        ready += self._close(blob_type)
        finally:
            # packs closed on the way go out even when this blob failed: a good one is
            # stored, a broken one's file removed, so none is left behind in .tmp/
            for b in ready:
                self._upload(b)
        return blob_id, True

    def _new_builder(self, blob_type: BlobType,
                     length: int) -> PackBuilder | SpooledPackBuilder:
        """An empty pack for a blob of ``length`` (caller holds the lock): data packs in a
        file on local disk, else in memory (tree packs are cached whole, as bytes)."""
        capacity = max(self._target_size(blob_type) + 1024 * 1024, length + header_size(1))
        if self._spools and blob_type is BlobType.DATA:
            spool = self.store.spool("pack", "a new pack")  # type: ignore[attr-defined]
            return SpooledPackBuilder(capacity, spool)
        spare = self._spare_buffers.get(capacity)
        return PackBuilder(capacity, spare.pop() if spare else None)

    def _target_size(self, blob_type: BlobType) -> int:
        """Tree packs stay small (4 MiB): they are read and cached whole, and are few."""
        if blob_type is BlobType.TREE:
            return min(self.config.pack_size, 4 * 1024 * 1024)
        return self.config.pack_size

    def _close(self, blob_type: BlobType) -> list[PackBuilder | SpooledPackBuilder]:
        """Take the open pack of a type out of use (caller holds the lock).

        Returns it if it can be uploaded now; otherwise its last writer uploads it.
        """
        builder = self._builders.pop(blob_type)
        builder.closed = True
        return [builder] if builder.pending == 0 else []

    def _upload(self, builder: PackBuilder | SpooledPackBuilder) -> None:
        self._upload_slots.acquire()  # back-pressure: bounded packs in memory
        try:
            future = self._uploader.submit(self._write_pack, builder)
        except BaseException:
            self._upload_slots.release()
            raise
        with self._lock:
            self._uploads.add(future)
        future.add_done_callback(self._upload_done)

    def _upload_done(self, future: Future[None]) -> None:
        self._upload_slots.release()
        with self._lock:
            self._uploads.discard(future)
        exc = future.exception()
        if exc is not None and self._upload_error is None:
            self._upload_error = exc

    def _write_pack(self, builder: PackBuilder | SpooledPackBuilder) -> None:
        if isinstance(builder, SpooledPackBuilder):
            if builder.broken:  # a blob's write failed, and that error stops the run
                builder.file.discard()
                return
            try:
                size = builder.finish(self.cipher)
                pack_hex = self._spooled_id(builder.file, size)
                self.store.put_spool(pack_key(pack_hex), builder.file)  # type: ignore[attr-defined]
            except BaseException:
                builder.file.discard()
                raise
        elif self._spools:
            # a tree pack on local disk, written from its own buffer: no copy of it, and
            # one pack less in memory
            with builder.finish_view(self.cipher) as view:
                pack_hex = storage_id(view)
                self.store.put_buffer(pack_key(pack_hex), view)  # type: ignore[attr-defined]
                if self.cache and all(e.type is BlobType.TREE for e in builder.entries):
                    self.cache.put(pack_key(pack_hex), bytes(view))
            self._spare(builder.take_buffer())
        else:
            data = builder.finish(self.cipher)
            self._spare(builder.take_buffer())
            pack_hex = storage_id(data)
            self.store.put(pack_key(pack_hex), data)
            if self.cache and all(e.type is BlobType.TREE for e in builder.entries):
                self.cache.put(pack_key(pack_hex), data)
        pack_id = bytes.fromhex(pack_hex)
        with self._lock:
            self.index.add_pack(pack_id, builder.entries)
            for e in builder.entries:
                self._pending.discard(e.id)
            self.stats.packs += 1
        with self._index_lock:
            self._unsaved[pack_id] = builder.entries
            due = len(self._unsaved) >= INDEX_EVERY_PACKS
        if due:
            self._save_unsaved_index()

    def _spooled_id(self, file: PackFile, size: int) -> str:
        """The storage id of a pack written to a file, read back in 1 MiB pieces (its
        blobs were written out of order, by several threads)."""
        hasher = storage_hasher()
        buf = memoryview(self._read_back.get(1024 * 1024))
        offset = 0
        while offset < size:
            n = file.read_at(buf[:min(len(buf), size - offset)], offset)
            if n == 0:
                raise IntegrityError("a new pack is shorter than was written to it")
            hasher.update(buf[:n])
            offset += n
        return str(hasher.hexdigest())

    def _spare(self, buf: bytearray) -> None:
        """Keep one spare buffer per pack size for the next pack (no fresh page faults)."""
        with self._lock:
            spare = self._spare_buffers.setdefault(len(buf), [])
            if not spare:
                spare.append(buf)

    def flush(self) -> None:
        """Upload partial packs, wait for every upload, then write the index for them."""
        with self._lock:
            builders = [b for t in list(self._builders) for b in self._close(t) if len(b)]
        for b in builders:
            self._upload(b)
        while True:
            with self._lock:
                pending = list(self._uploads)
            if not pending:
                break
            for f in pending:
                try:
                    f.result()
                except BaseException:
                    pass
        if self._upload_error is not None:
            raise self._upload_error
        self._save_unsaved_index()

    def load_blob(self, blob_id: bytes, verify: bool = True) -> bytes:
        loc = self.index.lookup(blob_id)
        if loc is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the index")
        if loc.type is BlobType.TREE:
            try:
                sealed = self._tree_blob_bytes(loc.pack_id, loc.offset, loc.length)
            except IntegrityError:
                # the tree pack fails its hash as a whole: damage somewhere in it must not
                # cost the intact trees beside it, so this one is read alone (below) and
                # proven by its own id
                pass
            else:
                return open_blob(self.cipher, blob_id, sealed, loc.raw_length, verify)
        return get_verified(
            self.store, pack_key(loc.pack_id),
            lambda sealed: open_blob(self.cipher, blob_id, sealed, loc.raw_length, verify),
            loc.offset, loc.length)

    # ---- trees ------------------------------------------------------------------------

    def _tree_blob_bytes(self, pack_id: bytes, offset: int, length: int) -> bytes:
        """Tree blobs come from whole tree packs: one read serves a whole walk.

        Remote repositories keep tree packs in the local cache; either way the last few
        tree packs stay in memory (at most two, a pack is at most ~17 MiB), so walking a
        snapshot costs one read per tree pack rather than one per directory.
        """
        with self._lock:
            pack = self._tree_packs.get(pack_id)
            if pack is not None:
                self._tree_packs.move_to_end(pack_id)
        if pack is None:
            pack = self._read_cached(pack_key(pack_id))
            with self._lock:
                self._tree_packs[pack_id] = pack
                while len(self._tree_packs) > 2:
                    self._tree_packs.popitem(last=False)
        return pack[offset:offset + length]

    def load_tree(self, tree_id: bytes, keep: bool = True) -> list[Node]:
        """A tree's nodes; ``keep=False`` for a caller that reads each tree once (a
        backup's parent trees), so they are not all held in the decoded-tree cache."""
        with self._lock:
            cached = self._tree_cache.get(tree_id)
            if cached is not None:
                self._tree_cache.move_to_end(tree_id)
                return cached
        nodes = decode_tree(self.load_blob(tree_id), f"tree {tree_id.hex()[:16]}")
        if not keep:
            return nodes
        with self._lock:
            self._tree_cache[tree_id] = nodes
            if len(self._tree_cache) > 4096:
                self._tree_cache.popitem(last=False)
        return nodes

    def save_tree(self, nodes: list[Node]) -> tuple[bytes, bool]:
        return self.save_blob(BlobType.TREE, encode_tree(nodes))

    def walk(self, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Depth-first (path, node) for every node below a tree; paths use '/'."""
        for node in self.load_tree(tree_id):
            path = f"{prefix}/{node.name}"
            yield path, node
            if node.subtree is not None:
                yield from self.walk(node.subtree, path)

    # ---- snapshots --------------------------------------------------------------------

    def snapshot_ids(self) -> list[str]:
        ids = [i.key[len(SNAPSHOTS):] for i in self.store.list(SNAPSHOTS)]
        if self.cache:
            self.cache.forget_missing(SNAPSHOTS, set(ids))
        return ids

    def load_snapshot(self, snap_id: str, raw: bytes | None = None) -> Snapshot:
        """A snapshot, from ``raw`` (its verified bytes) when given, else read."""
        raw = self._read_cached(SNAPSHOTS + snap_id) if raw is None else raw
        what = f"snapshot {snap_id[:8]}"
        return Snapshot.decode(open_file(self.cipher, b"snapshot", raw, what), snap_id)

    def snapshots(self, strict: bool = False) -> list[Snapshot]:
        """Every readable snapshot, oldest first.

        A damaged snapshot, or one another client deleted meanwhile, is skipped (and noted
        in ``snapshot_errors``) so one bad file does not stop backups; ``strict`` raises
        instead, for prune, which must never miss a reference.
        """
        snaps = []
        self.snapshot_errors: list[str] = []
        for snap_id in self.snapshot_ids():
            try:
                snaps.append(self.load_snapshot(snap_id))
            except ObjectNotFound:
                if strict:
                    raise
            except IntegrityError as exc:
                if strict:
                    raise
                self.snapshot_errors.append(str(exc))
        return sorted(snaps, key=lambda s: (s.time, s.id))

    def save_snapshot(self, snap: Snapshot) -> str:
        snap.program_version = snap.program_version or f"multibackup {__version__}"
        sealed = seal_file(self.cipher, b"snapshot", snap.encode())
        snap.id = storage_id(sealed)
        self.store.put(SNAPSHOTS + snap.id, sealed)
        if self.cache:
            self.cache.put(SNAPSHOTS + snap.id, sealed)
        return snap.id

    def remove_snapshot(self, snap_id: str) -> None:
        self.store.delete(SNAPSHOTS + snap_id)

    def find_snapshot(self, ref: str, host: str | None = None,
                      paths: list[str] | None = None) -> Snapshot:
        """Resolve 'latest' or a unique id prefix to a snapshot."""
        if ref == "latest":
            snaps = [s for s in self.snapshots()
                     if (host is None or s.hostname == host)
                     and (not paths or sorted(s.paths) == sorted(paths))]
            if not snaps:
                raise MultibackupError("no snapshot found for 'latest'")
            return snaps[-1]
        ids = [i for i in self.snapshot_ids() if i.startswith(ref.lower())]
        if not ids:
            raise MultibackupError(f"no snapshot matches {ref!r}")
        if len(ids) > 1:
            raise MultibackupError(f"snapshot id prefix {ref!r} is ambiguous ({len(ids)} match)")
        return self.load_snapshot(ids[0])

    @staticmethod
    def now() -> datetime:
        return datetime.now().astimezone()
