"""Stores: one logical object store over backends (single, or mirrored on several)."""

from multibackup.store.mirror import DestinationState, MirrorStore

__all__ = ["DestinationState", "MirrorStore"]
