"""Buckets as a backup source and restore target, on real servers: SeaweedFS (S3), and
Azurite (Azure Blob) and rclone's WebDAV for the stores without S3's conditional reads."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from conftest import CLI, S3_KEY, S3_SECRET, S3Server

from multibackup.backends.location import open_store, parse_location
from multibackup.errors import SourceError
from multibackup.sources import bucket as bucket_source
from multibackup.sources.base import DIR, FILE, UNKNOWN_SIZE
from multibackup.sources.url import open_source

BIG = 20 * 1024 * 1024 + 321


def _objects(seed: int = 3) -> dict[str, bytes]:
    """Keys below the prefix: nested "directories", an empty object, one of ~20 MiB."""
    rng = random.Random(seed)
    return {"index.html": b"<h1>hello</h1>\n",
            "dir1/b.bin": rng.randbytes(70_000),
            "dir1/sub/c.txt": b"deep\n" * 1000,
            "dir1/sub/deeper/x.json": b'{"x": 1}',
            "dir2/empty": b"",
            "big.bin": rng.randbytes(BIG)}


def _local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _bucket_files(server: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    client = server.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix):]] = body
    return out


@pytest.fixture
def s3_source(s3_server: S3Server) -> tuple[str, dict[str, bytes]]:
    """A bucket with the sample objects below ``data/``, plus keys the source must ignore."""
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    objects = _objects()
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=f"data/{key}", Body=data)
    client.put_object(Bucket=bucket, Key="data/folder/", Body=b"")  # a console "folder"
    client.put_object(Bucket=bucket, Key="other/outside.txt", Body=b"not in the prefix")
    client.put_object(Bucket=bucket, Key="database", Body=b"a sibling sharing the prefix")
    return bucket, objects


def test_backup_incremental_restore_local_and_to_a_bucket(s3_server: S3Server, s3_source,
                                                          tmp_path: Path) -> None:
    bucket, objects = s3_source
    cli = CLI(str(tmp_path / "repo"), env=s3_server.env())
    cli("init")
    url = f"s3://{bucket}/data"
    first = cli("backup", url, "--json").json()
    assert first["errors"] == [] and first["files_new"] == len(objects)
    assert first["bytes_read"] == first["total_bytes"] == sum(map(len, objects.values()))
    assert cli("snapshots", "--json").json()[0]["paths"] == [url]

    target = tmp_path / "restored"
    cli("restore", "latest", "--target", str(target))
    assert _local_files(target) == objects
    assert (target / "folder").is_dir() and not any((target / "folder").iterdir())

    # Nothing changed: every object is recognised by size, time and ETag, none is read.
    second = cli("backup", url, "--json").json()
    assert second["parent"] == first["snapshot_id"]
    assert second["files_unchanged"] == len(objects)
    assert second["bytes_read"] == 0 and second["data_blobs"] == 0

    # One object replaced: only it is read.
    changed = b"new content of b\n" * 3
    s3_server.client().put_object(Bucket=bucket, Key="data/dir1/b.bin", Body=changed)
    third = cli("backup", url, "--json").json()
    assert (third["files_changed"], third["files_new"]) == (1, 0)
    assert third["files_unchanged"] == len(objects) - 1
    assert third["bytes_read"] == len(changed)
    diff = cli("diff", second["snapshot_id"][:10], third["snapshot_id"][:10], "--json").json()
    assert [(c["change"], c["path"]) for c in diff["changes"]] == [("M", "/dir1/b.bin")]

    # Restore into another bucket's prefix, then again: nothing is replaced.
    other = s3_server.new_bucket()
    r = cli("restore", "latest", "--target", f"s3://{other}/copy/here")
    assert "6 files" in r.out
    expected = {**objects, "dir1/b.bin": changed}
    assert _bucket_files(s3_server, other, "copy/here/") == expected
    s3_server.client().put_object(Bucket=other, Key="copy/here/index.html", Body=b"mine")
    r = cli("restore", "latest", "--target", f"s3://{other}/copy/here", ok=False)
    assert r.code != 0
    assert "index.html: already exists in s3://" in r.err and "not replaced" in r.err
    assert _bucket_files(s3_server, other, "copy/here/")["index.html"] == b"mine"

    # An older snapshot restores the object as it was.
    older = tmp_path / "older"
    cli("restore", first["snapshot_id"][:10], "--target", str(older), "--include", "/dir1")
    assert (older / "dir1" / "b.bin").read_bytes() == objects["dir1/b.bin"]


def test_wrong_credentials_fail_without_a_snapshot(s3_server: S3Server, s3_source,
                                                   tmp_path: Path) -> None:
    bucket, _ = s3_source
    cli = CLI(str(tmp_path / "repo"), env=s3_server.env())
    cli("init")
    wrong = "wrong-secret-do-not-print-81c4"
    r = cli("backup", f"s3://{bucket}/data", ok=False, env={"AWS_SECRET_ACCESS_KEY": wrong})
    assert r.code != 0
    assert len(r.err.strip().splitlines()) == 1 and "access denied" in r.err, r.err
    for secret in (wrong, S3_SECRET):
        assert secret not in r.out + r.err
    r = cli("backup", f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/data", ok=False)
    assert r.code != 0 and "bucket does not exist" in r.err
    assert cli("snapshots", "--json").json() == []
    r = cli("restore", "latest", "--target", f"s3://{bucket}/x", ok=False)
    assert r.code != 0  # no snapshot to restore; still nothing secret printed
    assert S3_SECRET not in r.out + r.err


def _s3_credentials() -> dict[str, str]:
    return {"access_key_id": S3_KEY, "secret_access_key": S3_SECRET}


def test_object_replaced_mid_read_is_not_stitched(s3_server: S3Server, s3_source,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, objects = s3_source
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    source = open_source(f"s3://{bucket}/data", _s3_credentials())
    assert isinstance(source, bucket_source.BucketSource)
    try:
        entries = {e.name: e for e in source.list_dir("")}
        assert {n: e.kind for n, e in entries.items()} == {
            "big.bin": FILE, "dir1": DIR, "dir2": DIR, "folder": DIR, "index.html": FILE}
        big = entries["big.bin"]
        assert big.size == BIG and big.etag and big.mtime_ns > 0
        # Read whole: in ranges, never the object at once.
        with source.open("big.bin", big) as stream:
            data = stream.read()
            assert stream.ranges == -(-BIG // bucket_source.RANGE) > 1
        assert data == objects["big.bin"]
        # Replaced after the first range: the read fails instead of mixing versions.
        with pytest.raises(SourceError, match="changed while it was read"):  # noqa: SIM117
            with source.open("big.bin", big) as stream:
                stream.read(1024)
                s3_server.client().put_object(Bucket=bucket, Key="data/big.bin",
                                              Body=b"x" * BIG)
                stream.read()
    finally:
        source.close()


def test_webdav_object_replaced_mid_read(fresh_webdav, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    webdav = fresh_webdav
    url = webdav.location()
    sub = url.rsplit("/", 1)[1]
    (webdav.root / sub).mkdir()
    path = webdav.root / sub / "big.bin"
    path.write_bytes(random.randbytes(3 * bucket_source.RANGE))
    for k, v in webdav.env().items():
        monkeypatch.setenv(k, v)
    source = open_source(url)
    try:
        (entry,) = source.list_dir("")
        with pytest.raises(SourceError, match="changed while it was read"):  # noqa: SIM117
            with source.open("big.bin", entry) as stream:
                stream.read(1024)
                path.write_bytes(b"y" * (3 * bucket_source.RANGE + 5))
                stream.read()
    finally:
        source.close()


def test_key_that_is_also_a_prefix(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="p/a", Body=b"object a")
    client.put_object(Bucket=bucket, Key="p/a/b", Body=b"object a/b")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    source = open_source(f"s3://{bucket}/p", _s3_credentials())
    try:
        assert [(e.name, e.kind) for e in source.list_dir("")] == [("a", DIR)]
        assert [e.name for e in source.list_dir("a")] == ["b"]
        assert source.skipped == ["a"]  # type: ignore[attr-defined]
    finally:
        source.close()


def test_store_without_etag_or_time_is_always_read() -> None:
    name = f"memory://src-{uuid.uuid4().hex[:8]}"
    store = open_store(parse_location(name))
    store.put("d/f.txt", b"abc")
    source = open_source(name)
    try:
        (entry,) = source.list_dir("d")
        assert entry.size == UNKNOWN_SIZE  # so the engine never skips it on size alone
        with source.open("d/f.txt", entry) as stream:
            assert stream.read() == b"abc"
    finally:
        source.close()


@pytest.mark.parametrize("kind", ["azure", "webdav"])
def test_other_services(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Azure Blob (conditional reads) and WebDAV (checked after the read) end to end."""
    server = request.getfixturevalue({"azure": "azurite", "webdav": "webdav"}[kind])
    url = server.location()
    env = server.env()
    objects = _objects(seed=9)
    objects["big.bin"] = objects["big.bin"][:9 * 1024 * 1024]  # a few ranges is enough here
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        store = open_store(parse_location(url))
        for key, data in objects.items():
            store.put(key, data)
    cli = CLI(str(tmp_path / "repo"), env=env)
    cli("init")
    first = cli("backup", url, "--json").json()
    assert first["errors"] == [] and first["files_new"] == len(objects)
    second = cli("backup", url, "--json").json()
    assert second["files_unchanged"] == len(objects) and second["bytes_read"] == 0
    cli("restore", "latest", "--target", str(tmp_path / "out"))
    assert _local_files(tmp_path / "out") == objects
    copy = server.location()
    cli("restore", "latest", "--target", copy)
    again = cli("backup", copy, "--json").json()
    assert again["files_new"] == len(objects) and again["data_blobs"] == 0  # same bytes
    cli("restore", "latest", "--target", str(tmp_path / "copy"))
    assert _local_files(tmp_path / "copy") == objects
