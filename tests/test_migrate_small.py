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
from multibackup.engine.migrate import MigrateOptions, Migrator, Side


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


class _DamagingObjects:
    """Whole-object writes (S3Objects) that arrive with their first byte flipped."""

    def __init__(self, objects: Any) -> None:
        self._objects = objects

    def __getattr__(self, name: str) -> Any:
        return getattr(self._objects, name)

    def put(self, key: str, data: bytes, attributes: Any = None) -> str:
        return self._objects.put(key, bytes([data[0] ^ 1]) + data[1:], attributes)


class _ChangingSource:
    """Whole-object reads where ``victim`` is rewritten at the source just before its GET."""

    def __init__(self, objects: Any, client: Any, bucket: str, victim: str) -> None:
        self._objects, self._client = objects, client
        self._bucket, self._victim = bucket, victim

    def get(self, key: str, etag: str | None = None) -> Any:
        if key == self._victim:
            self._client.put_object(Bucket=self._bucket, Key=key, Body=b"newer version")
        return self._objects.get(key, etag)


def test_two_request_copy_keeps_headers_proves_writes_and_reads_the_listed_version(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 to S3, small objects go as one GET and one PUT: the GET brings the headers and
    metadata along, the PUT's MD5 ETag proves what arrived, If-Match pins the version."""
    import gzip

    from multibackup.backends.s3_objects import S3Objects

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    client = s3_server.client()
    page = gzip.compress(b"<html>" + b"hello " * 500 + b"</html>")
    objs = {f"w/{i}.html.gz": page + bytes([i]) for i in range(5)}
    headers = {"ContentType": "text/html", "ContentEncoding": "gzip",
               "CacheControl": "max-age=60", "ContentDisposition": "inline",
               "ContentLanguage": "de"}
    for key, data in objs.items():
        client.put_object(Bucket=src_b, Key=key, Body=data, Metadata={"owner": key},
                          **headers)
    src_loc, dst_loc = parse_location(f"s3://{src_b}"), parse_location(f"s3://{dst_b}/m")
    src, dst = open_store(src_loc), open_store(dst_loc)
    src_objects, dst_objects = S3Objects(src_loc), S3Objects(dst_loc)
    options = MigrateOptions(server_side=False)
    path = str(tmp_path / "journal.sqlite")

    with Journal("src", "dst", path) as journal:
        report = Migrator(Side(src, objects=src_objects),
                          Side(dst, objects=_DamagingObjects(dst_objects)), options,
                          journal=journal).run()
        assert {r.status for r in report.results} == {"mismatched"}
        assert all("destination MD5" in r.reason for r in report.results)
        assert journal.verified() == {}

    victim = "w/3.html.gz"
    changing = _ChangingSource(src_objects, client, src_b, victim)
    with Journal("src", "dst", path) as journal:
        report = Migrator(Side(src, objects=changing), Side(dst, objects=dst_objects),
                          options, journal=journal).run()
        status = {r.key: (r.status, r.reason) for r in report.results}
        assert status.pop(victim) == ("failed", f"s3://{src_b}: reading {victim}: the object "
                                                "changed since it was listed")
        assert {s for s, _ in status.values()} == {"copied"} and not report.ok
        assert report.bytes_read == report.bytes_transferred == 4 * len(objs["w/0.html.gz"])
        known = journal.verified()
    assert set(known) == set(status)
    for key in status:
        got = client.get_object(Bucket=dst_b, Key=f"m/{key}")
        assert got["Body"].read() == objs[key]  # not decompressed on the way
        assert {k: got[k] for k in headers} == headers
        assert got["Metadata"] == {"owner": key}
        assert known[key].dst_etag.strip('"') == known[key].md5 == \
            hashlib.md5(objs[key]).hexdigest()


def test_whole_object_client_config_and_errors(s3_server: S3Server,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Virtual-hosted providers get the bucket in the host, path-style ones in the path;
    anonymous requests carry no signature; a wrong secret is one line that never shows
    the secret."""
    from multibackup.backends.providers import provider_location
    from multibackup.backends.s3_objects import S3Objects
    from multibackup.errors import StoreError

    oss = S3Objects(provider_location("oss", "site-backup", "prod", "cn-hangzhou"),
                    {"access_key_id": "id", "secret_access_key": "sk"})
    url, headers = oss.signed("GET", "a b.txt")
    assert url == "https://site-backup.oss-cn-hangzhou.aliyuncs.com/prod/a%20b.txt"
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=id/")
    assert "sk" not in headers["authorization"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    url, headers = S3Objects(parse_location("s3://public-bucket")).signed("GET", "k")
    assert url == "https://public-bucket.s3.us-east-1.amazonaws.com/k"
    assert "authorization" not in headers

    local = parse_location(f"s3://{s3_server.new_bucket()}", s3_endpoint=s3_server.endpoint)
    key_id = s3_server.env()["AWS_ACCESS_KEY_ID"]
    wrong = S3Objects(local, {"access_key_id": key_id, "secret_access_key": "never-shown-x"})
    with pytest.raises(StoreError) as err:
        wrong.put("a.txt", b"a")
    text = str(err.value)
    assert "\n" not in text and "never-shown-x" not in text
    assert "access denied" in text and "SignatureDoesNotMatch" in text
    right = S3Objects(local, {"access_key_id": key_id,
                              "secret_access_key": s3_server.env()["AWS_SECRET_ACCESS_KEY"]})
    assert right.put("a.txt", b"a") == hashlib.md5(b"a").hexdigest()
    with pytest.raises(StoreError, match="object not found"):
        right.get("missing.txt")
    # one thread's handle goes from PUT to GET and back
    assert right.get("a.txt").data == b"a"
    assert right.put("b.txt", b"bb" * 5000) == hashlib.md5(b"bb" * 5000).hexdigest()
    assert right.get("b.txt").data == b"bb" * 5000 and right.get("a.txt").data == b"a"
    dead = S3Objects(parse_location("s3://b", s3_endpoint="http://127.0.0.1:9"),
                     {"access_key_id": "k", "secret_access_key": "never-shown-y"})
    with pytest.raises(StoreError, match="cannot reach the server") as err:
        dead.get("a.txt")
    assert "\n" not in str(err.value) and "never-shown-y" not in str(err.value)


def test_an_azure_block_that_does_not_match_its_md5_is_refused(
        azurite: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Azure parts are staged blocks sent with their Content-MD5: the service refuses a
    body that arrives different, and only this upload's blocks are listed and committed."""
    from multibackup.backends.azure_blocks import AzureBlocks
    from multibackup.errors import StoreError

    for name, value in azurite.env().items():
        monkeypatch.setenv(name, value)
    location = azurite.location(prefix="m")
    target = AzureBlocks(parse_location(location))
    data, other = os.urandom(1000), os.urandom(700)
    upload_id = target.create("big.bin")
    with pytest.raises(StoreError, match="staging block 1 of big.bin") as err:
        target.upload_part("big.bin", upload_id, 1, data, md5=hashlib.md5(data[1:]).digest())
    assert "\n" not in str(err.value)
    assert target.upload_part("big.bin", upload_id, 1, data) == hashlib.md5(data).hexdigest()
    stale = target.create("big.bin")  # an earlier upload's block, never to be committed
    target.upload_part("big.bin", stale, 1, other)
    target.upload_part("big.bin", upload_id, 2, other)
    assert target.list_parts("big.bin", upload_id) == {1: (None, 1000), 2: (None, 700)}
    target.complete("big.bin", upload_id, ["", ""], "text/x-big", {"origin": "test"})
    store = open_store(parse_location(location))
    assert store.get("big.bin") == data + other
    assert store.attributes("big.bin") == ("text/x-big", {"origin": "test"})
    assert target.list_parts("big.bin", upload_id) == {}


def test_keys_a_server_may_rewrite_go_through_the_store(
        s3_server: S3Server, tmp_path: Path) -> None:
    """A path with empty, "." or ".." segments may be cleaned on its way, and some
    servers take a backslash for "/" (another key): such objects are copied through the
    plain store. SeaweedFS itself folds "\\" and "//" into "/", so the rule is checked
    for those; a control character goes percent-encoded, tried against the server."""
    from multibackup.backends.s3_objects import handles

    for key in ("back\\slash.txt", "a//b.txt", "a/./b", "a/../b", "/lead", "trail/"):
        assert not handles(key), key
    assert handles("plain/é 😀 #?%+~*.txt") and handles("tab\tkey") and handles("del\x7f")

    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    client = s3_server.client()
    objs = {"tab\tkey.txt": b"t" * 300, "plain/é 😀.txt": b"p" * 400}
    for key, data in objs.items():
        client.put_object(Bucket=src_b, Key=key, Body=data, ContentType="text/x-odd")
    cli = CLI(str(tmp_path / "unused"),
              env={**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    doc = cli("migrate", f"s3://{src_b}", f"s3://{dst_b}", "--no-server-side-copy",
              "--json").json()
    assert {o["key"]: o["status"] for o in doc["objects"]} == dict.fromkeys(objs, "copied")
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=dst_b)["Contents"]}
    assert listed == set(objs)
    for key, data in objs.items():
        got = client.get_object(Bucket=dst_b, Key=key)
        assert got["Body"].read() == data and got["ContentType"] == "text/x-odd"
