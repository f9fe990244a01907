"""Holding off Python's cyclic garbage collector during long, allocation-heavy runs."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block; reference counting still frees everything
    that forms no cycle.

    Restore and check hold every listing and file of a snapshot (or repository) while
    creating objects by the hundred thousand, and build no cycles: each collection of
    the oldest generation walks all of it again, 2-3 % of their CPU on the benchmark's
    38,000 files, more on larger trees.

    On the way out, what the block made is moved to the oldest generation untraversed
    (freeze, then unfreeze). Left in the youngest, all of it was walked by the first
    collection after the block: a fifth of a second at the end of the benchmark's
    restore."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if collecting:
            gc.enable()
