"""Keys and authenticated encryption.

The master key is 64 random bytes: 32 for AES-256-GCM and 32 for keyed BLAKE3 chunk ids.
Every sealed object is ``nonce(12) || ciphertext || tag(16)``; the associated data binds
it to its role (a blob to its id, a snapshot to the word "snapshot"), so an attacker who
can write to the store cannot swap one object for another undetected.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import blake3

from multibackup.errors import IntegrityError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
ID_SIZE = 32


def _aesgcm(key: bytes) -> Any:
    """AES-GCM from ``cryptography``, imported on first use: a command derives its key
    (scrypt's 32 MiB, the peak of a small command's memory) before it needs a cipher, and
    the library's 9 MiB then load after that peak rather than under it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


@dataclass(frozen=True)
class MasterKey:
    """The repository's secret: encryption key plus chunk-id key."""

    encryption: bytes
    chunk_id: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32), os.urandom(32))

    def to_bytes(self) -> bytes:
        return self.encryption + self.chunk_id

    @classmethod
    def from_bytes(cls, data: bytes) -> MasterKey:
        if len(data) != 64:
            raise IntegrityError("master key has the wrong length")
        return cls(data[:32], data[32:])


class Cipher:
    """AES-256-GCM with random nonces and the chunk-id function of one master key."""

    def __init__(self, key: MasterKey) -> None:
        self._aead = _aesgcm(key.encryption)
        self._invalid = _invalid_tag()
        self._id_key = key.chunk_id

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """Keyed BLAKE3 of plaintext: equal content dedups, and ids reveal nothing."""
        return blake3.blake3(data, key=self._id_key).digest()

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def seal_into(self, out: memoryview, plaintext: bytes | memoryview, aad: bytes) -> None:
        """Seal straight into ``out`` (exactly ``len(plaintext) + OVERHEAD`` bytes): no copy."""
        nonce = os.urandom(NONCE_SIZE)
        out[:NONCE_SIZE] = nonce
        self._aead.encrypt_into(nonce, plaintext, aad, out[NONCE_SIZE:])

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str = "object",
             out: bytearray | None = None) -> bytes | memoryview:
        """Decrypt and authenticate; with ``out`` (large enough), into it: no allocation."""
        if len(sealed) < OVERHEAD:
            raise IntegrityError(f"{what} is truncated")
        view = memoryview(sealed)
        try:
            size = len(sealed) - OVERHEAD
            if out is not None and len(out) >= size:
                target = memoryview(out)[:size]  # decrypt_into wants the exact size
                self._aead.decrypt_into(view[:NONCE_SIZE], view[NONCE_SIZE:], aad, target)
                return target
            return self._aead.decrypt(view[:NONCE_SIZE], view[NONCE_SIZE:], aad)
        except self._invalid:
            raise IntegrityError(f"{what} failed authentication (damaged or tampered)") from None


def storage_id(data: bytes | memoryview) -> str:
    """Name of a stored file: unkeyed BLAKE3 of its bytes, so anyone can verify a copy."""
    return blake3.blake3(data).hexdigest()


def storage_hasher() -> Any:
    """An incremental :func:`storage_id`: ``update`` piece by piece, then ``hexdigest``."""
    return blake3.blake3()


@dataclass(frozen=True)
class KDFParams:
    """scrypt parameters; N=2^15, r=8 costs 32 MiB and about 0.1 s on this class of machine."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def derive(self, password: bytes, salt: bytes) -> bytes:
        maxmem = 128 * self.n * self.r * self.p + 16 * 1024 * 1024
        return hashlib.scrypt(password, salt=salt, n=self.n, r=self.r, p=self.p,
                              maxmem=maxmem, dklen=32)


def wrap_key(key: MasterKey, password: bytes, params: KDFParams, salt: bytes) -> bytes:
    kek = params.derive(password, salt)
    nonce = os.urandom(NONCE_SIZE)
    return nonce + _aesgcm(kek).encrypt(nonce, key.to_bytes(), b"multibackup key slot")


def unwrap_key(wrapped: bytes, password: bytes, params: KDFParams, salt: bytes) -> MasterKey | None:
    """The master key, or None when the password does not open this slot."""
    kek = params.derive(password, salt)
    aead = _aesgcm(kek)
    try:
        raw = aead.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], b"multibackup key slot")
    except (_invalid_tag(), ValueError):
        return None
    return MasterKey.from_bytes(raw)
