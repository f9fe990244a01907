"""Key slots: the master key wrapped by scrypt of each password.

``keys/<id>`` is plain JSON (KDF parameters, salt, wrapped key) so that adding, changing or
removing a password never touches the data. Any one slot opens the repository.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from multibackup.backends.base import ObjectStore
from multibackup.errors import IntegrityError, ObjectNotFound, UsageError, WrongPassword
from multibackup.repository.crypto import KDFParams, MasterKey, storage_id, unwrap_key, wrap_key

PREFIX = "keys/"


@dataclass
class KeySlot:
    id: str
    created: str
    hostname: str
    username: str
    params: KDFParams
    salt: bytes
    wrapped: bytes

    def encode(self) -> bytes:
        return json.dumps({
            "created": self.created, "hostname": self.hostname, "username": self.username,
            "kdf": "scrypt", "n": self.params.n, "r": self.params.r, "p": self.params.p,
            "salt": base64.b64encode(self.salt).decode(),
            "data": base64.b64encode(self.wrapped).decode(),
        }, sort_keys=True, indent=1).encode()

    @classmethod
    def decode(cls, key_id: str, raw: bytes) -> KeySlot:
        try:
            d = json.loads(raw)
            if d.get("kdf") != "scrypt":
                raise IntegrityError(f"key {key_id[:8]} uses unknown KDF {d.get('kdf')!r}")
            params = KDFParams(int(d["n"]), int(d["r"]), int(d["p"]))
            if not (2 <= params.n <= 2**20 and params.n & (params.n - 1) == 0
                    and 1 <= params.r <= 32 and 1 <= params.p <= 16):
                # a planted key file must not make opening the repository eat the machine
                raise IntegrityError(f"key {key_id[:8]} has out-of-range KDF parameters")
            return cls(key_id, d["created"], d.get("hostname", ""), d.get("username", ""),
                       params, base64.b64decode(d["salt"]), base64.b64decode(d["data"]))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"key {key_id[:8]} is malformed") from None


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def new_slot(master: MasterKey, password: str, params: KDFParams | None = None) -> KeySlot:
    if not password:
        raise UsageError("an empty password is not allowed")
    params = params or KDFParams()
    salt = os.urandom(32)
    slot = KeySlot("", datetime.now(UTC).isoformat(), socket.gethostname(), _username(),
                   params, salt, wrap_key(master, password.encode(), params, salt))
    slot.id = storage_id(slot.encode())
    return slot


def save_slot(store: ObjectStore, slot: KeySlot) -> None:
    store.put_new(PREFIX + slot.id, slot.encode())


def list_slots(store: ObjectStore) -> list[KeySlot]:
    slots = []
    for info in store.list(PREFIX):
        key_id = info.key[len(PREFIX):]
        try:
            slots.append(KeySlot.decode(key_id, store.get(info.key)))
        except (IntegrityError, ObjectNotFound):
            continue
    return slots


def open_master_key(store: ObjectStore, password: str) -> tuple[MasterKey, str]:
    """The master key and the id of the slot the password opened."""
    for slot in list_slots(store):
        key = unwrap_key(slot.wrapped, password.encode(), slot.params, slot.salt)
        if key is not None:
            return key, slot.id
    raise WrongPassword("wrong password or no key found for this repository")
