"""How often the engine's threads hand each other the interpreter lock.

A backup's workers spend most of their time in calls that release the GIL (reads, zstd,
AES-GCM, BLAKE3, writes), but between two such calls each must take the GIL back. A
thread running Python meanwhile (the walk, encoding trees) keeps it until it blocks or
until the switch interval ends: 5 ms by default, while the worker's core sits idle. At
0.5 ms, the benchmark's first backup took 4.20 s instead of 4.81 (means of 6 alternated
pairs on 2 cores), for about 2 % more CPU time. A restore's workers (reads, decryption,
zstd, writes) wait the same way for the thread walking the snapshot: its restore into a
tmpfs took 2.07 s instead of 2.36 (12 alternated pairs).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: seconds; the interval while a parallel job runs
SHORT_INTERVAL = 0.0005

_lock = threading.Lock()
_active = 0
_saved = 0.0


@contextmanager
def short_switch_interval() -> Iterator[None]:
    """The process's switch interval at most :data:`SHORT_INTERVAL` while the block runs.

    The setting is process-wide, so concurrent jobs (the server runs several) share it:
    the interval goes back to what it was when the last of them ends.
    """
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved, SHORT_INTERVAL))
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                sys.setswitchinterval(_saved)
