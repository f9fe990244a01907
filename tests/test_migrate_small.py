"""Small objects between buckets: one read and one write each through the stores, every
write verified, and a journal written in batches that a kill never turns into a wrong skip."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, S3Server

from multibackup.backends.location import open_store, parse_location
from multibackup.engine.journal import Journal
from multibackup.engine.migrate import MigrateOptions, Migrator


class _Damaging:
    """A destination store whose small writes arrive with their last byte flipped."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def put(self, key: str, data: bytes, **attributes: Any) -> None:
        self._store.put(key, data[:-1] + bytes([data[-1] ^ 1]), **attributes)


def test_small_copy_keeps_attributes_and_catches_a_damaged_write(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    client = s3_server.client()
    objs = {f"p/{i}.html": os.urandom(100 + i) for i in range(6)}
    for key, data in objs.items():
        client.put_object(Bucket=src_b, Key=key, Body=data, ContentType="text/html",
                          Metadata={"owner": key})
    src = open_store(parse_location(f"s3://{src_b}"))
    dst = open_store(parse_location(f"s3://{dst_b}/m"))
    options = MigrateOptions(server_side=False)
    path = str(tmp_path / "journal.sqlite")

    with Journal("src", "dst", path) as journal:
        report = Migrator(src, _Damaging(dst), options, journal=journal).run()
        assert {r.status for r in report.results} == {"mismatched"} and not report.ok
        assert all("destination MD5" in r.reason for r in report.results)
        assert journal.verified() == {}  # nothing damaged is ever journalled

    with Journal("src", "dst", path) as journal:
        report = Migrator(src, dst, options, journal=journal).run()
        assert {r.key: r.status for r in report.results} == dict.fromkeys(objs, "copied")
        assert report.bytes_read == report.bytes_transferred == sum(map(len, objs.values()))
        known = journal.verified()
    for key, data in objs.items():
        got = client.get_object(Bucket=dst_b, Key=f"m/{key}")
        assert got["Body"].read() == data
        assert (got["ContentType"], got["Metadata"]) == ("text/html", {"owner": key})
        assert known[key].dst_etag.strip('"') == known[key].md5  # proven by the MD5 ETag


def _journalled(state: Path) -> dict[str, str]:
    """key -> MD5 of the verified objects committed to the journal (empty before it exists)."""
    path = state / "migrate" / "journal.sqlite"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return dict(db.execute("SELECT key, md5 FROM verified").fetchall())
    except sqlite3.OperationalError:  # the schema is being created
        return {}


def test_journal_batch_killed_never_skips_an_unverified_object(
        tmp_path: Path, s3_server: S3Server) -> None:
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    client = s3_server.client()
    objs = {f"o/{i:04d}.bin": os.urandom(2000 + i) for i in range(300)}
    for key, data in objs.items():
        client.put_object(Bucket=src_b, Key=key, Body=data)
    state = tmp_path / "state"
    cli = CLI(str(tmp_path / "unused"),
              env={**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(state)})
    args = ("migrate", f"s3://{src_b}", f"s3://{dst_b}/m", "--no-server-side-copy",
            "--transfers", "2", "--json")

    proc = cli.popen(*args, "--bwlimit", "200k")  # about 3 s for all of them
    try:
        deadline = time.monotonic() + 60
        while not _journalled(state):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "nothing was journalled in time"
            time.sleep(0.05)
        time.sleep(0.3)  # a batch in the making
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    journalled = _journalled(state)
    assert 0 < len(journalled) < len(objs)
    for key, md5 in journalled.items():  # each record names an object verified there
        assert hashlib.md5(objs[key]).hexdigest() == md5
        assert client.get_object(Bucket=dst_b, Key=f"m/{key}")["Body"].read() == objs[key]
    # an object written but not journalled - or damaged meanwhile - is compared again
    victim = next(k for k in sorted(objs) if k not in journalled)
    client.put_object(Bucket=dst_b, Key=f"m/{victim}", Body=bytes(reversed(objs[victim])))

    doc = cli(*args).json()
    status = {o["key"]: (o["status"], o["reason"]) for o in doc["objects"]}
    assert status[victim] == ("copied", "MD5 differs")
    assert {k for k, v in status.items() if v == ("skipped", "verified earlier (journal)")} \
        == set(journalled)
    assert doc["ok"] and len(status) == len(objs)
    for key, data in objs.items():
        assert client.get_object(Bucket=dst_b, Key=f"m/{key}")["Body"].read() == data
    # the rerun's batches were committed as it ended (objects found equal by their MD5
    # ETags are skipped without a record, as before)
    copied = {k for k, v in status.items() if v[0] == "copied"}
    assert set(_journalled(state)) == set(journalled) | copied


def test_a_part_that_does_not_match_its_md5_is_refused(
        s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts go up with their Content-MD5 (and no SHA-256 of the payload): the server
    itself refuses a body that arrives different."""
    from multibackup.backends.s3_multipart import S3Multipart
    from multibackup.errors import StoreError

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    target = S3Multipart(parse_location(f"s3://{s3_server.new_bucket()}/m"))
    upload_id = target.create("big.bin")
    data = os.urandom(1000)
    with pytest.raises(StoreError, match="BadDigest"):
        target.upload_part("big.bin", upload_id, 1, data, md5=hashlib.md5(data[1:]).digest())
    assert target.upload_part("big.bin", upload_id, 1, data) == hashlib.md5(data).hexdigest()
    target.abort("big.bin", upload_id)
