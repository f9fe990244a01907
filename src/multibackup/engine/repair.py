"""Repair: rebuild the index from pack headers when index files are lost or damaged."""

from __future__ import annotations

from dataclasses import dataclass, field

from multibackup.errors import IntegrityError, StoreError
from multibackup.repository.pack import PackEntry
from multibackup.repository.repository import INDEX, Repository


@dataclass
class RepairReport:
    packs: int = 0
    blobs: int = 0
    unreadable_packs: list[str] = field(default_factory=list)
    removed_index_files: int = 0
    new_index: str = ""


def rebuild_index(repo: Repository) -> RepairReport:
    """Read every pack header and write one index that supersedes all existing ones.

    Packs whose header cannot be read are left in place (their blobs may still be intact)
    and listed; nothing is deleted but index files, and only after the new one is stored.
    """
    report = RepairReport()
    old = repo.index_files()
    packs: dict[bytes, list[PackEntry]] = {}
    for name, size in repo.list_packs().items():
        try:
            packs[bytes.fromhex(name)] = repo.read_pack_header(name, size)
        except (IntegrityError, StoreError) as exc:
            report.unreadable_packs.append(f"{name}: {exc}")
    report.packs = len(packs)
    report.blobs = sum(len(e) for e in packs.values())
    readable = []
    for index_id in old:
        try:
            repo.read_index_file(index_id)
            readable.append(index_id)
        except (IntegrityError, StoreError):
            pass
    report.new_index = repo.save_index_file(packs, supersedes=readable)
    for index_id in old:
        repo.store.delete(INDEX + index_id)
        report.removed_index_files += 1
    return report
