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
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import accumulate, islice
from operator import eq, itemgetter
from typing import NamedTuple

from multibackup.errors import IntegrityError
from multibackup.repository.blob import BlobType
from multibackup.repository.pack import PackEntry

MAGIC = b"MBI1"
_U32 = struct.Struct("<I")
_BLOB = struct.Struct("<BIII32s")
_REC = struct.Struct("<32sIBIII")  # in-memory table record
_VAL = struct.Struct("<IBIII")
_WHOLE = struct.Struct(f"{_REC.size}s")
_KINDS = bytes(t.value for t in BlobType)
_ID = itemgetter(slice(0, 32))
_TYPES = tuple(BlobType)  # by value: indexing is far cheaper than BlobType(kind)


class BlobLocation(NamedTuple):
    """Where a blob is stored. A tuple: restore and check look up every blob of a
    snapshot, and a frozen dataclass cost a microsecond per look-up to build."""

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
        # each record's bucket (its first two id bytes, big-endian), counted in C, then
        # prefix sums: a Python loop per record took 0.05 s for 40,000 blobs
        size = _REC.size
        pairs = bytearray(2 * count)
        pairs[0::2] = records[0::size]
        pairs[1::2] = records[1::size]
        buckets = array("H", pairs)
        if sys.byteorder == "little":
            buckets.byteswap()
        counts = [0] * 65537
        for b, n in Counter(buckets).items():
            counts[b + 1] = n
        self.directory = array("I", accumulate(counts))

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
        self._pending: list[bytes] = []  # whole index-file blocks, as table records

    def __len__(self) -> int:
        self._fold()
        return self._table.count + len(self._delta)

    def __contains__(self, blob_id: bytes) -> bool:
        if self._pending:  # inline, not _fold(): this is on every backup's hot path
            self.compact()
        return blob_id in self._delta or self._table.find(blob_id) >= 0

    def _number(self, pack_id: bytes) -> int:
        no = self._pack_no.get(pack_id)
        if no is None:
            no = self._pack_no[pack_id] = len(self._packs)
            self._packs.append(pack_id)
        return no

    def add_pack(self, pack_id: bytes, entries: Iterable[PackEntry]) -> None:
        no = self._number(pack_id)
        self._fold()
        delta, table = self._delta, self._table
        for e in entries:
            if e.id not in delta and (table.count == 0 or table.find(e.id) < 0):
                delta[e.id] = (no, int(e.type), e.offset, e.length, e.raw_length)

    def add_pack_records(self, pack_id: bytes, block: bytes) -> None:
        """A pack's entries as an index file stores them (see decode_index_raw): moved
        into table records column by column, not blob by blob, which made loading a
        large index several times faster. Seen by look-ups from the next compact() on,
        which every look-up does first."""
        if self._delta:  # so the table's order stays the order blobs were added in
            self.compact()
        n = len(block) // _BLOB.size
        stride, out = _BLOB.size, bytearray(n * _REC.size)
        rec = _REC.size
        for j in range(32):  # the id: the record's first 32 bytes, the entry's last 32
            out[j::rec] = block[13 + j::stride]
        for j, byte in enumerate(_U32.pack(self._number(pack_id))):
            out[32 + j::rec] = bytes((byte,)) * n
        for j in range(13):  # type, offset, length and raw length, in the entry's order
            out[36 + j::rec] = block[j::stride]
        self._pending.append(bytes(out))

    def _fold(self) -> None:
        if self._pending:
            self.compact()

    def compact(self) -> None:
        """Fold blobs added since the last compaction into the sorted table.

        Where two packs hold one blob, the pack added first keeps it.
        """
        if not self._delta and not self._pending:
            return
        delta = b"".join(_REC.pack(k, *v) for k, v in self._delta.items())
        buf = b"".join([self._table.records, *self._pending, delta])
        parts = list(map(itemgetter(0), _WHOLE.iter_unpack(buf)))
        del buf
        parts.sort(key=_ID)  # stable: of records with one id, the first added stays first
        # index files may name one blob in several packs: neighbours once sorted, found
        # by a scan in C that holds nothing (a dict of every id cost twice the time and
        # about 100 MB per million blobs)
        if self._pending and any(map(eq, map(_ID, parts), map(_ID, islice(parts, 1, None)))):
            # built from the end, so the first record of each id is the one kept
            first = dict(zip(map(_ID, reversed(parts)), reversed(parts), strict=True))
            parts = sorted(first.values())
        self._table = _Table(b"".join(parts), len(parts))
        self._delta = {}
        self._pending = []

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        if self._pending:
            self.compact()
        value = self._delta.get(blob_id)
        if value is None:
            no = self._table.find(blob_id)
            if no < 0:
                return None
            value = self._table.value(no)
        pack_no, kind, offset, length, raw_length = value
        return BlobLocation(self._packs[pack_no], _TYPES[kind], offset, length, raw_length)

    def blobs_per_pack(self) -> dict[bytes, int]:
        """How many blobs each pack holds, as look-ups see them (a blob stored in two
        packs counts for the one :meth:`lookup` names). Counted in C from the table's
        pack-number column: a restore asks once, for a few hundred thousand blobs."""
        self._fold()
        table, size = self._table, _REC.size
        column = bytearray(4 * table.count)
        for j in range(4):  # each record's pack number, little-endian after the id
            column[j::4] = table.records[32 + j::size]
        numbers = array("I", column)
        if sys.byteorder == "big":
            numbers.byteswap()
        counts = Counter(numbers)
        counts.update(value[0] for value in self._delta.values())
        return {self._packs[no]: n for no, n in counts.items()}

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._pack_no

    def pack_ids(self) -> list[bytes]:
        return list(self._packs)

    def blob_ids(self) -> Iterator[bytes]:
        self._fold()
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


def decode_index_raw(data: bytes, what: str) -> tuple[dict[bytes, bytes], list[bytes]]:
    """(pack id -> its entries as stored, 45 bytes each, ids of index files this one
    supersedes): checked whole, but not split into one object per blob."""
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
        packs: dict[bytes, bytes] = {}
        for _ in range(npacks):
            pack_id = data[pos:pos + 32]
            (nblobs,) = _U32.unpack_from(data, pos + 32)
            pos += 36
            end = pos + nblobs * _BLOB.size
            if len(pack_id) != 32 or end > len(data):
                raise IntegrityError(f"{what} is malformed")
            block = data[pos:end]
            if block[0::_BLOB.size].translate(None, _KINDS):
                raise IntegrityError(f"{what} is malformed")  # an unknown blob type
            packs[pack_id] = block
            pos = end
    except struct.error:
        raise IntegrityError(f"{what} is malformed") from None
    if pos != len(data):
        raise IntegrityError(f"{what} has trailing bytes")
    return packs, supersedes


def decode_index(data: bytes, what: str) -> tuple[dict[bytes, list[PackEntry]], list[bytes]]:
    """(pack id -> entries, ids of index files this one supersedes)."""
    raw, supersedes = decode_index_raw(data, what)
    packs = {pack_id: [PackEntry(BlobType(kind), blob_id, offset, length, raw_length)
                       for kind, offset, length, raw_length, blob_id in _BLOB.iter_unpack(block)]
             for pack_id, block in raw.items()}
    return packs, supersedes
