"""The server key: cloud credentials, database passwords and alert URLs are sealed with it.

The key is 32 random bytes kept in a file readable only by the server's user (or given as
``MULTIBACKUP_SERVER_KEY``, base64), apart from the database, so a copy of the database
alone reveals no secret. Sealing is AES-256-GCM with a random nonce per value.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from multibackup.errors import UsageError

KEY_ENV = "MULTIBACKUP_SERVER_KEY"
_AAD = b"multibackup-server-secret-v1"


class Keyring:
    """Seals and opens small secret dicts with the server key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise UsageError("the server key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Keyring(<hidden>)"

    @classmethod
    def load(cls, path: str, create: bool = True) -> Keyring:
        """The key from $MULTIBACKUP_SERVER_KEY, else the file, created on the server's
        first start (a worker never creates one: it must use the server's)."""
        env = os.environ.get(KEY_ENV)
        if env:
            try:
                return cls(base64.b64decode(env, validate=True))
            except (binascii.Error, ValueError):
                raise UsageError(f"{KEY_ENV} is not the base64 of 32 bytes") from None
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UsageError(f"cannot read the server key {path}: {exc.strerror}") from None
        if not create:
            raise UsageError(f"no server key at {path}: copy the server's server.key there "
                             f"(mode 0600) or set {KEY_ENV}")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return cls(key)

    def seal(self, values: dict[str, Any]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, json.dumps(values).encode(), _AAD)

    def open(self, sealed: bytes | None) -> dict[str, Any]:
        """The sealed dict ({} for nothing); a wrong key is a one-line error."""
        if not sealed:
            return {}
        try:
            plain = self._aead.decrypt(sealed[:12], sealed[12:], _AAD)
        except (InvalidTag, ValueError):
            raise UsageError("a stored secret cannot be decrypted: the server key is not "
                             "the one it was saved with") from None
        value = json.loads(plain)
        return value if isinstance(value, dict) else {}
