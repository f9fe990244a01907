"""A migration killed (SIGKILL) in the middle of a large object resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, S3Server, md5_file

PART = 8 << 20
BIG = 210 * 1024 * 1024 + 12345  # 27 parts
# the GCS emulator rewrites a session's whole file for every part: a smaller object
GCS_BIG = 66 * 1024 * 1024 + 12345  # 9 parts


def _journal_parts(state: Path) -> tuple[int, int]:
    """(parts journalled, their bytes) of uploads in progress; (0, 0) before it exists."""
    path = state / "migrate" / "journal.sqlite"
    if not path.exists():
        return 0, 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            n, total = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM parts").fetchone()
    except sqlite3.OperationalError:  # the schema is being created
        return 0, 0
    return int(n), int(total)


def _azure_store(azurite: object, location: str) -> object:
    """The OpenDAL store of an Azurite location, opened with Azurite's credentials."""
    from multibackup.backends.location import open_store, parse_location

    with pytest.MonkeyPatch.context() as env:
        for k, v in azurite.env().items():  # type: ignore[attr-defined]
            env.setenv(k, v)
        return open_store(parse_location(location))



def _multipart_etag(path: Path) -> str:
    md5s = []
    with open(path, "rb") as fh:
        while block := fh.read(PART):
            md5s.append(hashlib.md5(block).digest())
    return f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"


@pytest.mark.parametrize(("kind", "sig"), [("s3", signal.SIGKILL), ("sftp", signal.SIGKILL),
                                            ("local", signal.SIGKILL), ("azure", signal.SIGKILL),
                                            ("gcs", signal.SIGKILL), ("ftp", signal.SIGKILL),
                                            ("webdav", signal.SIGKILL), ("s3", signal.SIGINT)])
def test_kill_mid_object_then_resume(kind: str, sig: int, tmp_path: Path, s3_server: S3Server,
                                     request: pytest.FixtureRequest) -> None:
    src = tmp_path / "src"
    src.mkdir()
    small = {f"a{i}.txt": os.urandom(1000 + i) for i in range(5)}
    for name, data in small.items():
        (src / name).write_bytes(data)
    big = GCS_BIG if kind == "gcs" else BIG
    count = -(-big // PART)
    with open(src / "big.bin", "wb") as fh:
        for _ in range(big // (1 << 20)):
            fh.write(os.urandom(1 << 20))
        fh.write(os.urandom(big % (1 << 20)))
    state = tmp_path / "state"
    env = {**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(state)}
    client = s3_server.client()
    if kind == "s3":
        bucket = s3_server.new_bucket()
        dst = f"s3://{bucket}/mig"
    elif kind == "sftp":
        sftp = request.getfixturevalue("sftp_server")
        dst = sftp.location()
        env.update(sftp.env())
        dst_dir = Path(sftp.remote_path(dst.rsplit("/", 1)[1]))
    elif kind == "azure":
        azurite = request.getfixturevalue("azurite")
        dst = azurite.location(prefix="mig")
        env.update(azurite.env())
        azure = _azure_store(azurite, dst)
    elif kind == "ftp":
        from servers_ftp import FTP_PASSWORD, start_ftp_server

        ftpd = start_ftp_server(tmp_path / "ftpd")
        request.addfinalizer(ftpd.stop)
        dst = ftpd.url("mig")
        env["MULTIBACKUP_FTP_PASSWORD"] = FTP_PASSWORD
        dst_dir = ftpd.root / "mig"
    elif kind == "webdav":  # Apache's mod_dav: it takes ranged PUTs
        dav = request.getfixturevalue("apache_webdav")
        dst = dav.location()
        env.update(dav.env())
        dst_dir = dav.root / dst.rsplit("/", 1)[1]
    elif kind == "gcs":
        gcs = request.getfixturevalue("gcs")
        dst = gcs.location(prefix="mig")
        env.update(gcs.env())
        gcs_bucket = dst.split("/")[2]
    else:
        dst_dir = tmp_path / "dst"
        dst = f"local:{dst_dir}"
    cli = CLI(str(tmp_path / "unused"), env=env)
    args = ("migrate", f"local:{src}", dst, "--transfers", "1", "--json")

    def read(name: str) -> bytes | None:
        if kind == "s3":
            try:
                return client.get_object(Bucket=bucket, Key=f"mig/{name}")["Body"].read()
            except client.exceptions.NoSuchKey:
                return None
        if kind == "azure":
            from multibackup.errors import ObjectNotFound

            try:
                return bytes(azure.get(name))
            except ObjectNotFound:
                return None
        if kind == "gcs":
            try:
                return gcs.read(gcs_bucket, f"mig/{name}")
            except KeyError:
                return None
        path = dst_dir / name
        return path.read_bytes() if path.exists() else None

    # slowed down so that the kill lands in the middle of the large object
    proc = cli.popen(*args, "--bwlimit", "40M")
    try:
        deadline = time.monotonic() + 60
        while _journal_parts(state)[0] < 4:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no part was journalled in time"
            time.sleep(0.02)
        os.kill(proc.pid, sig)
        stopped = time.monotonic()
    finally:
        proc.wait(30)
    if sig == signal.SIGINT:  # Ctrl-C: stops at the next range, says so in one line
        assert proc.returncode == 130 and time.monotonic() - stopped < 5
        assert proc.stderr is not None and proc.stderr.read().strip() == "error: interrupted"
    parts, part_bytes = _journal_parts(state)
    assert 4 <= parts < count
    if kind == "s3":  # SeaweedFS checks CRC32C: each journalled part keeps its checksum,
        # which the completion names again after the resume
        with sqlite3.connect(state / "migrate" / "journal.sqlite") as db:
            assert db.execute("SELECT count(*) FROM part_checksums").fetchone()[0] == parts
            assert db.execute("SELECT algorithm FROM upload_checksums").fetchall() == [("CRC32C",)]
    # the journal holds upload ids (a GCS session URI grants writing): its owner's only
    journal = state / "migrate" / "journal.sqlite"
    assert not (journal.stat().st_mode | journal.parent.stat().st_mode) & 0o077
    assert read("big.bin") is None  # nothing half-written is visible

    r = cli(*args)
    doc = json.loads(r.out)
    status = {o["key"]: (o["status"], o["reason"]) for o in doc["objects"]}
    # the small objects were verified before the kill: skipped without a read
    assert all(status[k] == ("skipped", "verified earlier (journal)") for k in small), status
    assert status["big.bin"][0] == "copied"
    # the journalled parts were not sent (nor read) again
    assert doc["bytes_transferred"] == big - part_bytes
    if kind == "s3":  # proven by the multipart ETag
        assert doc["bytes_read"] == big - part_bytes
    else:  # proven by reading the finished file back
        assert doc["bytes_read"] == 2 * big - part_bytes
    assert _journal_parts(state) == (0, 0)

    if kind == "s3":
        head = client.head_object(Bucket=bucket, Key="mig/big.bin", ChecksumMode="ENABLED")
        assert head["ContentLength"] == big and head["ChecksumType"] == "COMPOSITE"
        assert head["ETag"].strip('"') == _multipart_etag(src / "big.bin")
        got = hashlib.md5()
        for block in client.get_object(Bucket=bucket,
                                       Key="mig/big.bin")["Body"].iter_chunks(1 << 20):
            got.update(block)
        assert got.hexdigest() == md5_file(src / "big.bin")
    elif kind == "azure":  # the committed blocks: every byte, and the content type kept
        assert hashlib.md5(read("big.bin") or b"").hexdigest() == md5_file(src / "big.bin")
        assert azure.attributes("big.bin")[0] in (None, "application/octet-stream")
    elif kind == "gcs":  # the session's bytes, in order, made one object
        assert hashlib.md5(read("big.bin") or b"").hexdigest() == md5_file(src / "big.bin")
        resource = gcs.resource(gcs_bucket, "mig/big.bin")
        assert int(resource["size"]) == big
    elif kind == "ftp":  # the appended hidden file became the object
        assert md5_file(dst_dir / "big.bin") == md5_file(src / "big.bin")
        assert sorted(p.name for p in dst_dir.iterdir()) == sorted([*small, "big.bin"])
    elif kind == "webdav":  # the ranged PUTs' file became the object
        assert md5_file(dst_dir / "big.bin") == md5_file(src / "big.bin")
        assert not list((dst_dir / ".tmp").iterdir())
    else:
        assert md5_file(dst_dir / "big.bin") == md5_file(src / "big.bin")
        # the partial file became the object, and the emptied .tmp/ is removed
        assert not (dst_dir / ".tmp").exists()
    for name, data in small.items():
        assert read(name) == data

    # and a third run has nothing to do
    doc = cli(*args).json()
    assert doc["bytes_transferred"] == 0 and doc["bytes_read"] == 0


def _popen_until_parts(cli: CLI, args: tuple[str, ...], state: Path, parts: int) -> Any:
    """A migration slowed to 16 MiB/s, returned once ``parts`` parts are journalled."""
    proc = cli.popen(*args, "--bwlimit", "16M")
    deadline = time.monotonic() + 60
    while _journal_parts(state)[0] < parts:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no part was journalled in time"
        time.sleep(0.02)
    return proc


def test_source_replaced_mid_copy_fails_then_copies_new_version(tmp_path: Path,
                                                                s3_server: S3Server) -> None:
    """Ranged reads are tied to the listed ETag: a replaced object is never stitched."""
    size = 64 * 1024 * 1024 + 7
    old, new = os.urandom(size), os.urandom(size)
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="big.bin", Body=old)
    state = tmp_path / "state"
    dst = tmp_path / "dst"
    cli = CLI(str(tmp_path / "unused"), env={**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(state)})
    args = ("migrate", f"s3://{bucket}", f"local:{dst}", "--json")
    proc = _popen_until_parts(cli, args, state, 2)
    client.put_object(Bucket=bucket, Key="big.bin", Body=new)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    [entry] = json.loads(out)["objects"]
    assert entry["status"] == "failed" and "changed" in entry["reason"]
    assert not (dst / "big.bin").exists()

    doc = cli(*args).json()
    assert doc["objects"][0]["status"] == "copied"
    assert doc["bytes_transferred"] == size  # the old version's parts were not reused
    assert (dst / "big.bin").read_bytes() == new
    assert not (dst / ".tmp").exists()  # emptied, then removed


def test_a_copy_that_fails_verification_is_removed_and_copied_next_time(
        tmp_path: Path) -> None:
    """A partial file damaged while the copy was down: the resumed copy reads back wrong,
    is reported mismatched and removed, so the next run copies it again (left in place,
    its size and time passed the next comparison as a good copy)."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    data = os.urandom(40 * 1024 * 1024 + 3)
    (src / "big.bin").write_bytes(data)
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(state)})
    args = ("migrate", f"local:{src}", f"local:{dst}", "--json")
    proc = _popen_until_parts(cli, args, state, 2)
    try:
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    [partial] = list((dst / ".tmp").iterdir())
    with open(partial, "r+b") as fh:  # same length, other bytes in a journalled part
        fh.seek(100)
        fh.write(b"XXXXXXXX")
    r = cli(*args, ok=False)
    [entry] = json.loads(r.out)["objects"]
    assert r.code == 1 and entry["status"] == "mismatched"
    assert "removed from the destination" in entry["reason"]
    assert not (dst / "big.bin").exists()
    [entry] = cli(*args).json()["objects"]
    assert entry["status"] == "copied" and (dst / "big.bin").read_bytes() == data


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_local_file_rewritten_mid_copy_is_not_taken_for_copied(
        kind: str, tmp_path: Path, s3_server: S3Server) -> None:
    """A local source has no version to tie its ranged reads to: rewritten in place (same
    size) while it is copied, its copy would mix both versions and still read back as
    what was read. The source is looked at again: failed, removed, copied next run."""
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    size = 40 * 1024 * 1024 + 3
    (src / "big.bin").write_bytes(b"A" * size)
    if kind == "s3":
        bucket = s3_server.new_bucket()
        dst = f"s3://{bucket}/mig"
    else:
        dst = f"local:{tmp_path / 'dst'}"
    cli = CLI(str(tmp_path / "unused"),
              env={**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(state)})
    args = ("migrate", f"local:{src}", dst, "--json")
    proc = _popen_until_parts(cli, args, state, 2)
    with open(src / "big.bin", "r+b") as fh:
        fh.write(b"B" * size)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    [entry] = json.loads(out)["objects"]
    assert entry["status"] == "failed" and "source changed while it was copied" in entry["reason"]

    def held() -> bytes | None:
        if kind == "local":
            path = tmp_path / "dst" / "big.bin"
            return path.read_bytes() if path.exists() else None
        try:
            return s3_server.client().get_object(Bucket=bucket, Key="mig/big.bin")["Body"].read()
        except s3_server.client().exceptions.NoSuchKey:
            return None

    assert held() is None
    [entry] = cli(*args).json()["objects"]
    assert entry["status"] == "copied" and held() == b"B" * size


def test_per_side_credentials(tmp_path: Path, s3_server: S3Server) -> None:
    bucket_a, bucket_b = s3_server.new_bucket(), s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket_a, Key="k.txt", Body=b"hello")
    good = s3_server.env()
    wrong = {**good, "AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret-1",
             "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    side = {f"MULTIBACKUP_{s}_{v}": good[v] for s in ("SRC", "DST")
            for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
    cli = CLI(str(tmp_path / "unused"), env={**wrong, **side,
                                              "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    doc = cli("migrate", f"s3://{bucket_a}", f"s3://{bucket_b}", "--json").json()
    assert doc["counts"] == {"copied": 1}
    assert s3_server.client().get_object(Bucket=bucket_b, Key="k.txt")["Body"].read() == b"hello"
    # a wrong key on one side: one line naming that side, no secret
    r = cli("migrate", f"s3://{bucket_a}", f"s3://{bucket_b}/x", ok=False,
            env={"MULTIBACKUP_DST_AWS_SECRET_ACCESS_KEY": "wrong-secret-2"})
    assert r.code == 1
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and f"s3://{bucket_b}/x" in lines[0] and "denied" in lines[0]
    assert "wrong-secret" not in r.err + r.out and good["AWS_SECRET_ACCESS_KEY"] not in r.err


def test_interrupted_upload_dropped_when_the_object_arrived_otherwise(tmp_path: Path) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    data = os.urandom(48 * 1024 * 1024)
    (src / "big.bin").write_bytes(data)
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(state)})
    args = ("migrate", str(src), str(dst), "--json")
    proc = cli.popen(*args, "--bwlimit", "16M")
    try:
        deadline = time.monotonic() + 60
        while _journal_parts(state)[0] < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert list((dst / ".tmp").iterdir())  # the partial file
    (dst / "big.bin").write_bytes(data)  # copied some other way meanwhile
    doc = cli(*args).json()
    assert doc["counts"] == {"skipped": 1}
    assert not (dst / ".tmp").exists() and _journal_parts(state) == (0, 0)
