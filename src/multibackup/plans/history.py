"""The run history of each plan, kept in the local state directory.

One JSON file per plan with its last runs, newest last; ``plan status`` reads it, and the
server (later) will keep the same records in its database.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from multibackup.plans.runner import RunRecord
from multibackup.store.lag import state_dir

KEEP_RUNS = 50


def _path(plan: str, root: str | None = None) -> str:
    return os.path.join(root or state_dir(), "plans", f"{plan}.json")


def load_history(plan: str, root: str | None = None) -> list[dict[str, Any]]:
    """Past runs of a plan, oldest first ([] when it never ran or the file is unreadable)."""
    try:
        with open(_path(plan, root), encoding="utf-8") as f:
            runs = json.load(f)
    except (OSError, ValueError):
        return []
    return runs if isinstance(runs, list) else []


def append_run(record: RunRecord, root: str | None = None) -> None:
    runs = load_history(record.plan, root)[-(KEEP_RUNS - 1):] + [record.to_json()]
    path = _path(record.plan, root)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".history-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(runs, f, indent=1)
    os.replace(tmp, path)
