"""Rebuilding an object that every copy holds damaged, from the parts each holds intact.

A mirror's copies of an object are byte-identical when healthy, and damage (a flipped bit,
a bad sector, a torn write) is usually local: two copies damaged in different places
still hold every byte intact between them. Objects are named by their hash, so any
candidate put together from the copies can be proven right before it is written back.

The copies are compared block by block; blocks where they all agree are taken as they
are, and for the few blocks where they differ each variant is tried until the whole
object matches its name. No knowledge of the object's format is needed.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence

#: compared and swapped as a unit: small enough that separate damage rarely shares one
BLOCK = 16 * 1024
#: candidates tried at most (each costs one hash of the whole object)
MAX_CANDIDATES = 512


def reassemble(copies: Sequence[bytes], matches: Callable[[bytes], bool],
               block: int = BLOCK, limit: int = MAX_CANDIDATES) -> bytes | None:
    """The object the damaged ``copies`` were copies of, or None if they cannot give it.

    ``matches`` proves a candidate (its hash equals the object's name). The object's
    length is taken from the copies, the most common first; a shorter (truncated) copy
    still offers the blocks it holds whole.
    """
    for size, _ in Counter(len(c) for c in copies).most_common():
        found = _at_size(copies, size, matches, block, limit)
        if found is not None:
            return found
    return None


def _at_size(copies: Sequence[bytes], size: int, matches: Callable[[bytes], bool],
             block: int, limit: int) -> bytes | None:
    candidate = bytearray(size)
    ambiguous: list[tuple[int, list[bytes]]] = []
    for start in range(0, size, block):
        end = min(start + block, size)
        variants: list[bytes] = []
        for copy in copies:
            if len(copy) >= end:
                piece = copy[start:end]
                if piece not in variants:
                    variants.append(piece)
        if not variants:
            return None  # no copy reaches this far
        candidate[start:end] = variants[0]
        if len(variants) > 1:
            ambiguous.append((start, variants))
    if math.prod(len(v) for _, v in ambiguous) > limit:
        return None
    for choice in itertools.product(*(v for _, v in ambiguous)):
        for (start, _), piece in zip(ambiguous, choice, strict=True):
            candidate[start:start + len(piece)] = piece
        data = bytes(candidate)
        if matches(data):
            return data
    return None
