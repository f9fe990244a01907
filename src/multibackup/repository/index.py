"""The index: which pack holds each blob, at what offset and length.

Loaded index entries live in one sorted, fixed-width byte table (49 bytes per blob: the
32-byte id then pack number, type, offset, length, raw length) with a 65,536-bucket
directory on the first two id bytes, so a look-up touches a handful of records and a
million chunks (about 1 TB of data) cost about 50 MB rather than the ~160 MB a dict of
Python objects would. Blobs added during a run go to a small dict until the next compact().
Index files are binary, compressed and sealed; see docs/format.md.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from multibackup.errors import IntegrityError
from multibackup.repository.blob import BlobType
from multibackup.repository.pack import PackEntry

MAGIC = b"MBI1"
_U32 = struct.Struct("<I")
_BLOB = struct.Struct("<BIII32s")
_REC = struct.Struct("<32sIBIII")  # in-memory table record
_VAL = struct.Struct("<IBIII")


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack_id: bytes
    type: BlobType
    offset: int
    length: int
    raw_length: int


class _Table:
    """Immutable sorted records plus a directory: bucket b spans records dir[b]:dir[b+1]."""

    def __init__(self, records: bytes, count: int) -> None:
        self.records = records
        self.count = count
        directory = array("I", bytes(4 * 65537))
        size = _REC.size
        # counts per bucket, then prefix sums
        for i in range(count):
            o = i * size
            directory[(records[o] << 8 | records[o + 1]) + 1] += 1
        for b in range(1, 65537):
            directory[b] += directory[b - 1]
        self.directory = directory

    def find(self, key: bytes) -> int:
        """Record number of ``key``, or -1."""
        b = key[0] << 8 | key[1]
        lo, hi = self.directory[b], self.directory[b + 1]
        recs, size = self.records, _REC.size
        while lo < hi:
            mid = (lo + hi) >> 1
            o = mid * size
            k = recs[o:o + 32]
            if k < key:
                lo = mid + 1
            elif k > key:
                hi = mid
            else:
                return mid
        return -1

    def value(self, no: int) -> tuple[int, int, int, int, int]:
        return _VAL.unpack_from(self.records, no * _REC.size + 32)

    def ids(self) -> Iterator[bytes]:
        recs, size = self.records, _REC.size
        for i in range(self.count):
            yield recs[i * size:i * size + 32]


class Index:
    """Blob id -> location, for every pack the repository knows about."""

    def __init__(self) -> None:
        self._packs: list[bytes] = []
        self._pack_no: dict[bytes, int] = {}
        self._table = _Table(b"", 0)
        self._delta: dict[bytes, tuple[int, int, int, int, int]] = {}

    def __len__(self) -> int:
        return self._table.count + len(self._delta)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._delta or self._table.find(blob_id) >= 0

    def add_pack(self, pack_id: bytes, entries: Iterable[PackEntry]) -> None:
        no = self._pack_no.get(pack_id)
        if no is None:
            no = self._pack_no[pack_id] = len(self._packs)
            self._packs.append(pack_id)
        delta, table = self._delta, self._table
        for e in entries:
            if e.id not in delta and (table.count == 0 or table.find(e.id) < 0):
                delta[e.id] = (no, int(e.type), e.offset, e.length, e.raw_length)

    def compact(self) -> None:
        """Fold blobs added since the last compaction into the sorted table."""
        if not self._delta:
            return
        parts = [self._table.records[i * _REC.size:(i + 1) * _REC.size]
                 for i in range(self._table.count)]
        parts += [_REC.pack(k, *v) for k, v in self._delta.items()]
        parts.sort()
        self._table = _Table(b"".join(parts), len(parts))
        self._delta = {}

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        value = self._delta.get(blob_id)
        if value is None:
            no = self._table.find(blob_id)
            if no < 0:
                return None
            value = self._table.value(no)
        pack_no, kind, offset, length, raw_length = value
        return BlobLocation(self._packs[pack_no], BlobType(kind), offset, length, raw_length)

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._pack_no

    def pack_ids(self) -> list[bytes]:
        return list(self._packs)

    def blob_ids(self) -> Iterator[bytes]:
        yield from self._table.ids()
        yield from list(self._delta)


def encode_index(packs: dict[bytes, list[PackEntry]], supersedes: Iterable[bytes] = ()) -> bytes:
    out = bytearray(MAGIC)
    sup = list(supersedes)
    out += _U32.pack(len(sup))
    for s in sup:
        out += s
    out += _U32.pack(len(packs))
    for pack_id, entries in packs.items():
        out += pack_id + _U32.pack(len(entries))
        for e in entries:
            out += _BLOB.pack(int(e.type), e.offset, e.length, e.raw_length, e.id)
    return bytes(out)


def decode_index(data: bytes, what: str) -> tuple[dict[bytes, list[PackEntry]], list[bytes]]:
    """(pack id -> entries, ids of index files this one supersedes)."""
    try:
        if data[:4] != MAGIC:
            raise IntegrityError(f"{what} is not an index file")
        pos = 4
        (nsup,) = _U32.unpack_from(data, pos)
        pos += 4
        supersedes = [data[pos + 32 * i: pos + 32 * (i + 1)] for i in range(nsup)]
        pos += 32 * nsup
        (npacks,) = _U32.unpack_from(data, pos)
        pos += 4
        packs: dict[bytes, list[PackEntry]] = {}
        for _ in range(npacks):
            pack_id = data[pos:pos + 32]
            (nblobs,) = _U32.unpack_from(data, pos + 32)
            pos += 36
            entries = []
            for _ in range(nblobs):
                kind, offset, length, raw_length, blob_id = _BLOB.unpack_from(data, pos)
                pos += _BLOB.size
                entries.append(PackEntry(BlobType(kind), blob_id, offset, length, raw_length))
            packs[pack_id] = entries
    except (struct.error, ValueError):
        raise IntegrityError(f"{what} is malformed") from None
    if pos != len(data):
        raise IntegrityError(f"{what} has trailing bytes")
    return packs, supersedes
