"""Backends: one small object-store interface over every kind of storage.

The repository layer only ever talks to :class:`ObjectStore`; mirror and erasure-coded
stores (later) implement the same interface on top of several backends.
"""

from multibackup.backends.base import ObjectInfo, ObjectStore
from multibackup.backends.location import Location, open_store, parse_location

__all__ = ["ObjectInfo", "ObjectStore", "Location", "open_store", "parse_location"]
