"""Counters that long operations update and front-ends poll to draw progress."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Progress:
    total_bytes: int = 0
    total_items: int = 0
    done_bytes: int = 0
    done_items: int = 0
    current: str = ""
    #: the totals still grow (a listing goes on beside the work): an ETA is only a guess
    counting: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int = 0, items: int = 0, current: str | None = None) -> None:
        with self._lock:
            self.done_bytes += nbytes
            self.done_items += items
            if current is not None:
                self.current = current
