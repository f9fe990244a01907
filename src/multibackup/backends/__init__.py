"""Backends: one small object-store interface over every kind of storage.

The repository layer only ever talks to :class:`ObjectStore`; mirror and erasure-coded
stores implement the same interface on top of several backends.
"""

from multibackup.backends.base import ObjectInfo, ObjectStore
from multibackup.backends.location import (
    CREDENTIAL_KEYS,
    Location,
    open_store,
    operator_config,
    parse_location,
)
from multibackup.backends.providers import PROVIDERS, provider_location

__all__ = ["ObjectInfo", "ObjectStore", "Location", "open_store", "parse_location",
           "operator_config", "CREDENTIAL_KEYS", "PROVIDERS", "provider_location"]
