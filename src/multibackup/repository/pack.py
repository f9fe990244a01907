"""Pack files: many sealed blobs followed by a sealed header and its length.

``blob_0 || ... || blob_n-1 || sealed_header || u32le(len(sealed_header))``

The header lists, in order, each blob's type, stored length, raw length and id, so an
index can always be rebuilt from the packs alone. Offsets are implicit (running sum).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from multibackup.errors import IntegrityError
from multibackup.repository.blob import BlobType
from multibackup.repository.crypto import Cipher

MAGIC = b"MBP1"
HEADER_AAD = b"multibackup pack header"
_ENTRY = struct.Struct("<BII32s")
_LEN = struct.Struct("<I")
ENTRY_SIZE = _ENTRY.size  # 41 bytes per blob in the header


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where one blob sits inside a pack."""

    type: BlobType
    id: bytes
    offset: int
    length: int  # stored (sealed) length
    raw_length: int  # plaintext length


class PackBuilder:
    """Accumulates sealed blobs in memory until the pack is big enough to upload."""

    def __init__(self) -> None:
        self._buf = bytearray()  # one growing buffer: no join copy when the pack is done
        self.entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        return len(self._buf)

    def add(self, blob_type: BlobType, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(blob_type, blob_id, len(self._buf), len(sealed), raw_length))
        self._buf += sealed

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, cipher: Cipher) -> bytearray:
        header = bytearray(MAGIC)
        for e in self.entries:
            header += _ENTRY.pack(int(e.type), e.length, e.raw_length, e.id)
        sealed = cipher.seal(bytes(header), HEADER_AAD)
        data = self._buf
        data += sealed
        data += _LEN.pack(len(sealed))
        self._buf = bytearray()
        return data


def header_length(tail: bytes) -> int:
    """Sealed-header length from the last 4 bytes of a pack."""
    if len(tail) < 4:
        raise IntegrityError("pack is too short to hold a header")
    return _LEN.unpack(tail[-4:])[0]


def parse_header(cipher: Cipher, sealed_header: bytes, pack_size: int, what: str) -> list[PackEntry]:
    """Decrypt and check a pack header against the pack's total size."""
    plain = cipher.open(sealed_header, HEADER_AAD, f"{what} header")
    if plain[:4] != MAGIC or (len(plain) - 4) % _ENTRY.size:
        raise IntegrityError(f"{what} header is malformed")
    entries = []
    offset = 0
    for pos in range(4, len(plain), _ENTRY.size):
        kind, length, raw_length, blob_id = _ENTRY.unpack_from(plain, pos)
        try:
            blob_type = BlobType(kind)
        except ValueError:
            raise IntegrityError(f"{what} header names unknown blob type {kind}") from None
        entries.append(PackEntry(blob_type, blob_id, offset, length, raw_length))
        offset += length
    if offset + len(sealed_header) + 4 != pack_size:
        raise IntegrityError(f"{what} size does not match its header (truncated?)")
    return entries


def parse_pack(cipher: Cipher, data: bytes, what: str) -> list[PackEntry]:
    """Entries of a pack held whole in memory."""
    hlen = header_length(data)
    if hlen + 4 > len(data):
        raise IntegrityError(f"{what} header length is out of range (truncated?)")
    return parse_header(cipher, data[len(data) - 4 - hlen:len(data) - 4], len(data), what)
