"""The index: which pack holds each blob, at what offset and length.

In memory each blob costs one dict slot whose value is a single packed integer, about
160 bytes per blob including the 32-byte key - about 160 MB for a million chunks (1 TB
of data). Index files are binary, compressed and sealed; see docs/format.md.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from multibackup.errors import IntegrityError
from multibackup.repository.blob import BlobType
from multibackup.repository.pack import PackEntry

MAGIC = b"MBI1"
_U32 = struct.Struct("<I")
_BLOB = struct.Struct("<BIII32s")


@dataclass(frozen=True, slots=True)
class BlobLocation:
    pack_id: bytes
    type: BlobType
    offset: int
    length: int
    raw_length: int


class Index:
    """Blob id -> location, for every pack the repository knows about."""

    def __init__(self) -> None:
        self._packs: list[bytes] = []
        self._pack_no: dict[bytes, int] = {}
        self._blobs: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def add_pack(self, pack_id: bytes, entries: Iterable[PackEntry]) -> None:
        no = self._pack_no.get(pack_id)
        if no is None:
            no = self._pack_no[pack_id] = len(self._packs)
            self._packs.append(pack_id)
        for e in entries:
            if e.id not in self._blobs:
                self._blobs[e.id] = ((no << 97) | (int(e.type) << 96) | (e.offset << 64)
                                     | (e.length << 32) | e.raw_length)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        value = self._blobs.get(blob_id)
        if value is None:
            return None
        return BlobLocation(self._packs[value >> 97], BlobType((value >> 96) & 1),
                            (value >> 64) & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF,
                            value & 0xFFFFFFFF)

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._pack_no

    def pack_ids(self) -> list[bytes]:
        return list(self._packs)

    def blob_ids(self) -> Iterator[bytes]:
        return iter(self._blobs)


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
