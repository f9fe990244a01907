"""A local repository fills each data pack straight in a file below ``.tmp/``, not in memory.

Tested on real files: the pack under construction is on disk while blobs arrive, lands
under its content's name, reads back after a reopen; a full disk (a real tmpfs) stops the
run with nothing half-written left behind and no index entry for the lost pack's blobs.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from conftest import small_tmpfs

from multibackup.backends.location import open_store, parse_location
from multibackup.errors import StorageFull
from multibackup.repository.blob import BlobType, open_blob
from multibackup.repository.crypto import OVERHEAD, KDFParams, storage_id
from multibackup.repository.repository import Repository

FAST_KDF = KDFParams(n=2**10, r=8, p=1)
MiB = 1024 * 1024


def _blobs(seed: int, count: int, size: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]  # incompressible: stored as they are


def test_a_local_data_pack_is_filled_in_its_file_and_lands_under_its_hash(
        tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = open_store(parse_location(str(root)))
    blobs = _blobs(1, 26, 200_000)  # a pack of 1 MiB closes at its sixth or seventh
    with Repository.init(store, "pw", pack_size=MiB, kdf=FAST_KDF) as repo:
        # two writers at once, as a backup's workers are: their blobs share the open pack
        halves = [blobs[0::2], blobs[1::2]]
        threads = [threading.Thread(target=lambda h=h: [repo.save_blob(BlobType.DATA, b)
                                                         for b in h]) for h in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # (two writers can both land in a pack that reaches its size: how many blobs the
        # open one holds now varies) a few more from here, until it holds two or more
        more = iter(_blobs(3, 8, 200_000))
        while (open_pack := repo._builders.get(BlobType.DATA)) is None or len(open_pack) < 2:
            blobs.append(next(more))
            repo.save_blob(BlobType.DATA, blobs[-1])
        # the open pack is a file below .tmp that already holds its sealed blobs
        path = Path(open_pack.file.path)
        assert path.parent == root / ".tmp"
        on_disk = path.read_bytes()
        assert len(on_disk) == len(open_pack) * (200_000 + OVERHEAD) == open_pack.size
        by_id = {repo.cipher.blob_id(b): b for b in blobs}
        for e in open_pack.entries:
            sealed = on_disk[e.offset:e.offset + e.length]
            assert open_blob(repo.cipher, e.id, sealed, e.raw_length) == by_id[e.id]
        repo.save_tree([])
        repo.flush()
        assert list((root / ".tmp").iterdir()) == []
        packs = [p for p in (root / "data").rglob("*") if p.is_file()]
        assert len(packs) >= 5  # over 5 MB of blobs in packs of 1 MiB, and one tree pack
        for p in packs:
            assert p.name == storage_id(p.read_bytes())  # named after the bytes on disk
    with Repository.open(open_store(parse_location(str(root))), "pw") as again:
        report = again.load_index()
        assert report.recovered_packs == [] and report.damaged_packs == []
        for data in blobs:
            blob_id = again.cipher.blob_id(data)
            assert again.load_blob(blob_id) == data


@pytest.mark.parametrize("size", [100_000, 1_100_000],
                         ids=["the pack stays open", "the blob closes its pack"])
def test_a_full_disk_while_filling_a_pack_stops_the_run_and_leaves_nothing_behind(
        tmp_path: Path, size: int) -> None:
    with small_tmpfs(tmp_path / "repo", "3m") as mnt:
        blobs = _blobs(2, 4_000_000 // size, size)  # 4 MB: more than the 3 MiB disk
        saved: list[bytes] = []
        repo = Repository.init(open_store(parse_location(str(mnt))), "pw", pack_size=MiB,
                               kdf=FAST_KDF)
        with pytest.raises(StorageFull, match="no space left"):
            for data in blobs:
                repo.save_blob(BlobType.DATA, data)
                saved.append(data)
        # the run is over for this repository: later writes and the flush say so too
        with pytest.raises(StorageFull):
            repo.save_blob(BlobType.DATA, b"after the disk filled up")
        with pytest.raises(StorageFull):
            repo.flush()
        repo.close()
        assert list((mnt / ".tmp").iterdir()) == []  # the broken pack's file is gone
        # whatever was indexed is whole: each blob the index names reads back, and the
        # blob whose write failed is not among them
        with Repository.open(open_store(parse_location(str(mnt))), "pw") as again:
            again.load_index()
            failed = blobs[len(saved)]
            assert again.cipher.blob_id(failed) not in again.index
            for data in saved:
                blob_id = again.cipher.blob_id(data)
                if blob_id in again.index:
                    assert again.load_blob(blob_id) == data
