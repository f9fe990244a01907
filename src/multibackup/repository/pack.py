"""Pack files: many sealed blobs followed by a sealed header and its length.

``blob_0 || ... || blob_n-1 || sealed_header || u32le(len(sealed_header))``

The header lists, in order, each blob's type, stored length, raw length and id, so an
index can always be rebuilt from the packs alone. Offsets are implicit (running sum).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Protocol

from multibackup.errors import IntegrityError
from multibackup.repository.blob import BlobType
from multibackup.repository.crypto import OVERHEAD, Cipher

MAGIC = b"MBP1"
HEADER_AAD = b"multibackup pack header"
_ENTRY = struct.Struct("<BII32s")
_LEN = struct.Struct("<I")
Buffer = bytearray | mmap.mmap


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where one blob sits inside a pack."""

    type: BlobType
    id: bytes
    offset: int
    length: int  # stored (sealed) length
    raw_length: int  # plaintext length


def header_size(count: int) -> int:
    """Bytes the sealed header and its length field take for ``count`` blobs."""
    return len(MAGIC) + _ENTRY.size * count + OVERHEAD + _LEN.size


class _PackLayout:
    """Where a pack's blobs go, slot by slot: the bookkeeping both builders share.

    Concurrent writers reserve a slot (under the caller's lock) and then seal into it
    without any lock. ``pending`` counts slots still being written; a pack is finished
    only when it is closed and ``pending`` is back to zero.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.entries: list[PackEntry] = []
        self.pending = 0
        self.closed = False

    @property
    def size(self) -> int:
        return self.used

    def __len__(self) -> int:
        return len(self.entries)

    def fits(self, length: int) -> bool:
        return self.used + length + header_size(len(self.entries) + 1) <= self.capacity

    def _claim(self, blob_type: BlobType, blob_id: bytes, length: int, raw_length: int) -> int:
        if not self.fits(length):
            raise ValueError("blob does not fit in this pack")
        offset = self.used
        self.entries.append(PackEntry(blob_type, blob_id, offset, length, raw_length))
        self.used += length
        self.pending += 1
        return offset

    def _sealed_header(self, cipher: Cipher) -> bytes:
        """The header, sealed, followed by its length: what goes behind the blobs."""
        header = bytearray(MAGIC)
        for e in self.entries:
            header += _ENTRY.pack(int(e.type), e.length, e.raw_length, e.id)
        sealed = cipher.seal(bytes(header), HEADER_AAD)
        return sealed + _LEN.pack(len(sealed))


class PackBuilder(_PackLayout):
    """A pack being filled in memory: sealed blobs are written in place into one buffer,
    so a blob is copied neither into a list nor into a joined pack."""

    def __init__(self, capacity: int = 1024 * 1024, buffer: Buffer | None = None) -> None:
        # Anonymous memory: pages cost RSS only once written, so a pack that stays small
        # (tree packs, small incremental runs) does not hold its full capacity, and no
        # 17 MiB zero-fill runs with the GIL held. Buffers are recycled across packs.
        self._buf: Buffer = (buffer if buffer is not None and len(buffer) == capacity
                             else mmap.mmap(-1, capacity))
        super().__init__(len(self._buf))

    def reserve(self, blob_type: BlobType, blob_id: bytes, length: int,
                raw_length: int) -> memoryview:
        """Claim ``length`` bytes for a sealed blob; the caller fills the returned view."""
        offset = self._claim(blob_type, blob_id, length, raw_length)
        return memoryview(self._buf)[offset:offset + length]

    def add(self, blob_type: BlobType, blob_id: bytes, sealed: bytes, raw_length: int) -> None:
        """Append an already sealed blob (single-threaded use), growing the buffer if needed."""
        if not self.fits(len(sealed)):
            grown = bytearray(max(2 * len(self._buf), self.used + len(sealed)
                                  + header_size(len(self.entries) + 1)))
            grown[:self.used] = self._buf[:self.used]
            self._buf = grown
            self.capacity = len(grown)
        self.reserve(blob_type, blob_id, len(sealed), raw_length)[:] = sealed
        self.pending -= 1

    def finish(self, cipher: Cipher) -> bytes:
        """Seal the header behind the blobs; the pack's bytes, ready to upload.

        ``bytes``, copied once here: OpenDAL reads ``bytes`` without holding the GIL but
        copies a bytearray with it held (and walks a memoryview byte by byte, 40x slower).
        The buffer itself can then be reused for the next pack (``take_buffer``).
        """
        with self.finish_view(cipher) as view:
            return bytes(view)

    def finish_view(self, cipher: Cipher) -> memoryview:
        """As :meth:`finish`, but the pack as a view of the buffer, not copied: for a store
        that writes it as it is (local disk). Release it before ``take_buffer``."""
        tail = self._sealed_header(cipher)
        end = self.used + len(tail)
        self._buf[self.used:end] = tail
        return memoryview(self._buf)[:end]

    def take_buffer(self) -> Buffer:
        """Hand the (finished) pack's buffer over for reuse; this builder is done."""
        buf, self._buf = self._buf, bytearray()
        return buf


class PackFile(Protocol):
    """A file a pack is written into at known offsets (a local store's ``SpoolFile``)."""

    def write_at(self, data: memoryview, offset: int) -> None: ...

    def read_at(self, buffer: memoryview, offset: int) -> int: ...

    def discard(self) -> None: ...


class SpooledPackBuilder(_PackLayout):
    """A pack filled straight into a file: each writer seals a blob into its own scratch
    buffer and writes it at its slot's offset, so the pack never sits in memory.

    ``broken`` is set when a write failed: the pack has a hole and must be discarded.
    """

    def __init__(self, capacity: int, file: PackFile) -> None:
        super().__init__(capacity)
        self.file = file
        self.broken = False

    def reserve(self, blob_type: BlobType, blob_id: bytes, length: int,
                raw_length: int) -> int:
        """Claim ``length`` bytes for a sealed blob; the offset to write it at."""
        return self._claim(blob_type, blob_id, length, raw_length)

    def finish(self, cipher: Cipher) -> int:
        """Write the sealed header behind the blobs; the pack's length."""
        tail = self._sealed_header(cipher)
        self.file.write_at(memoryview(tail), self.used)
        return self.used + len(tail)


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
