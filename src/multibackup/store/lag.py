"""The record of destinations that fell behind, kept between runs.

A destination that failed during a run misses the rest of that run's writes and deletes.
The record names it, says since when and why, and lists the deletes it missed, so that
``sync`` (and the next run of a plan) knows what to catch up and does not copy deleted
objects back. It lives in the local state directory, one JSON file per repository id, and
holds destination descriptions only (never credentials).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from multibackup.store.mirror import DestinationState, MirrorStore


def state_dir() -> str:
    env = os.environ.get("MULTIBACKUP_STATE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return os.path.join(base, "multibackup")


class LagRecord:
    """Lagging destinations of one repository: description -> since, error, missed deletes.

    It also keeps, per destination, the snapshots its own retention removed while other
    destinations keep them (``absent``), so that a sync does not copy them back.
    """

    def __init__(self, repo_id: str, root: str | None = None) -> None:
        self.path = os.path.join(root or state_dir(), "mirror", f"{repo_id}.json")
        self.lagging: dict[str, dict[str, Any]] = {}
        self.absent: dict[str, list[str]] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data, dict) and isinstance(data.get("lagging"), dict):
                self.lagging = data["lagging"]
            if isinstance(data, dict) and isinstance(data.get("absent"), dict):
                self.absent = data["absent"]
        except (OSError, ValueError):
            pass  # no record (or an unreadable one): sync compares listings anyway

    def note_run(self, mirror: MirrorStore) -> list[str]:
        """Add the destinations that failed in this run; returns their descriptions."""
        failed = []
        for dest in mirror.failures:
            entry = self.lagging.setdefault(dest.description, {
                "since": datetime.fromtimestamp(dest.failed_at or 0, UTC).isoformat(),
                "missed_deletes": []})
            entry["error"] = dest.failed
            missed = entry.setdefault("missed_deletes", [])
            # locks belong to one run: a stale one on the lagging copy expires on its own
            missed.extend(k for k in dest.missed_deletes
                          if k not in missed and not k.startswith("locks/"))
            failed.append(dest.description)
        return failed

    def missed_deletes(self) -> dict[str, list[str]]:
        return {d: list(e.get("missed_deletes", [])) for d, e in self.lagging.items()}

    def mark_absent(self, description: str, keys: list[str]) -> None:
        """Objects this destination does not hold on purpose (its own retention)."""
        have = self.absent.setdefault(description, [])
        have.extend(k for k in keys if k not in have)

    def deleted(self) -> frozenset[str]:
        """Objects deleted while a destination was down, which it may still hold."""
        return frozenset(k for e in self.lagging.values() for k in e.get("missed_deletes", []))

    def excluder(self) -> Callable[[DestinationState, str], bool]:
        """What sync, check and repair must not expect on a destination."""
        deleted = self.deleted()
        absent = {d: set(keys) for d, keys in self.absent.items()}

        def exclude(dest: DestinationState, key: str) -> bool:
            return key in deleted or key in absent.get(dest.description, ())

        return exclude

    def forget_gone(self, present: set[str]) -> None:
        """Drop absent-entries for objects no destination holds any more."""
        for desc in list(self.absent):
            self.absent[desc] = [k for k in self.absent[desc] if k in present]
            if not self.absent[desc]:
                del self.absent[desc]

    def clear(self, description: str) -> None:
        self.lagging.pop(description, None)

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".lag-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"lagging": self.lagging, "absent": self.absent}, f, indent=1,
                      sort_keys=True)
        os.replace(tmp, self.path)
