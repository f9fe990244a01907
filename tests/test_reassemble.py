"""Putting an object together from copies that are each damaged somewhere else."""

from __future__ import annotations

import random

import blake3

from multibackup.store.reassemble import BLOCK, block_size, reassemble


def _named(data: bytes):
    name = blake3.blake3(data).hexdigest()
    return lambda candidate: blake3.blake3(candidate).hexdigest() == name


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


ORIGINAL = random.Random(5).randbytes(10 * BLOCK + 123)


def test_damage_in_different_places_is_rebuilt() -> None:
    copies = [_flip(ORIGINAL, 5), _flip(ORIGINAL, 4 * BLOCK + 9), _flip(ORIGINAL, len(ORIGINAL) - 1)]
    assert reassemble(copies, _named(ORIGINAL)) == ORIGINAL


def test_a_truncated_copy_still_gives_the_blocks_it_holds() -> None:
    copies = [ORIGINAL[: 3 * BLOCK + 17], _flip(ORIGINAL, BLOCK + 1)]
    assert reassemble(copies, _named(ORIGINAL)) == ORIGINAL


def test_the_same_bytes_lost_everywhere_give_nothing() -> None:
    at = 2 * BLOCK + 100
    copies = [_flip(ORIGINAL, at), _flip(ORIGINAL, at + 1)]
    assert reassemble(copies, _named(ORIGINAL)) is None


def test_the_majority_of_three_copies_wins_at_once() -> None:
    # eleven blocks damaged here and there: 2**11 combinations, but each block is intact
    # on two of the three copies, so the first candidate is the object
    a, b = ORIGINAL, ORIGINAL
    for i in range(1, 11, 2):
        a = _flip(a, i * BLOCK + 3)
    for i in range(0, 10, 2):
        b = _flip(b, i * BLOCK + 7)
    c = _flip(ORIGINAL, 10 * BLOCK + 1)
    tried = []
    named = _named(ORIGINAL)

    def matches(candidate: bytes) -> bool:
        tried.append(1)
        return named(candidate)

    assert reassemble([a, b, c], matches) == ORIGINAL and len(tried) == 1


def test_a_small_object_is_compared_in_small_blocks() -> None:
    index = random.Random(6).randbytes(694)  # an index file: one block of 16 KiB
    copies = [_flip(index, 50), _flip(index, 200), _flip(index, 400)]
    assert reassemble(copies, _named(index)) == index
    assert reassemble(copies[:2], _named(index)) == index  # two copies: 4 candidates


def test_candidates_are_bounded() -> None:
    # three blocks differ between two copies, the damaged copy listed first: the object
    # is the last of the 8 candidates
    block = block_size(len(ORIGINAL))
    other = ORIGINAL
    for i in range(3):
        other = _flip(other, i * block + 5)
    tried = []

    def matches(candidate: bytes) -> bool:
        tried.append(1)
        return _named(ORIGINAL)(candidate)

    assert reassemble([other, ORIGINAL], matches, limit=7) is None and len(tried) == 7
    assert reassemble([other, ORIGINAL], matches, limit=8) == ORIGINAL
