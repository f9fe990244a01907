"""How glibc's malloc keeps and returns memory, tuned per command (no-op elsewhere)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 1024 * 1024
_TRIM_THRESHOLD = 128 * 1024  # glibc's default


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def tune() -> None:
    """Keep RSS close to live memory (measured on the 1 GiB bench backup).

    One arena per thread, and glibc's sliding mmap threshold (which rises to the size of
    the largest buffer freed, here a 17 MiB pack), leave freed chunks in fragmented heaps:
    peak RSS was 206 MB. Two arenas and a fixed 1 MiB threshold, so chunk-sized and larger
    buffers go back to the kernel when freed, bring it to ~140 MB at the same speed.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


@contextmanager
def blob_sized() -> Iterator[None]:
    """Keep freed blob-sized buffers in the heap for the next blob, inside the block.

    Restore and check decompress every blob into a new buffer. Under tune()'s 1 MiB
    threshold, each one of a MiB or more was a fresh mapping that the kernel zero-filled
    page by page and unmapped again: twice the decompression's own time for such a blob.
    Reused from the heap, the pages are already there; the heap holds a few blobs more
    (as many as the threads decompressing at once).
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 16 * 1024 * 1024)  # above the largest chunk
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
