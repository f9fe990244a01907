"""Rebuilding an object that every copy holds damaged, from the parts each holds intact.

A mirror's copies of an object are byte-identical when healthy, and damage (a flipped bit,
a bad sector, a torn write) is usually local: two copies damaged in different places
still hold every byte intact between them. Objects are named by their hash, so any
candidate put together from the copies can be proven right before it is written back.

The copies are compared block by block; blocks where they all agree are taken as they
are, and where they differ the variants are tried, the one most copies hold first (with
three copies or more that majority is usually the answer at the first try), until the
whole object matches its name. No knowledge of the object's format is needed.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence

#: the largest block compared and swapped as a unit; smaller objects get smaller blocks
#: (a 700-byte index file damaged at three places on three copies is three 64-byte blocks)
BLOCK = 16 * 1024
MIN_BLOCK = 64
#: candidates tried at most (each costs one hash of the whole object)
MAX_CANDIDATES = 512


def block_size(size: int) -> int:
    """About 256 blocks an object, between :data:`MIN_BLOCK` and :data:`BLOCK`."""
    return max(MIN_BLOCK, min(BLOCK, size // 256))


def reassemble(copies: Sequence[bytes], matches: Callable[[bytes], bool],
               block: int | None = None, limit: int = MAX_CANDIDATES) -> bytes | None:
    """The object the damaged ``copies`` were copies of, or None if they cannot give it.

    ``matches`` proves a candidate (its hash equals the object's name). The object's
    length is taken from the copies, the most common first; a shorter (truncated) copy
    still offers the blocks it holds whole.
    """
    for size, _ in Counter(len(c) for c in copies).most_common():
        found = _at_size(copies, size, matches, block or block_size(size), limit)
        if found is not None:
            return found
    return None


def _at_size(copies: Sequence[bytes], size: int, matches: Callable[[bytes], bool],
             block: int, limit: int) -> bytes | None:
    candidate = bytearray(size)
    ambiguous: list[tuple[int, list[bytes]]] = []
    for start in range(0, size, block):
        end = min(start + block, size)
        held = Counter(copy[start:end] for copy in copies if len(copy) >= end)
        if not held:
            return None  # no copy reaches this far
        variants = [piece for piece, _ in held.most_common()]  # the majority first
        candidate[start:end] = variants[0]
        if len(variants) > 1:
            ambiguous.append((start, variants))
    choices = itertools.product(*(v for _, v in ambiguous))
    for choice in itertools.islice(choices, limit):
        for (start, _), piece in zip(ambiguous, choice, strict=True):
            candidate[start:start + len(piece)] = piece
        data = bytes(candidate)
        if matches(data):
            return data
    return None
