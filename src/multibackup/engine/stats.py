"""Stats: what the snapshots hold and what the repository stores for them."""

from __future__ import annotations

from typing import Any

from multibackup.repository.repository import Repository
from multibackup.repository.snapshot import Snapshot


def stats(repo: Repository, snapshots: list[Snapshot]) -> dict[str, Any]:
    files = 0
    size = 0
    blobs: set[bytes] = set()
    trees: set[bytes] = set()
    for snap in snapshots:
        stack = [snap.tree]
        while stack:
            tid = stack.pop()
            trees.add(tid)
            for n in repo.load_tree(tid):
                if n.subtree is not None:
                    stack.append(n.subtree)
                elif n.type == "file":
                    files += 1
                    size += n.size
                    blobs.update(n.content)
    raw = stored = 0
    for b in blobs | trees:
        loc = repo.index.lookup(b)
        if loc is not None:
            raw += loc.raw_length
            stored += loc.length
    repo_size = sum(repo.list_packs().values())
    return {
        "snapshots": len(snapshots),
        "total_file_count": files,
        "total_size": size,
        "unique_blobs": len(blobs) + len(trees),
        "unique_raw_size": raw,
        "unique_stored_size": stored,
        "repository_pack_size": repo_size,
        "compression_ratio": round(raw / stored, 3) if stored else 0,
        "dedup_ratio": round(size / raw, 3) if raw else 0,
    }
