"""Putting an object together from copies that are each damaged somewhere else."""

from __future__ import annotations

import random

import blake3

from multibackup.engine.reassemble import BLOCK, reassemble


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


def test_too_many_candidates_are_not_tried() -> None:
    # 11 blocks differ between the two copies: 2**11 candidates, over the limit of 512
    other = bytes(b ^ 0xFF for b in ORIGINAL)
    tried = []

    def matches(candidate: bytes) -> bool:
        tried.append(1)
        return False

    assert reassemble([ORIGINAL, other], matches) is None and not tried
    assert reassemble([ORIGINAL, other], _named(ORIGINAL), limit=4096) == ORIGINAL
