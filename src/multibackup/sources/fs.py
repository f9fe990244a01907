"""The local filesystem as a backup source: directory listings, metadata and file streams."""

from __future__ import annotations

import fnmatch
import os
import stat as statmod
from dataclasses import dataclass

from multibackup.repository.tree import DIR, FILE, SYMLINK, Node


@dataclass(frozen=True)
class Excludes:
    """restic-style globs: a pattern without '/' matches any name, with '/' the full path."""

    patterns: tuple[str, ...] = ()

    def match(self, path: str, name: str) -> bool:
        for p in self.patterns:
            if "/" in p:
                if fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p.rstrip("/") + "/*"):
                    return True
            elif fnmatch.fnmatchcase(name, p):
                return True
        return False


def kind_of(st: os.stat_result) -> str | None:
    if statmod.S_ISREG(st.st_mode):
        return FILE
    if statmod.S_ISDIR(st.st_mode):
        return DIR
    if statmod.S_ISLNK(st.st_mode):
        return SYMLINK
    return None  # sockets, fifos and devices are not backed up


def node_from_stat(name: str, st: os.stat_result, kind: str) -> Node:
    node = Node(name=name, type=kind, mode=statmod.S_IMODE(st.st_mode), mtime=st.st_mtime_ns,
                uid=st.st_uid, gid=st.st_gid)
    if kind == FILE:
        node.size = st.st_size
        node.ctime = st.st_ctime_ns
        node.inode = st.st_ino
        node.device = st.st_dev
        node.links = st.st_nlink
    return node


def list_dir(path: str) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of every entry, sorted by name; raises OSError if unreadable."""
    out = []
    with os.scandir(path) as it:
        for entry in it:
            try:
                out.append((entry.name, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # vanished between listing and stat
    out.sort(key=lambda x: x[0])
    return out


def unchanged(old: Node | None, st: os.stat_result) -> bool:
    """True when size, mtime, ctime and inode all match: the content need not be read."""
    return (old is not None and old.type == FILE and old.size == st.st_size
            and old.mtime == st.st_mtime_ns and old.ctime == st.st_ctime_ns
            and old.inode == st.st_ino)
