"""Blob and file payload encoding: one tag byte, optional zstd, then AEAD.

A payload is ``tag || body`` where tag 0 means the body is the raw bytes and tag 1 means a
zstd frame. Incompressible data (media, archives, already-encrypted files) is stored raw,
so it costs neither space nor decompression time on restore.
"""

from __future__ import annotations

import enum
import threading

import zstandard

from multibackup.errors import IntegrityError
from multibackup.repository.crypto import Cipher

RAW = 0
ZSTD = 1
DEFAULT_LEVEL = 3

_local = threading.local()


class BlobType(enum.IntEnum):
    DATA = 0
    TREE = 1


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(level=level)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
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
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what} does not decompress: {exc}") from None
    raise IntegrityError(f"{what} has unknown compression tag {tag}")


def seal_blob(cipher: Cipher, blob_id: bytes, data: bytes | memoryview, level: int) -> bytes:
    return cipher.seal(compress(data, level), blob_id)


def open_blob(cipher: Cipher, blob_id: bytes, sealed: bytes | memoryview,
              raw_length: int | None = None, verify: bool = True) -> bytes:
    what = f"blob {blob_id.hex()[:16]}"
    data = decompress(cipher.open(sealed, blob_id, what), raw_length, what)
    if verify and cipher.blob_id(data) != blob_id:
        raise IntegrityError(f"{what} content does not match its id")
    return data


def seal_file(cipher: Cipher, kind: bytes, data: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """Encrypt a repository file (config, index, snapshot, lock) bound to its kind."""
    return cipher.seal(compress(data, level), kind)


def open_file(cipher: Cipher, kind: bytes, sealed: bytes, what: str) -> bytes:
    return decompress(cipher.open(sealed, kind, what), None, what)
