"""Diff: what changed between two snapshots, walking only subtrees whose ids differ."""

from __future__ import annotations

from collections.abc import Iterator

from multibackup.repository.repository import Repository
from multibackup.repository.tree import Node


def _meta(n: Node) -> tuple[int, int, int, int, str]:
    return (n.mode, n.mtime, n.uid, n.gid, n.target)


def diff_trees(repo: Repository, a: bytes | None, b: bytes | None,
               prefix: str = "") -> Iterator[tuple[str, str]]:
    """(code, path): '+' added, '-' removed, 'M' content changed, 'U' metadata, 'T' type."""
    if a == b:
        return
    left = {n.name: n for n in repo.load_tree(a)} if a else {}
    right = {n.name: n for n in repo.load_tree(b)} if b else {}
    for name in sorted(set(left) | set(right)):
        path = f"{prefix}/{name}"
        x, y = left.get(name), right.get(name)
        if x is None and y is not None:
            yield "+", path
            if y.subtree:
                yield from diff_trees(repo, None, y.subtree, path)
        elif y is None and x is not None:
            yield "-", path
            if x.subtree:
                yield from diff_trees(repo, x.subtree, None, path)
        elif x is not None and y is not None:
            if x.type != y.type:
                yield "T", path
                yield from diff_trees(repo, x.subtree, y.subtree, path)
            elif x.subtree or y.subtree:
                if _meta(x) != _meta(y):
                    yield "U", path
                yield from diff_trees(repo, x.subtree, y.subtree, path)
            elif x.content != y.content or x.target != y.target or x.rdev != y.rdev:
                yield "M", path
            elif _meta(x) != _meta(y):
                yield "U", path
