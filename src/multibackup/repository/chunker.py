"""Content-defined chunking with FastCDC (pyfastcdc, FastCDC-2020, gear seed 0).

pyfastcdc documents its real mean chunk size as about ``avg + min`` because of cut-point
skipping; with the defaults (min 512 KiB, avg 768 KiB, max 8 MiB) we measure about
1.25 MiB on both random data and SQL text. Chunks of 770 KiB (avg 512 KiB) deduplicated
no better after a 5 % mutation, and each chunk's zstd frame restarts its dictionary: the
1 GiB benchmark set took 1.4 MiB more, 1.6 MiB of it on one SQL dump. Boundaries are part of the format: the
parameters live in the repository config so every client cuts the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = 512 * 1024
    avg_size: int = 768 * 1024
    max_size: int = 8 * 1024 * 1024
    normalized_chunking: int = 1
    seed: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> ChunkerParams:
        return cls(**data)


class Chunker:
    """Splits streams into content-defined chunks; one instance per thread."""

    def __init__(self, params: ChunkerParams) -> None:
        # imported here, after a command has opened its repository: the key derivation
        # (32 MiB for scrypt) is then the peak of a small command's memory, and pyfastcdc
        # with its dependencies adds 4 MiB to whatever is loaded at that moment
        import pyfastcdc

        self.params = params
        self._buf: bytearray | None = None
        self._cdc = pyfastcdc.FastCDC(params.avg_size, min_size=params.min_size,
                                      max_size=params.max_size,
                                      normalized_chunking=params.normalized_chunking,  # type: ignore[arg-type]
                                      seed=params.seed)

    def split_stream(self, stream: BinaryIO) -> Iterator[memoryview]:
        """Chunks of a stream; each view is valid only until the next one is taken.

        Same cut points as pyfastcdc's own ``cut_stream``, with a buffer of max_size plus
        one read (9 MiB by default, reused for every file of this thread) instead of
        2 x max_size allocated per file. FastCDC cuts at the first position past min_size
        that matches its mask, or at max_size: a cut found inside the buffer is final, so
        only a chunk that ran into the buffer's end (and is shorter than max_size) is cut
        again once more data is read.
        """
        max_size = self.params.max_size
        step = min(1024 * 1024, max_size)
        if self._buf is None:
            self._buf = bytearray(max_size + step)
        buf = self._buf
        start = end = 0
        eof = False
        while True:
            if not eof:
                if start:
                    buf[:end - start] = buf[start:end]  # same size: allowed under exports
                    end -= start
                    start = 0
                view = memoryview(buf)
                while end < len(buf):
                    n = stream.readinto(view[end:])  # type: ignore[attr-defined]
                    if not n:
                        eof = True
                        break
                    end += n
                view.release()
            if start == end:
                return
            base = start
            for chunk in self._cdc.cut_buf(memoryview(buf)[base:end]):
                chunk_start = base + chunk.offset
                if not eof and chunk_start + chunk.length == end and chunk.length < max_size:
                    break  # cut only because the buffer ended: read more, then cut again
                yield chunk.data
                start = chunk_start + chunk.length

    def split_buffer(self, data: bytes | memoryview) -> Iterator[memoryview]:
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data


class ThreadChunkers:
    """One ``Chunker`` per thread that asks, so each reader thread reuses its own buffer."""

    def __init__(self, params: ChunkerParams) -> None:
        self.params = params
        self._local = threading.local()

    def get(self) -> Chunker:
        ch: Chunker | None = getattr(self._local, "chunker", None)
        if ch is None:
            ch = self._local.chunker = Chunker(self.params)
        return ch
