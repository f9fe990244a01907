"""Blob and file payload encoding: optional zstd, then AEAD.

A blob's sealed body is either the raw chunk or one zstd frame; which one follows from
the lengths the pack header and index record: a body as long as the raw length is raw,
a shorter one is compressed (zstd is kept only when it saves more than 1/32). No tag byte
means a raw chunk is encrypted straight from the read buffer, without a copy.
Repository files (config, index, snapshot, lock) have no external raw length, so their
payload is ``tag || body``: tag 0 raw, tag 1 zstd.
Incompressible data (media, archives, already-encrypted files) is stored raw, so it costs
neither space nor decompression time on restore.
"""

from __future__ import annotations

import enum
import mmap
import threading
from typing import Any

from multibackup.errors import IntegrityError
from multibackup.repository.crypto import Cipher

RAW = 0
ZSTD = 1
DEFAULT_LEVEL = 3

_local = threading.local()


class BlobType(enum.IntEnum):
    DATA = 0
    TREE = 1


def _zstd() -> Any:
    """The zstandard module, imported on first use (after a command's key derivation,
    whose 32 MiB are the peak of a small command's memory)."""
    import zstandard

    return zstandard


def _compressor(level: int) -> Any:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = _zstd().ZstdCompressor(level=level)
    return comp


def _decompressor() -> Any:
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = _zstd().ZstdDecompressor()
    return dec


def compress(data: bytes | memoryview, level: int = DEFAULT_LEVEL) -> bytes | bytearray:
    """Tagged payload; stays raw when zstd saves less than 1/32 of the size."""
    if level > 0 and len(data) > 64:
        packed = _compressor(level).compress(data)
        if len(packed) < len(data) - (len(data) >> 5):
            return b"\x01" + packed
    raw = bytearray(len(data) + 1)  # tag + data in a single copy
    raw[1:] = data
    return raw


def decompress(payload: bytes, raw_length: int | None = None, what: str = "blob") -> bytes:
    if not payload:
        raise IntegrityError(f"{what} is empty")
    tag = payload[0]
    if tag == RAW:
        return payload[1:]
    if tag == ZSTD:
        try:
            if raw_length is not None:
                return _decompressor().decompress(payload[1:], max_output_size=raw_length)
            return _decompressor().decompress(payload[1:])
        except _zstd().ZstdError as exc:
            raise IntegrityError(f"{what} does not decompress: {exc}") from None
    raise IntegrityError(f"{what} has unknown compression tag {tag}")


_PROBE = 32 * 1024


def _incompressible(data: bytes | memoryview) -> bool:
    """Two 32 KiB samples that zstd-1 cannot shrink: skip compressing the whole chunk.

    Random-looking data (media, archives, encrypted files) still costs zstd about 1 ms
    per MiB to find out; the probe costs a twentieth of that.
    """
    if len(data) < 8 * _PROBE:
        return False
    mid = len(data) // 2
    sample = bytes(data[:_PROBE]) + bytes(data[mid:mid + _PROBE])
    return len(_compressor(1).compress(sample)) > len(sample) * 0.97


def blob_body(data: bytes | memoryview, level: int) -> bytes | memoryview:
    """What gets sealed for a blob: a zstd frame if it saves > 1/32, else ``data`` itself."""
    if level > 0 and len(data) > 64 and not _incompressible(data):
        packed = _compressor(level).compress(data)
        if len(packed) < len(data) - (len(data) >> 5):
            return packed
    return data


def seal_blob(cipher: Cipher, blob_id: bytes, data: bytes | memoryview, level: int) -> bytes:
    return cipher.seal(blob_body(data, level), blob_id)


class ScratchBuffers:
    """One buffer per thread to decrypt blobs into (``open_blob``'s ``scratch``), reused
    and grown to the largest blob met: not the chunker's maximum up front, since each would
    cost its full size in touched memory while most blobs are far smaller. Reuse spares
    the page faults of a fresh allocation per blob (check and restore).

    With ``reserve``, each buffer is instead anonymous memory of that size (or of the
    size asked, if larger): its pages cost RSS only once written, so one allocation can
    serve blobs of any size up to it while holding only what the largest one touched.
    """

    def __init__(self, reserve: int = 0) -> None:
        self._local = threading.local()
        self._reserve = reserve

    def get(self, size: int) -> bytearray | mmap.mmap:
        """This thread's buffer, at least ``size`` bytes long."""
        buf = getattr(self._local, "scratch", None)
        if buf is None or len(buf) < size:
            if self._reserve:
                buf = self._local.scratch = mmap.mmap(-1, max(self._reserve, size))
            else:
                # to the next power of two: a few steps up to the largest blob, not one
                # zero-filled allocation for every slightly larger blob met on the way
                buf = self._local.scratch = bytearray(max(1 << (size - 1).bit_length(),
                                                          1 << 20))
        return buf


def open_blob(cipher: Cipher, blob_id: bytes, sealed: bytes | memoryview, raw_length: int,
              verify: bool = True, scratch: bytearray | None = None) -> bytes | memoryview:
    """Decrypt a blob, decompress it if its body is shorter than ``raw_length``, verify it.

    With ``scratch`` the body is decrypted into it (a raw blob then comes back as a view
    of it, valid until the next call): check and restore, which consume each blob at
    once, save an allocation and its page faults per blob.
    """
    what = f"blob {blob_id.hex()[:16]}"
    body = cipher.open(sealed, blob_id, what, out=scratch)
    if len(body) == raw_length:
        data = body
    elif len(body) < raw_length:
        try:
            data = _decompressor().decompress(body, max_output_size=raw_length)
        except _zstd().ZstdError as exc:
            raise IntegrityError(f"{what} does not decompress: {exc}") from None
        if len(data) != raw_length:
            raise IntegrityError(f"{what} decompresses to the wrong length")
    else:
        raise IntegrityError(f"{what} is longer than its recorded raw length")
    if verify and cipher.blob_id(data) != blob_id:
        raise IntegrityError(f"{what} content does not match its id")
    return data


def seal_file(cipher: Cipher, kind: bytes, data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """Encrypt a repository file (config, index, snapshot, lock) bound to its kind."""
    return cipher.seal(compress(data, level), kind)


def open_file(cipher: Cipher, kind: bytes, sealed: bytes, what: str) -> bytes:
    return decompress(cipher.open(sealed, kind, what), None, what)
