"""Small helpers for writing files below a local directory."""

from __future__ import annotations

import errno
import os


def make_parents(path: str) -> None:
    """Make the directories ``path`` goes in; a file in the way of one is "Not a
    directory" (``os.makedirs`` would say "File exists", which names no problem)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
