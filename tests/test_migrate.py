"""``multibackup migrate`` against real servers: SeaweedFS buckets, SFTP, Azurite."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import random
import socket
import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import CLI, S3_SECRET, S3Server, md5_file

BIG = 20 * 1024 * 1024 + 4321  # three 8 MiB parts: streamed, multipart at S3


def _objects(seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    objs = {f"site/page{i}.html": rng.randbytes(rng.randint(10, 5000)) for i in range(8)}
    objs["site/css/main.css"] = b"body { color: red }\n" * 40
    objs["logs/app.log"] = rng.randbytes(3000)
    objs["empty.txt"] = b""
    objs["media/big.bin"] = rng.randbytes(BIG)
    return objs


def _fill(server: S3Server, bucket: str, objs: dict[str, bytes], prefix: str = "data/",
          **extra: object) -> None:
    client = server.client()
    for key, data in objs.items():
        client.put_object(Bucket=bucket, Key=prefix + key, Body=data, **extra)


def _bucket(server: S3Server, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = server.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"][len(prefix):]] = body
    return out


@pytest.fixture
def mcli(tmp_path: Path, s3_server: S3Server) -> CLI:
    return CLI(str(tmp_path / "unused"),
               env={**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})


def _run(cli: CLI, *args: str, code: int = 0) -> dict:
    r = cli("migrate", *args, "--json", ok=False)
    if r.code != code:
        bad = [o for o in json.loads(r.out)["objects"]
               if o["status"] not in ("copied", "skipped")] if r.out.strip() else r.out
        raise AssertionError(f"exit {r.code}: {bad} {r.err}")
    assert S3_SECRET not in r.out + r.err
    return json.loads(r.out) if r.out.strip() else {}


def _status(doc: dict, status: str) -> set[str]:
    return {o["key"] for o in doc["objects"] if o["status"] == status}


def test_copy_rerun_change_sync_and_limits(s3_server: S3Server, mcli: CLI) -> None:
    objs = _objects()
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    _fill(s3_server, src_b, objs)
    src, dst = f"s3://{src_b}/data", f"s3://{dst_b}/copy"

    # one endpoint, one account: the server copies, no byte passes through us
    doc = _run(mcli, src, dst)
    assert _status(doc, "copied") == set(objs) and doc["ok"] and doc["server_side"]
    assert doc["bytes_transferred"] == 0 and doc["bytes_read"] == 0
    assert _bucket(s3_server, dst_b, "copy/") == objs

    # a second run copies nothing and reads nothing
    doc = _run(mcli, src, dst)
    assert _status(doc, "skipped") == set(objs)
    assert doc["bytes_transferred"] == 0 and doc["bytes_read"] == 0

    # change one (same size), add one, delete one at the source
    client = s3_server.client()
    changed = bytes(reversed(objs["site/page1.html"]))
    client.put_object(Bucket=src_b, Key="data/site/page1.html", Body=changed)
    client.put_object(Bucket=src_b, Key="data/new.txt", Body=b"new object")
    client.delete_object(Bucket=src_b, Key="data/site/page2.html")
    doc = _run(mcli, src, dst)
    assert _status(doc, "copied") == {"site/page1.html", "new.txt"}
    after = _bucket(s3_server, dst_b, "copy/")
    assert after["site/page1.html"] == changed and "site/page2.html" in after  # copy keeps

    # sync refuses to delete without --delete (usage error, nothing done)
    r = mcli("migrate", src, dst, "--mode", "sync", ok=False)
    assert r.code == 2 and "--delete" in r.err and len(r.err.strip().splitlines()) == 1
    # over the limit: nothing deleted, reported, exit 1
    doc = _run(mcli, src, dst, "--mode", "sync", "--delete", "--max-delete", "0", code=1)
    assert _status(doc, "extraneous") == {"site/page2.html"}
    assert "max-delete" in doc["errors"][0]
    assert "site/page2.html" in _bucket(s3_server, dst_b, "copy/")
    doc = _run(mcli, src, dst, "--mode", "sync", "--delete")
    assert _status(doc, "deleted") == {"site/page2.html"} and doc["ok"]
    assert _bucket(s3_server, dst_b, "copy/") == _bucket(s3_server, src_b, "data/")


def test_check_reports_without_writing(s3_server: S3Server, mcli: CLI) -> None:
    objs = {k: v for k, v in _objects(3).items() if k != "media/big.bin"}
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    _fill(s3_server, src_b, objs)
    src, dst = f"s3://{src_b}/data", f"s3://{dst_b}"
    _run(mcli, src, dst)
    client = s3_server.client()
    client.put_object(Bucket=dst_b, Key="site/page3.html", Body=b"tampered")
    client.put_object(Bucket=dst_b, Key="site/page4.html",
                      Body=bytes(reversed(objs["site/page4.html"])))  # same size
    client.delete_object(Bucket=dst_b, Key="logs/app.log")
    client.put_object(Bucket=dst_b, Key="extra.bin", Body=b"x")
    before = _bucket(s3_server, dst_b)
    doc = _run(mcli, src, dst, "--mode", "check", code=1)
    assert _status(doc, "differs") == {"site/page3.html", "site/page4.html"}
    assert _status(doc, "missing") == {"logs/app.log"}
    assert _status(doc, "extraneous") == {"extra.bin"}
    assert doc["bytes_transferred"] == 0
    assert _bucket(s3_server, dst_b) == before
    # --checksum hashes every pair even where the journal and listings agree
    doc = _run(mcli, src, dst, "--mode", "check", "--checksum", "--include", "site/*", code=1)
    assert _status(doc, "differs") == {"site/page3.html", "site/page4.html"}
    assert doc["bytes_read"] > 0


def test_filters_dry_run_and_report(s3_server: S3Server, mcli: CLI, tmp_path: Path) -> None:
    objs = {k: v for k, v in _objects(5).items() if k != "media/big.bin"}
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    _fill(s3_server, src_b, objs)
    src, dst = f"s3://{src_b}/data", f"s3://{dst_b}/x"
    report = tmp_path / "report.json"
    r = mcli("migrate", src, dst, "--dry-run", "--include", "*.html", "--exclude", "page0*",
             "--min-size", "100", "--report", str(report))
    assert r.code == 0
    assert _bucket(s3_server, dst_b) == {}
    doc = json.loads(report.read_text())
    expected = {k for k, v in objs.items()
                if k.endswith(".html") and not k.startswith("site/page0") and len(v) >= 100}
    assert _status(doc, "would-copy") == expected and doc["dry_run"]
    assert "would-copy" in r.out and "dry run" in r.out
    doc = _run(mcli, src, dst, "--max-size", "1k", "--exclude", "logs/*",
               "--modified-since", "1h")
    assert _status(doc, "copied") == {k for k, v in objs.items()
                                      if len(v) <= 1024 and not k.startswith("logs/")}
    doc = _run(mcli, src, dst, "--modified-since", "2999-01-01")
    assert doc["objects"] == []


def test_s3_to_sftp_and_back(s3_server: S3Server, mcli: CLI, sftp_server) -> None:
    objs = _objects(11)
    src_b, back_b = s3_server.new_bucket(), s3_server.new_bucket()
    _fill(s3_server, src_b, objs)
    remote = sftp_server.location()
    env = sftp_server.env()
    cli = CLI(mcli.repo, env={**mcli.env, **env})
    doc = _run(cli, f"s3://{src_b}/data", remote)
    assert _status(doc, "copied") == set(objs)
    root = Path(sftp_server.remote_path(remote.rsplit("/", 1)[1]))
    for key, data in objs.items():
        assert (root / key).read_bytes() == data
    assert not (root / ".tmp").exists()  # its temporary directory is not left behind
    # nothing at the SFTP side has an MD5: verified by reading back
    assert doc["bytes_read"] == 2 * doc["bytes_transferred"]
    doc = _run(cli, f"s3://{src_b}/data", remote)
    assert _status(doc, "skipped") == set(objs) and doc["bytes_read"] == 0
    # without the journal nothing at SFTP tells size-equal objects apart: both are hashed
    fresh = CLI(mcli.repo, env={**cli.env, "MULTIBACKUP_STATE_DIR": str(root) + "-state"})
    (root / "site" / "page3.html").write_bytes(bytes(reversed(objs["site/page3.html"])))
    doc = _run(fresh, f"s3://{src_b}/data", remote)
    assert _status(doc, "copied") == {"site/page3.html"}
    assert {o["reason"] for o in doc["objects"] if o["status"] == "skipped"} == \
        {"same content (hashed)"}
    assert (root / "site" / "page3.html").read_bytes() == objs["site/page3.html"]

    doc = _run(cli, remote, f"s3://{back_b}")
    assert _status(doc, "copied") == set(objs)
    assert _bucket(s3_server, back_b) == objs
    # a file changed in place at the SFTP source, same size: its new time tells the
    # journal, which copies it again (it once took "same size" for "verified")
    page = root / "site" / "page5.html"
    changed = bytes(reversed(objs["site/page5.html"]))
    assert changed != objs["site/page5.html"]
    page.write_bytes(changed)
    os.utime(page, (time.time() + 5, time.time() + 5))
    doc = _run(cli, remote, f"s3://{back_b}")
    assert _status(doc, "copied") == {"site/page5.html"}
    assert _bucket(s3_server, back_b) == {**objs, "site/page5.html": changed}
    # a journal written when SFTP listings had no ETag knew the size only: such a record
    # proves nothing, the contents are compared
    journal = Path(cli.env["MULTIBACKUP_STATE_DIR"]) / "migrate" / "journal.sqlite"
    with sqlite3.connect(journal) as db:
        assert db.execute("UPDATE verified SET src_etag = '' WHERE key LIKE 'site/%' "
                          "AND src_mtime_ns = 0").rowcount == 9
    page.write_bytes(objs["site/page5.html"])
    doc = _run(cli, remote, f"s3://{back_b}")
    assert _status(doc, "copied") == {"site/page5.html"}
    assert {o["reason"] for o in doc["objects"] if o["key"].startswith("site/")} == \
        {"same content (hashed)", "content differs"}
    assert _bucket(s3_server, back_b) == objs
    # and one rewritten by hand at the SFTP destination, same size: copied over again
    page.write_bytes(objs["site/page5.html"])
    (root / "site" / "page1.html").write_bytes(bytes(reversed(objs["site/page1.html"])))
    os.utime(root / "site" / "page1.html", (time.time() + 9, time.time() + 9))
    doc = _run(cli, f"s3://{src_b}/data", remote)
    # (page3 too: the run with the other journal rewrote it since this one verified it)
    assert _status(doc, "copied") == {"site/page1.html", "site/page3.html", "site/page5.html"}
    assert {o["reason"] for o in doc["objects"] if o["status"] == "copied"} == \
        {"changed since it was verified"}
    assert (root / "site" / "page1.html").read_bytes() == objs["site/page1.html"]


def test_sftp_to_sftp_same_size_and_second_is_compared(mcli: CLI, sftp_server) -> None:
    """Two SFTP files of one size written in the same second (SFTP times are whole
    seconds) but with other bytes: hashed and copied, not taken for equal."""
    a, b = Path(sftp_server.remote_path()), Path(sftp_server.remote_path())
    a.mkdir()
    b.mkdir()
    (a / "f.txt").write_bytes(b"version-NEW\n")
    (b / "f.txt").write_bytes(b"version-OLD\n")
    for p in (a / "f.txt", b / "f.txt"):
        os.utime(p, (1704110400, 1704110400))
    cli = CLI(mcli.repo, env={**mcli.env, **sftp_server.env()})
    src, dst = sftp_server.location(a.name), sftp_server.location(b.name)
    r = cli("migrate", src, dst, "--mode", "check", "--json", ok=False)
    assert r.code == 1 and _status(json.loads(r.out), "differs") == {"f.txt"}
    doc = _run(cli, src, dst)
    assert [(o["key"], o["status"]) for o in doc["objects"]] == [("f.txt", "copied")]
    assert (b / "f.txt").read_bytes() == b"version-NEW\n"


@pytest.mark.parametrize("kind", ["azure", "gcs"])
def test_s3_to_another_cloud_and_back(kind: str, s3_server: S3Server, mcli: CLI,
                                      request: pytest.FixtureRequest) -> None:
    """Into Azure (staged blocks) or GCS (a resumable session) and back out."""
    objs = _objects(13)
    src_b = s3_server.new_bucket()
    _fill(s3_server, src_b, objs, ContentType="text/x-kept", Metadata={"origin": "s3"})
    server = request.getfixturevalue("azurite" if kind == "azure" else "gcs")
    dst = server.location(prefix="mig")
    cli = CLI(mcli.repo, env={**mcli.env, **server.env()})
    doc = _run(cli, f"s3://{src_b}/data", dst)
    assert _status(doc, "copied") == set(objs)
    # content type and user metadata kept (small and part-by-part objects alike)
    from multibackup.backends.location import open_store, parse_location

    with pytest.MonkeyPatch.context() as env:
        for k, v in server.env().items():
            env.setenv(k, v)
        cloud = open_store(parse_location(dst))
        for key in ("site/page1.html", "media/big.bin"):
            assert cloud.attributes(key) == ("text/x-kept", {"origin": "s3"})
        assert cloud.get("media/big.bin") == objs["media/big.bin"]
    # back into a fresh bucket and compare bytes through S3
    back = s3_server.new_bucket()
    doc = _run(cli, dst, f"s3://{back}")
    assert _status(doc, "copied") == set(objs)
    got = _bucket(s3_server, back)
    assert {k: hashlib.md5(v).hexdigest() for k, v in got.items()} == \
        {k: hashlib.md5(v).hexdigest() for k, v in objs.items()}
    for key in ("site/page1.html", "media/big.bin"):
        head = s3_server.client().head_object(Bucket=back, Key=key)
        assert (head["ContentType"], head["Metadata"]) == ("text/x-kept", {"origin": "s3"})
    doc = _run(cli, f"s3://{src_b}/data", dst)
    assert doc["bytes_transferred"] == 0 and doc["bytes_read"] == 0
    # Azure's and GCS's ETags are no MD5s: a same-size change is found by its newer mtime
    changed = bytes(reversed(objs["site/page5.html"]))
    s3_server.client().put_object(Bucket=src_b, Key="data/site/page5.html", Body=changed)
    doc = _run(cli, f"s3://{src_b}/data", dst)
    assert _status(doc, "copied") == {"site/page5.html"}
    assert doc["bytes_read"] == 2 * len(changed)  # read, and read back to verify


def test_unreachable_destination(s3_server: S3Server, mcli: CLI) -> None:
    src_b = s3_server.new_bucket()
    _fill(s3_server, src_b, {"a.txt": b"a"})
    r = mcli("migrate", f"s3://{src_b}", "s3:http://127.0.0.1:9/bucket", ok=False,
             env={"MULTIBACKUP_DST_AWS_ACCESS_KEY_ID": "k", "MULTIBACKUP_DST_AWS_SECRET_ACCESS_KEY":
                  "dst-secret-never-shown"})
    assert r.code == 1, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "cannot reach" in lines[0]
    assert "dst-secret-never-shown" not in r.err + r.out
    assert os.environ.get("MULTIBACKUP_DST_AWS_ACCESS_KEY_ID") is None


def test_streamed_s3_to_s3_keeps_metadata(s3_server: S3Server, mcli: CLI) -> None:
    objs = _objects(17)
    # names with control characters, which an XML listing garbles, small and large
    objs["site/tab\tpage.html"] = b"<p>tab</p>"
    objs["media/bell\x07big.bin"] = random.Random(3).randbytes(BIG)
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    client = s3_server.client()

    def tag(key: str) -> str:  # a metadata value of the name, in printable characters
        return key.rsplit("/", 1)[-1].encode("unicode_escape").decode()

    for key, data in objs.items():
        client.put_object(Bucket=src_b, Key=key, Body=data, ContentType="text/x-test",
                          Metadata={"owner": "web", "k": tag(key)},
                          ContentEncoding="gzip", CacheControl="max-age=60",
                          ContentDisposition='attachment; filename="x"')
    for server_side in (False, True):
        dst = f"s3://{dst_b}/{'ss' if server_side else 'stream'}"
        args = () if server_side else ("--no-server-side-copy",)
        doc = _run(mcli, f"s3://{src_b}", dst, *args)
        assert _status(doc, "copied") == set(objs) and doc["server_side"] is server_side
        if not server_side:
            # every byte sent once and proven by ETags (MD5, or MD5 of part MD5s): no read-back
            assert doc["bytes_transferred"] == doc["bytes_read"] == sum(map(len, objs.values()))
        prefix = dst.rsplit("/", 1)[1] + "/"
        assert _bucket(s3_server, dst_b, prefix) == objs
        again = _run(mcli, f"s3://{src_b}", dst, *args)
        assert {o["reason"] for o in again["objects"]} == {"verified earlier (journal)"}
        for key in objs:
            head = client.head_object(Bucket=dst_b, Key=prefix + key)
            assert head["ContentType"] == "text/x-test"
            assert head["Metadata"] == {"owner": "web", "k": tag(key)}
            # small objects (one GET, one PUT) and large ones (multipart) alike
            assert (head.get("ContentEncoding"), head.get("CacheControl"),
                    head.get("ContentDisposition")) == \
                ("gzip", "max-age=60", 'attachment; filename="x"'), key
        big = client.head_object(Bucket=dst_b, Key=prefix + "media/big.bin")["ETag"].strip('"')
        if not server_side:
            data = objs["media/big.bin"]
            step = 8 << 20
            md5s = b"".join(hashlib.md5(data[o:o + step]).digest()
                            for o in range(0, len(data), step))
            assert big == f"{hashlib.md5(md5s).hexdigest()}-3"


def test_saved_migration_in_the_config(s3_server: S3Server, mcli: CLI, tmp_path: Path) -> None:
    objs = {k: v for k, v in _objects(19).items() if k != "media/big.bin"}
    src_b = s3_server.new_bucket()
    _fill(s3_server, src_b, objs)
    local = tmp_path / "local-copy"
    config = tmp_path / "config.toml"
    config.write_text(f"""
[destinations.old]
location = "s3://{src_b}/data"
endpoint = "{s3_server.endpoint}"
access_key_id = "testkey"
secret_access_key = {{ env = "OLD_SECRET" }}

[destinations.disk]
location = "{local}"

[migrations.to-disk]
source = "old"
destination = "disk"
include = ["site/*"]
exclude = ["*.css"]
max_delete = 5
transfers = 2
""")
    # the environment's own S3 keys are wrong: only the config's reach the server
    cli = CLI(mcli.repo, env={**mcli.env, "AWS_SECRET_ACCESS_KEY": "wrong",
                              "OLD_SECRET": S3_SECRET})
    doc = json.loads(cli("migrate", "--config", str(config), "to-disk", "--json",
                         "--exclude", "*page7*").out)
    expected = {k for k in objs if k.startswith("site/") and not k.endswith(".css")
                and "page7" not in k}
    assert _status(doc, "copied") == expected
    assert {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()} == expected

    r = cli("migrate", "--config", str(config), "to-dsk", ok=False)
    assert r.code == 2 and "did you mean 'to-disk'" in r.err
    config.write_text(config.read_text().replace("transfers = 2", "transfers = 0"))
    r = cli("migrate", "--config", str(config), "to-disk", ok=False)
    assert r.code == 2 and "transfers" in r.err and len(r.err.strip().splitlines()) == 1


def test_s3_to_webdav_streams_large_objects(s3_server: S3Server, mcli: CLI, webdav) -> None:
    objs = _objects(23)
    src_b = s3_server.new_bucket()
    _fill(s3_server, src_b, objs)
    sub = "w-" + os.urandom(4).hex()
    cli = CLI(mcli.repo, env={**mcli.env, **webdav.env()})
    doc = _run(cli, f"s3://{src_b}/data", webdav.location(sub))
    assert _status(doc, "copied") == set(objs)
    for key, data in objs.items():
        assert (webdav.root / sub / key).read_bytes() == data
    doc = _run(cli, f"s3://{src_b}/data", webdav.location(sub), "--mode", "check")
    assert doc["counts"] == {"skipped": len(objs)}


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A proxy on 127.0.0.1 before a real server: subclasses answer some requests
    themselves (``_refuse``) and send the rest on (``_relay``)."""

    protocol_version = "HTTP/1.1"
    upstream = 0
    keep_host = False  # S3 signs the Host header: it must arrive as the client sent it

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", content_type: str = "") -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self) -> bool:
        """Answer this request here instead of sending it on: True when it did."""
        raise NotImplementedError

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self._refuse():
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=60)
        conn.request(self.command, self.path, body=body,
                     headers={k: v for k, v in self.headers.items()
                              if self.keep_host or k.lower() != "host"})
        reply = conn.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        size = reply.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", size or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward
    do_PROPFIND = do_MKCOL = do_MOVE = _forward


class _FailingListings(_Proxy):
    """A proxy before a WebDAV server that answers 503 to the listing of one folder."""

    failing = ""

    def _refuse(self) -> bool:
        if self.command == "PROPFIND" and self.failing in self.path:
            self._answer(503)
            return True
        return False


def test_a_webdav_folder_that_cannot_be_listed_stops_a_sync(tmp_path: Path, mcli: CLI,
                                                           webdav) -> None:
    """One folder's listing fails (503): the sync stops with an error and deletes
    nothing (the failed folder once looked empty, and its copies were deleted); an
    unreachable server is an error too, not "no objects"."""
    sub = "dav-" + uuid.uuid4().hex[:8]
    local = tmp_path / "local"
    for name in ("keep/a.txt", "keep/b.txt", "other/c.txt", "top.txt"):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(name.encode() * 10)
    cli = CLI(mcli.repo, env={**mcli.env, **webdav.env()})
    # written through the server (rclone's caches what it listed of its directory)
    assert _run(cli, str(local), webdav.location(sub))["counts"] == {"copied": 4}
    dst = tmp_path / "copy"
    assert _run(cli, webdav.location(sub), str(dst))["counts"] == {"copied": 4}
    handler = type("Failing", (_FailingListings,), {"upstream": webdav.port,
                                                    "failing": f"/{sub}/keep"})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        via = f"webdav://127.0.0.1:{proxy.server_address[1]}/{sub}"
        r = cli("migrate", via, str(dst), "--mode", "sync", "--delete", ok=False)
        assert r.code == 1 and "listing keep/" in r.err and "deleted" not in r.out
    finally:
        proxy.shutdown()
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == \
        ["keep/a.txt", "keep/b.txt", "other/c.txt", "top.txt"]
    r = cli("migrate", "webdav://127.0.0.1:1/x", str(dst), "--mode", "sync", "--delete",
            ok=False)
    assert r.code == 1 and "cannot reach the server" in r.err and len(r.err.splitlines()) == 1
    assert len(list(dst.rglob("*.txt"))) == 4


def test_webdav_ranged_puts_are_tried_before_they_are_used(webdav, apache_webdav,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Apache's mod_dav writes a PUT with Content-Range at its offset; rclone's server would
    replace the file with the part. The probe tells them apart on a file of its own, which
    it removes, so large objects go part by part only where that is safe."""
    from multibackup.backends.location import open_store, parse_location
    from multibackup.backends.webdav_store import WebDAVPartial

    found = {}
    for name, server in (("apache", apache_webdav), ("rclone", webdav)):
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        sub = "probe-" + os.urandom(4).hex()
        store = open_store(parse_location(server.location(sub)))
        found[name] = WebDAVPartial(store, 1 << 20).usable()
        assert [p.name for p in (server.root / sub).rglob("*") if p.is_file()] == []
    assert found == {"apache": True, "rclone": False}


def test_large_object_streams_into_webdav_in_bounded_memory(tmp_path: Path, fresh_webdav) -> None:
    """WebDAV takes an object in one request: it is streamed as the body of one PUT to a
    temporary file, then moved onto its key, so a 300 MiB object never sits in memory and
    a killed copy leaves nothing at the key."""
    import signal
    import subprocess
    import sys
    import time

    webdav = fresh_webdav
    src = tmp_path / "src"
    src.mkdir()
    size = 300 * 1024 * 1024 + 321
    with open(src / "huge.bin", "wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
        fh.write(os.urandom(size & ((1 << 20) - 1)))
    (src / "dir").mkdir()
    (src / "dir" / "small.txt").write_bytes(b"small")
    sub = "big-" + os.urandom(4).hex()
    env = {**os.environ, **webdav.env(), "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")}
    args = [sys.executable, "-m", "multibackup", "migrate", f"local:{src}",
            webdav.location(sub), "--json"]

    proc = subprocess.Popen([*args, "--bwlimit", "60M"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    tmp_dir = webdav.root / sub / ".tmp"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > (32 << 20) for p in tmp_dir.glob("upload-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the upload did not start in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert not (webdav.root / sub / "huge.bin").exists()  # nothing truncated at the key

    # a parent of its own, so that its peak RSS is the copy's alone
    measure = ("import resource, subprocess, sys; "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.stderr.write(r.stdout + r.stderr)")
    run = subprocess.run([sys.executable, "-c", measure, *args], env=env, capture_output=True,
                         text=True, timeout=300)
    code, peak_kib = map(int, run.stdout.split())
    assert code == 0, run.stderr
    doc = json.loads(run.stderr[:run.stderr.rindex("}") + 1])
    assert _status(doc, "copied") == {"huge.bin"}  # dir/small.txt went before the kill
    assert _status(doc, "skipped") == {"dir/small.txt"}
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib >> 10} MiB for a 300 MiB object"
    assert md5_file(webdav.root / sub / "huge.bin") == md5_file(src / "huge.bin")
    # the killed run's temporary file is neither an object nor deleted by a sync
    doc = _run(CLI("unused", env=env), f"local:{src}", webdav.location(sub), "--mode", "sync",
               "--delete")
    assert doc["counts"] == {"skipped": 2}
    leftovers = list(tmp_dir.glob("upload-*"))
    assert len(leftovers) == 1  # younger than a day: a migration leaves it
    from multibackup.backends.location import open_store, parse_location

    with pytest.MonkeyPatch.context() as mp:
        for k, v in webdav.env().items():
            mp.setenv(k, v)
        store = open_store(parse_location(webdav.location(sub)))
    assert store.sweep_temporary(older_than=3600) == 0
    assert store.sweep_temporary(older_than=0) == 1
    assert not leftovers[0].exists() and (webdav.root / sub / "huge.bin").exists()



def test_many_large_objects_share_a_bounded_number_of_parts(tmp_path: Path,
                                                            s3_server: S3Server) -> None:
    """Eight large objects at once hold at most 2 x 8 parts of 8 MiB in memory together,
    not up to five each (about 430 MiB peak, here 240), and arrive intact."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    size = 48 * 1024 * 1024 + 99
    for i in range(8):
        with open(src / f"big{i}.bin", "wb") as fh:
            for _ in range(size >> 20):
                fh.write(os.urandom(1 << 20))
            fh.write(os.urandom(size & ((1 << 20) - 1)))
    bucket = s3_server.new_bucket()
    env = {**os.environ, **s3_server.env(), "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")}
    measure = ("import resource, subprocess, sys; "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.stderr.write(r.stdout + r.stderr)")
    run = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "multibackup",
                          "migrate", f"local:{src}", f"s3://{bucket}/m", "--transfers", "8",
                          "--json"], env=env, capture_output=True, text=True, timeout=600)
    code, peak_kib = map(int, run.stdout.split())
    assert code == 0, run.stderr
    doc = json.loads(run.stderr[:run.stderr.rindex("}") + 1])
    assert doc["counts"] == {"copied": 8}
    assert peak_kib < 320 * 1024, f"peak RSS {peak_kib >> 10} MiB"  # five each: ~430
    client = s3_server.client()
    for i in (0, 7):
        head = client.head_object(Bucket=bucket, Key=f"m/big{i}.bin")
        assert head["ContentLength"] == size and head["ETag"].strip('"').endswith("-7")
        got = hashlib.md5()
        for block in client.get_object(Bucket=bucket, Key=f"m/big{i}.bin")["Body"].iter_chunks(1 << 20):
            got.update(block)
        assert got.hexdigest() == md5_file(src / f"big{i}.bin")


def test_local_temp_files_are_not_objects(tmp_path: Path) -> None:
    """Unfinished writes in .tmp/ are neither copied nor deleted by a sync."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / ".tmp").mkdir(parents=True)
    (src / ".tmp" / "stale.part").write_bytes(b"half")
    (src / "a.txt").write_bytes(b"a")
    (dst / ".tmp").mkdir(parents=True)
    (dst / ".tmp" / "migrate-x.part").write_bytes(b"partial")
    (dst / "old.txt").write_bytes(b"old")
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    doc = cli("migrate", str(src), str(dst), "--mode", "sync", "--delete", "--json").json()
    assert doc["counts"] == {"copied": 1, "deleted": 1}
    assert (dst / ".tmp" / "migrate-x.part").read_bytes() == b"partial"
    assert sorted(p.name for p in dst.iterdir()) == [".tmp", "a.txt"]
    r = cli("migrate", str(src), str(dst), "--mode", "check")
    assert r.code == 0 and "1 skipped" in r.out
    # a file named .tmp is the same reserved name: left out, not failed against the
    # destination's temporary directory
    other = tmp_path / "other"
    other.mkdir()
    (other / ".tmp").write_bytes(b"a file")
    (other / "b.txt").write_bytes(b"b")
    doc = cli("migrate", str(other), str(dst), "--json").json()
    assert doc["counts"] == {"copied": 1} and (dst / ".tmp").is_dir()


def test_sync_never_deletes_what_the_source_holds_but_filters_out(tmp_path: Path) -> None:
    """Filters on size or date see each side's own copy: an object the source still
    holds, filtered out there, is kept at the destination by a sync --delete."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(3):
        (src / f"old{i}.txt").write_bytes(b"old %d\n" % i)
        os.utime(src / f"old{i}.txt", (1_577_836_800, 1_577_836_800))  # 2020-01-01
    (src / "grows.txt").write_bytes(b"small")
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    cli("migrate", str(src), str(dst))
    (src / "new.txt").write_bytes(b"new\n")
    (src / "grows.txt").write_bytes(b"x" * 4096)  # now over --max-size, its copy is not
    (dst / "gone.txt").write_bytes(b"not at the source")
    r = cli("migrate", str(src), str(dst), "--mode", "check", "--modified-since", "7d",
            "--max-size", "1k", "--json", ok=False)
    assert r.code == 1
    assert {(o["key"], o["status"]) for o in r.json()["objects"]} == \
        {("new.txt", "missing"), ("gone.txt", "extraneous")}
    doc = cli("migrate", str(src), str(dst), "--mode", "sync", "--delete",
              "--modified-since", "7d", "--max-size", "1k", "--json").json()
    assert doc["counts"] == {"copied": 1, "deleted": 1}
    assert sorted(p.name for p in dst.iterdir() if p.name != ".tmp") == \
        ["grows.txt", "new.txt", "old0.txt", "old1.txt", "old2.txt"]
    assert (dst / "grows.txt").read_bytes() == b"small"  # filtered out: neither copied
    assert (src / "grows.txt").read_bytes() == b"x" * 4096  # nor deleted


def test_tmp_prefix_is_left_alone_on_both_sides(s3_server: S3Server, mcli: CLI,
                                               tmp_path: Path) -> None:
    """Where one side keeps its temporary files in .tmp/, that prefix is out of the
    migration on both sides: an S3 object under it is neither copied nor deleted."""
    src = tmp_path / "src"
    (src / ".tmp").mkdir(parents=True)
    (src / ".tmp" / "notes.txt").write_bytes(b"local")
    (src / "a.txt").write_bytes(b"a")
    s3_server.client().create_bucket(Bucket="tmp-prefix")
    s3_server.client().put_object(Bucket="tmp-prefix", Key="d/.tmp/notes.txt", Body=b"remote")
    doc = _run(mcli, str(src), "s3://tmp-prefix/d", "--mode", "sync", "--delete")
    assert doc["counts"] == {"copied": 1}
    assert _bucket(s3_server, "tmp-prefix", "d/") == {".tmp/notes.txt": b"remote",
                                                      "a.txt": b"a"}
    back = tmp_path / "back"
    doc = _run(mcli, "s3://tmp-prefix/d", str(back))
    assert doc["counts"] == {"copied": 1} and not (back / ".tmp" / "notes.txt").exists()
    assert _run(mcli, "s3://tmp-prefix/d", str(back), "--mode", "check")["counts"] == \
        {"skipped": 1}


def test_missing_source_and_overlapping_ends_are_refused(s3_server: S3Server, mcli: CLI,
                                                        tmp_path: Path) -> None:
    """A mistyped local source is an error, not an empty source whose sync empties the
    destination; a source inside the destination (or the reverse) is refused."""
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_bytes(b"keep")
    missing = tmp_path / "no-such-dir"
    r = mcli("migrate", str(missing), str(dst), "--mode", "sync", "--delete", ok=False)
    assert r.code == 1 and r.err.strip() == f"error: source {missing} does not exist"
    assert not missing.exists() and (dst / "keep.txt").read_bytes() == b"keep"
    (dst / "sub").mkdir()
    (dst / "sub" / "a.txt").write_bytes(b"a")
    (tmp_path / "link").symlink_to(dst)
    for src_arg, dst_arg in ((dst / "sub", dst), (dst, dst / "sub"),
                             (dst / "sub", tmp_path / "link")):
        r = mcli("migrate", str(src_arg), str(dst_arg), "--mode", "sync", "--delete",
                 ok=False)
        assert r.code == 2 and "source and destination overlap" in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1
    assert (dst / "sub" / "a.txt").read_bytes() == b"a" and not (dst / "sub" / "sub").exists()
    # refused before the destination is opened: nothing is made inside the source, and an
    # earlier report is left as it was
    report = tmp_path / "report.json"
    report.write_text('{"earlier": 1}')
    r = mcli("migrate", str(dst), str(dst / "new"), "--report", str(report), ok=False)
    assert r.code == 2 and not (dst / "new").exists()
    assert report.read_text() == '{"earlier": 1}'
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []
    s3_server.client().create_bucket(Bucket="overlap")
    _fill(s3_server, "overlap", {"x": b"x"}, prefix="site/new/")
    r = mcli("migrate", "s3://overlap/site/new", "s3://overlap/site", "--mode", "sync",
             "--delete", ok=False)
    assert r.code == 2 and "overlap" in r.err
    # the same server by another name, and paths spelt another way, are the same place
    alias = s3_server.endpoint.replace("127.0.0.1", "localhost")
    assert alias != s3_server.endpoint
    for dst_arg in (f"s3:{alias}/overlap/site", "s3://overlap//site", "s3://overlap/x/../site"):
        r = mcli("migrate", "s3://overlap/site/new", dst_arg, "--mode", "sync", "--delete",
                 ok=False)
        assert r.code == 2 and "s3://overlap/site/new lies within" in r.err, (dst_arg, r.err)
    assert _bucket(s3_server, "overlap") == {"site/new/x": b"x"}
    # neighbours that only share the start of a name do not overlap
    _run(mcli, "s3://overlap/site/new", "s3://overlap/site/newer")
    assert _bucket(s3_server, "overlap", "site/newer/") == {"x": b"x"}


def test_names_with_white_space_at_either_end_fail_alone(tmp_path: Path) -> None:
    """OpenDAL trims paths: " notes.txt" must fail, not carry bytes of "notes.txt"."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / " notes.txt").write_bytes(b"hi")
    (src / "trail ").write_bytes(b"trailing")
    (src / "notes.txt").write_bytes(b"IMPORTANT-DATA")
    (src / "in side.txt").write_bytes(b"inner spaces are fine")
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    r = cli("migrate", str(src), str(dst), "--json", ok=False)
    assert r.code == 1
    objects = {o["key"]: o for o in r.json()["objects"]}
    assert {k: o["status"] for k, o in objects.items()} == {
        " notes.txt": "failed", "trail ": "failed", "notes.txt": "copied",
        "in side.txt": "copied"}
    assert "begins or ends with white space" in objects[" notes.txt"]["reason"]
    (src / " fake.txt: injected\nfailed       x").write_bytes(b"n")
    r = cli("migrate", str(src), str(dst), ok=False)
    lines = r.out.splitlines()  # a newline in a name is shown escaped, in its own line
    assert r.code == 1 and not any(line.startswith("failed       x") for line in lines)
    assert any(line.startswith("failed        fake.txt: injected\\nfailed       x: ")
               for line in lines), lines
    assert (dst / "notes.txt").read_bytes() == b"IMPORTANT-DATA"
    assert (dst / "in side.txt").read_bytes() == b"inner spaces are fine"
    assert sorted(p.name for p in dst.iterdir() if p.name != ".tmp") == \
        ["in side.txt", "notes.txt"]


def test_source_replaced_by_an_older_copy_is_copied_again(tmp_path: Path) -> None:
    """Same size, older time (cp -p, tar x): the journal knows the source changed since
    the copy was verified, so the destination's newer time does not keep the old bytes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "x.txt").write_bytes(b"AAAA\n")
    os.utime(src / "x.txt", (1_748_736_000, 1_748_736_000))  # 2025-06-01
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    cli("migrate", str(src), str(dst))
    (src / "x.txt").write_bytes(b"BBBB\n")
    os.utime(src / "x.txt", (1_735_689_600, 1_735_689_600))  # 2025-01-01
    r = cli("migrate", str(src), str(dst), "--mode", "check", "--json", ok=False)
    assert r.code == 1 and [(o["status"], o["reason"]) for o in r.json()["objects"]] == \
        [("differs", "changed since it was verified")]
    doc = cli("migrate", str(src), str(dst), "--json").json()
    assert doc["counts"] == {"copied": 1}
    assert (dst / "x.txt").read_bytes() == b"BBBB\n"
    # the destination copy rewritten by hand, same size: its ETag (inode, size, time)
    # is not the one journalled, so the copy is made again
    (dst / "x.txt").write_bytes(b"ZZZZ\n")
    doc = cli("migrate", str(src), str(dst), "--json").json()
    assert [(o["status"], o["reason"]) for o in doc["objects"]] == \
        [("copied", "changed since it was verified")]
    assert (dst / "x.txt").read_bytes() == b"BBBB\n"
    doc = cli("migrate", str(src), str(dst), "--json").json()
    assert [(o["status"], o["reason"]) for o in doc["objects"]] == \
        [("skipped", "verified earlier (journal)")]
    # rewritten in place with its time put back (touch -r): only the change time tells
    before = (src / "x.txt").stat()
    (src / "x.txt").write_bytes(b"CCCC\n")
    os.utime(src / "x.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    doc = cli("migrate", str(src), str(dst), "--json").json()
    assert doc["counts"] == {"copied": 1} and (dst / "x.txt").read_bytes() == b"CCCC\n"


def test_report_that_cannot_be_written_fails_before_anything_moves(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    bad = tmp_path / "no-such-dir" / "r.json"
    r = cli("migrate", str(src), str(dst), "--report", str(bad), ok=False)
    assert r.code == 1
    assert r.err.strip() == f"error: cannot write the report {bad}: No such file or directory"
    assert not (dst / "a.txt").exists()
    # a symlink's target is written and the link kept; a FIFO (or /dev/stdout) is
    # written into, not replaced by a file
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    cli("migrate", str(src), str(dst), "--report", str(tmp_path / "link.json"))
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text())["counts"] == {"copied": 1}
    os.mkfifo(tmp_path / "pipe")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append((tmp_path / "pipe").read_bytes()))
    reader.start()
    cli("migrate", str(src), str(dst), "--report", str(tmp_path / "pipe"))
    reader.join(30)
    assert json.loads(got[0])["counts"] == {"skipped": 1}
    assert stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode)


def test_local_source_is_only_read(tmp_path: Path) -> None:
    """Nothing is made in a local source (it may be read-only): no temporary directory,
    in any mode; a symlink or FIFO in it is no object."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_bytes(b"a")
    (src / "link.txt").symlink_to(src / "d" / "a.txt")
    (src / "dirlink").symlink_to(src / "d")
    os.mkfifo(src / "fifo")
    before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    for mode in ("check", "copy", "check"):
        r = cli("migrate", str(src), str(dst), "--mode", mode, "--json", ok=False)
        assert r.code == (1 if mode == "check" and not (dst / "d").exists() else 0), r.err
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == before
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if ".tmp" not in p.parts) \
        == ["d", "d/a.txt"]
    # check and dry runs only read the destination: a missing one is not made
    absent = tmp_path / "absent"
    for args in (("--mode", "check"), ("--dry-run",), ("--mode", "sync", "--dry-run")):
        r = cli("migrate", str(src), str(absent), *args, "--json", ok=False)
        objects = r.json()["objects"]
        assert {o["key"] for o in objects if o["status"] == "not-copied"} \
            == {"link.txt", "dirlink", "fifo"}
        assert {o["status"] for o in objects} - {"not-copied"} <= {"missing", "would-copy"}
        assert len(objects) == 4 and not absent.exists()


def test_delete_outside_sync_and_empty_locations_are_usage_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    for args, says in (((str(src), str(tmp_path / "d"), "--delete"), "--mode sync only"),
                       ((str(src), str(tmp_path / "d"), "--mode", "check", "--delete"),
                        "--mode sync only"),
                       (("", str(tmp_path / "d")), "SRC is empty"),
                       ((str(src), " "), "DST is empty"),
                       (("foo://y", str(tmp_path / "d")), "unsupported SRC location 'foo://y'"),
                       ((str(src), "dropbox://b/x"), "unsupported DST location")):
        r = cli("migrate", *args, ok=False)
        assert r.code == 2 and says in r.err and len(r.err.strip().splitlines()) == 1
        assert "repository" not in r.err
        if "unsupported" in says:  # the forms a migration takes, FTP among them
            assert "s3://bucket/prefix" in r.err and "ftp://" in r.err
    assert not (tmp_path / "d").exists()


def test_empty_source_prefix_deletes_nothing_and_odd_keys_copy_server_side(
        s3_server: S3Server, mcli: CLI) -> None:
    """A bucket prefix that lists nothing (mistyped) empties no destination; a key with
    white space at its ends, which S3 takes, copies inside the provider and verifies."""
    bucket = s3_server.new_bucket()
    _fill(s3_server, bucket, {"keep.txt": b"keep", " sp ": b"spaced"}, prefix="dst/")
    doc = _run(mcli, f"s3://{bucket}/no-such-prefix", f"s3://{bucket}/dst", "--mode", "sync",
               "--delete", code=1)
    assert doc["counts"] == {"extraneous": 2}
    assert "the source lists no objects" in " ".join(doc["errors"])
    assert set(_bucket(s3_server, bucket, "dst/")) == {"keep.txt", " sp "}
    doc = _run(mcli, f"s3://{bucket}/dst", f"s3://{bucket}/copy")
    assert doc["server_side"] is True and doc["counts"] == {"copied": 2}
    assert _bucket(s3_server, bucket, "copy/") == {"keep.txt": b"keep", " sp ": b"spaced"}


def test_symlinked_directory_in_a_local_destination_is_not_written_through(
        tmp_path: Path) -> None:
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "f").write_bytes(b"new f")
    (src / "a.txt").write_bytes(b"a")
    outside.mkdir()
    dst.mkdir()
    (dst / "dir").symlink_to(outside)
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    r = cli("migrate", str(src), str(dst), "--json", ok=False)
    assert r.code == 1
    assert {(o["key"], o["status"]) for o in r.json()["objects"]} == \
        {("a.txt", "copied"), ("dir/f", "failed")}
    reason = next(o["reason"] for o in r.json()["objects"] if o["key"] == "dir/f")
    assert reason == "the destination has a symlink at dir: not written through"
    assert list(outside.iterdir()) == [] and (dst / "dir").is_symlink()


def test_sizes_dates_and_globs() -> None:
    from multibackup.backends.base import ObjectInfo
    from multibackup.engine.migrate import Filters, parse_since, parse_size
    from multibackup.errors import UsageError

    assert [parse_size(t) for t in ("512", "100k", "10M", "1.5GiB", "2g")] == \
        [512, 102400, 10 << 20, 3 << 29, 2 << 30]
    assert parse_since("2024-05-01") == 1714521600 * 10**9
    assert parse_since("2024-05-01T02:00:00+02:00") == 1714521600 * 10**9
    assert parse_since("1d12h", now=1000000.0) == int((1000000 - 129600) * 1e9)
    for bad, parse in (("10 parsecs", parse_size), ("yesterday", parse_since)):
        with pytest.raises(UsageError):
            parse(bad)
    f = Filters(include=("*.html", "css/*"), exclude=("drafts/*",), min_size=2,
                modified_since_ns=10)
    keep = [ObjectInfo("a/b/index.html", 5, mtime_ns=20), ObjectInfo("css/x.css", 5),
            ObjectInfo("x.html", 5, mtime_ns=0)]  # no mtime known: kept
    drop = [ObjectInfo("drafts/p.html", 5), ObjectInfo("a.txt", 5), ObjectInfo("t.html", 1),
            ObjectInfo("old.html", 5, mtime_ns=5)]
    assert all(f.match(o) for o in keep) and not any(f.match(o) for o in drop)
    # a glob ending in "/" names a folder (it matched no key at all, and a sync then
    # deleted what lay below the folder it meant to leave alone)
    f = Filters(exclude=("docs/", "site/tmp/"))
    assert not any(f.match(ObjectInfo(k, 1)) for k in
                   ("docs/a.md", "docs/sub/gone.md", "a/docs/b.md", "site/tmp/x"))
    assert all(f.match(ObjectInfo(k, 1)) for k in ("docs.md", "mydocs/a", "a/site/tmp/x"))


def test_keys_that_are_no_file_paths_fail_alone(tmp_path: Path) -> None:
    from multibackup.backends.location import open_store, parse_location
    from multibackup.engine.migrate import MigrateOptions, Migrator

    src = open_store(parse_location("memory://migrate-keys"))
    src.put("a/../b", b"evil")
    src.put("b", b"good")
    dst = open_store(parse_location(str(tmp_path / "dst")))
    report = Migrator(src, dst, MigrateOptions()).run()
    assert {r.key: r.status for r in report.results} == {"a/../b": "failed", "b": "copied"}
    assert (tmp_path / "dst" / "b").read_bytes() == b"good" and not report.ok


@pytest.mark.parametrize("kind", ["azure", "gcs"])
def test_server_side_copy_inside_azure_and_gcs(kind: str, s3_server: S3Server, mcli: CLI,
                                               request: pytest.FixtureRequest) -> None:
    """Within one Azure account (Copy Blob) or GCS endpoint (rewrite), objects are copied
    by the service: no byte passes through this machine, attributes travel along."""
    objs = {"a/page.html": b"<p>hi</p>\n" * 300, "a/empty.txt": b"",
            "b/big.bin": os.urandom(BIG)}
    src_b = s3_server.new_bucket()
    _fill(s3_server, src_b, objs, ContentType="text/x-kept", Metadata={"origin": "s3"})
    server = request.getfixturevalue("azurite" if kind == "azure" else "gcs")
    first, second = server.location(prefix="one"), server.location(prefix="two")
    cli = CLI(mcli.repo, env={**mcli.env, **server.env()})
    _run(cli, f"s3://{src_b}/data", first)

    doc = _run(cli, first, second)
    assert _status(doc, "copied") == set(objs) and doc["server_side"] is True
    assert doc["bytes_transferred"] == 0 and doc["bytes_read"] == 0
    from multibackup.backends.location import open_store, parse_location

    with pytest.MonkeyPatch.context() as env:
        for k, v in server.env().items():
            env.setenv(k, v)
        copy = open_store(parse_location(second))
        for key, data in objs.items():
            assert copy.get(key) == data
        assert copy.attributes("b/big.bin") == ("text/x-kept", {"origin": "s3"})
    # the journal has them: a rerun copies nothing; and the flag turns the copy off
    assert _run(cli, first, second)["counts"] == {"skipped": len(objs)}
    third = server.location(prefix="three")
    doc = _run(cli, first, third, "--no-server-side-copy")
    assert doc["server_side"] is False and doc["bytes_transferred"] == sum(map(len, objs.values()))


def test_names_with_control_characters_are_listed_exactly(s3_server: S3Server, mcli: CLI,
                                                          tmp_path: Path) -> None:
    """S3 listings are XML, which garbles most control characters (U+FFFD): such names
    are listed again exactly, so they copy (inside S3, streamed, to disk) and a second
    sync finds them equal instead of deleting a name that does not exist."""
    bucket = s3_server.new_bucket()
    objs = {"ctl\x01name": b"one", "bell\x07/inner": b"two", "plain.txt": b"three",
            "nl\nkey": b"four"}
    _fill(s3_server, bucket, objs, prefix="src/")
    for extra, dst in (([], "inside"), (["--no-server-side-copy"], "streamed")):
        doc = _run(mcli, f"s3://{bucket}/src", f"s3://{bucket}/{dst}", *extra)
        assert doc["counts"] == {"copied": 4} and doc["server_side"] is (dst == "inside")
        assert _bucket(s3_server, bucket, f"{dst}/") == objs
        doc = _run(mcli, f"s3://{bucket}/src", f"s3://{bucket}/{dst}", "--mode", "sync",
                   "--delete")
        assert doc["counts"] == {"skipped": 4}
    out = tmp_path / "out"
    doc = _run(mcli, f"s3://{bucket}/src", str(out))
    assert doc["counts"] == {"copied": 4}
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and ".tmp" not in p.parts} == objs


@pytest.mark.parametrize("kind", ["local", "sftp"])
def test_a_name_that_is_another_names_directory_fails_alone_and_leaves_nothing(
        kind: str, s3_server: S3Server, mcli: CLI, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """S3 holds "x" and "x/y"; a disk holds only one of them. Whichever comes second fails
    alone with the file system's reason, and no temporary file stays behind (a large one
    is refused before its bytes are sent, or removed when it cannot be put in place)."""
    bucket = s3_server.new_bucket()
    big = random.Random(9).randbytes(9 * 1024 * 1024)
    objs = {"x": b"file x", "x/y": b"file y", "big": big, "big/z": b"z"}
    _fill(s3_server, bucket, objs, prefix="src/")
    cli = mcli
    if kind == "sftp":
        sftp = request.getfixturevalue("sftp_server")
        dst = sftp.location()
        out = Path(sftp.remote_path(dst.rsplit("/", 1)[1]))
        cli = CLI(mcli.repo, env={**mcli.env, **sftp.env()})
    else:
        out = tmp_path / "out"
        dst = str(out)
    for _ in range(2):
        doc = _run(cli, f"s3://{bucket}/src", dst, code=1)
        failed = {o["key"]: o["reason"] for o in doc["objects"] if o["status"] == "failed"}
        assert len(failed) == 2
        assert len(set(failed) & {"x", "x/y"}) == 1 and len(set(failed) & {"big", "big/z"}) == 1
        if kind == "local" or "big" in failed:  # SFTP names a failed small write less well
            assert all(r.endswith(("Is a directory", "Not a directory"))
                       for k, r in failed.items() if kind == "local" or k == "big")
        held = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
                if p.is_file() and ".tmp" not in p.parts}
        assert held == {k: v for k, v in objs.items() if k not in failed}
        assert not (out / ".tmp").exists()  # emptied and removed, on disk and SFTP alike


def _crc32c(data: bytes) -> str:
    import base64

    import google_crc32c

    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _multipart_md5s(data: bytes, part: int = 8 * 1024 * 1024) -> str:
    md5s = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"


def test_large_parts_are_proven_by_crc32c_where_the_server_checks_it(
        s3_server: S3Server, mcli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of a large object carry a CRC32C, which SeaweedFS (like AWS) checks and
    refuses on a mismatch: no MD5 of every byte on this machine, the object still whole."""
    from multibackup.backends.location import parse_location
    from multibackup.backends.s3_multipart import S3Multipart
    from multibackup.errors import StoreError

    data = random.Random(21).randbytes(BIG)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(data)
    bucket = s3_server.new_bucket()
    doc = _run(mcli, str(src), f"s3://{bucket}/crc")
    assert doc["counts"] == {"copied": 1}
    head = s3_server.client().head_object(Bucket=bucket, Key="crc/big.bin", ChecksumMode="ENABLED")
    assert head["ChecksumType"] == "COMPOSITE" and head["ChecksumCRC32C"].endswith("-3")
    assert head["ETag"].strip('"') == _multipart_md5s(data)
    assert _bucket(s3_server, bucket, "crc/") == {"big.bin": data}
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    s3 = S3Multipart(parse_location(f"s3://{bucket}/crc"))
    upload_id, checksum = s3.create_checked("other.bin")
    assert checksum == "CRC32C"
    with pytest.raises(StoreError, match="BadDigest"):
        s3.upload_part("other.bin", upload_id, 1, b"what was read", crc32c=_crc32c(b"what was sent"))
    s3.abort("other.bin", upload_id)


def test_large_object_requests_are_signed_and_fail_in_one_line(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The part uploads and ranged reads are signed by hand (SigV4): keys with spaces,
    unicode and reserved characters reach the server intact, a read fills its buffer
    exactly, and a wrong secret or a dead endpoint is one line that never shows the
    secret."""
    from multibackup.backends.location import parse_location
    from multibackup.backends.s3_multipart import S3Multipart
    from multibackup.errors import StoreError

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    s3 = S3Multipart(parse_location(f"s3://{bucket}/sig"))
    key = "dir with space/ünïcode+plus&amp=eq~tilde (1).bin"
    parts = [random.Random(n).randbytes(5 << 20) for n in (1, 2)] + [b"tail"]
    upload_id = s3.create(key, "text/x-sig", {"owner": "ops"})  # parts with Content-MD5
    etags = [s3.upload_part(key, upload_id, n, memoryview(bytearray(p)), md5=hashlib.md5(p).digest())
             for n, p in enumerate(parts, 1)]
    s3.complete(key, upload_id, etags)
    whole = b"".join(parts)
    got = s3_server.client().get_object(Bucket=bucket, Key=f"sig/{key}")
    assert got["Body"].read() == whole and got["ContentType"] == "text/x-sig"
    assert got["Metadata"] == {"owner": "ops"}
    assert s3.stat(key).size == len(whole)
    buffer = bytearray(1000)
    s3.read_into(key, None, (5 << 20) - 500, memoryview(buffer))
    assert bytes(buffer) == whole[(5 << 20) - 500:(5 << 20) + 500]
    with pytest.raises(StoreError, match="changed while it was read"):
        s3.read_into(key, "0" * 32, 0, memoryview(buffer))

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-shown-secret-7")
    wrong = S3Multipart(parse_location(f"s3://{bucket}/sig"))
    with pytest.raises(StoreError) as caught:
        wrong.create_checked("other.bin")
    text = str(caught.value)
    assert "SignatureDoesNotMatch" in text or "AccessDenied" in text, text
    assert "never-shown-secret-7" not in text and "\n" not in text
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    dead = S3Multipart(parse_location(f"s3://{bucket}/sig"))
    with pytest.raises(StoreError, match="ConnectionError") as caught:
        dead.headers(key)
    assert "never-shown-secret-7" not in str(caught.value) and "\n" not in str(caught.value)


def test_crc32c_of_a_reused_buffer_needs_no_copy() -> None:
    """Parts are read into reused memory maps; their CRC32C is taken in place and is the
    same as google_crc32c's of the bytes."""
    import mmap

    import google_crc32c

    from multibackup.backends.crc32c import _extend, crc32c

    data = random.Random(3).randbytes(3 << 20)
    buffer = mmap.mmap(-1, len(data) + 100)
    buffer[:len(data)] = data
    view = memoryview(buffer)[:len(data)]
    assert _extend() is not None  # the wheel's library was found and passed its self-test
    assert crc32c(view) == google_crc32c.value(data) == crc32c(data)
    assert crc32c(memoryview(bytearray(data))[7:]) == google_crc32c.value(data[7:])
    assert crc32c(memoryview(data)) == google_crc32c.value(data)  # read-only: copied
    del view
    buffer.close()


def test_a_damaged_journal_is_set_aside_and_the_run_goes_on(tmp_path: Path) -> None:
    """A journal torn by a crash (or not a database at all) only held work saved: it is
    moved aside with a note, and the run compares every object from the listings."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha")
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(state)})
    journal = state / "migrate" / "journal.sqlite"
    journal.parent.mkdir(parents=True)
    junk = os.urandom(8192)
    journal.write_bytes(junk)
    r = cli("migrate", f"local:{src}", f"local:{dst}", "--json", ok=False)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["counts"] == {"copied": 1} and (dst / "a.txt").read_bytes() == b"alpha"
    [aside] = journal.parent.glob("journal.sqlite.damaged-*")
    assert aside.read_bytes() == junk
    assert doc["notes"] == [f"the migration journal was damaged; it was moved to {aside} and "
                            "this run compares every object afresh"]
    r = cli("migrate", f"local:{src}", f"local:{dst}")
    assert "note: the migration journal was damaged" not in r.err
    again = cli("migrate", f"local:{src}", f"local:{dst}", "--json").json()
    assert [o["reason"] for o in again["objects"]] == ["verified earlier (journal)"]


class _RefusesChecksums(_Proxy):
    """A proxy before SeaweedFS that answers 501 NotImplemented to any request naming a
    checksum algorithm, as an S3 that does not know the header may; every other request
    goes through with its Host header, which the signature covers."""

    keep_host = True
    refused: list[str] = []

    def _refuse(self) -> bool:
        if "x-amz-checksum-algorithm" not in self.headers:
            return False
        self.refused.append(f"{self.command} {self.path}")
        self._answer(501, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>"
                          b"NotImplemented</Code><Message>A header you provided implies "
                          b"functionality that is not implemented</Message></Error>",
                     "application/xml")
        return True


def test_a_server_that_refuses_the_checksum_header_gets_content_md5(
        s3_server: S3Server, mcli: CLI, tmp_path: Path) -> None:
    """An S3 that refuses the checksum an upload asks for (501) gets the plain upload
    instead, asked once: the parts go with their Content-MD5, the copy is whole, and a
    second large object is not refused again."""
    bucket = s3_server.new_bucket()
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    handler = type("Refusing", (_RefusesChecksums,), {"upstream": port, "refused": []})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    rng = random.Random(23)
    objs = {"big.bin": rng.randbytes(BIG), "big2.bin": rng.randbytes(BIG // 2),
            "small.txt": b"small\n"}
    src = tmp_path / "src"
    src.mkdir()
    for name, data in objs.items():
        (src / name).write_bytes(data)
    cli = CLI(mcli.repo, env={**mcli.env,
                              "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_address[1]}"})
    try:
        doc = _run(cli, str(src), f"s3://{bucket}/plain", "--transfers", "1")
    finally:
        proxy.shutdown()
    assert doc["counts"] == {"copied": 3}
    assert len(handler.refused) == 1 and "uploads" in handler.refused[0]
    assert _bucket(s3_server, bucket, "plain/") == objs
    for name in ("big.bin", "big2.bin"):
        head = s3_server.client().head_object(Bucket=bucket, Key=f"plain/{name}",
                                              ChecksumMode="ENABLED")
        assert head["ETag"].strip('"') == _multipart_md5s(objs[name])
        assert "ChecksumCRC32C" not in head


def test_a_server_that_checks_no_checksums_gets_content_md5(tmp_path: Path) -> None:
    """rclone's S3 server ignores the checksum an upload asks for: the parts then go with
    their Content-MD5, as before, and the copy is whole and verified."""
    import socket
    import subprocess
    import time

    import boto3
    from servers_cloud import _rclone  # noqa: PLC2701

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "served"
    (root / "bucket").mkdir(parents=True)
    server = subprocess.Popen([str(_rclone()), "serve", "s3", "--config", "/dev/null", "--addr",
                               f"127.0.0.1:{port}", "--auth-key", "rckey,rcsecret", str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {"AWS_ACCESS_KEY_ID": "rckey", "AWS_SECRET_ACCESS_KEY": "rcsecret",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")}
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "rclone serve s3 did not start"
                time.sleep(0.1)
        data = random.Random(22).randbytes(BIG)
        src = tmp_path / "src"
        src.mkdir()
        (src / "big.bin").write_bytes(data)
        doc = _run(CLI(str(tmp_path / "unused"), env=env), str(src), "s3://bucket/plain")
        assert doc["counts"] == {"copied": 1}
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                              aws_access_key_id="rckey", aws_secret_access_key="rcsecret",
                              region_name="us-east-1")
        got = client.get_object(Bucket="bucket", Key="plain/big.bin")["Body"].read()
        assert got == data and (root / "bucket" / "plain" / "big.bin").read_bytes() == data
    finally:
        server.terminate()
        server.wait(10)


def test_names_of_255_bytes_reach_a_local_folder_and_sftp(mcli: CLI, tmp_path: Path,
                                                         sftp_server) -> None:
    """A file name may have 255 bytes: the temporary name a copy is written under first
    must fit too (with the name in it whole, such files failed with 'File name too long')."""
    src = tmp_path / "src"
    src.mkdir()
    names = {"a" * 251 + ".txt": b"small\n", "é" * 125 + "-.txt": b"two-byte characters\n",
             "b" * 251 + ".bin": os.urandom(20 * 1024 * 1024 + 5)}  # large: copied in parts
    for name, data in names.items():
        (src / name).write_bytes(data)
    dst = tmp_path / "dst"
    doc = _run(mcli, str(src), str(dst))
    assert _status(doc, "copied") == set(names)
    for name, data in names.items():
        assert (dst / name).read_bytes() == data
    # and back into a source tree over SFTP, written file by file (a restore target)
    mcli("init", env={"MULTIBACKUP_REPOSITORY": str(tmp_path / "repo")})
    repo_env = {"MULTIBACKUP_REPOSITORY": str(tmp_path / "repo"), **sftp_server.env()}
    mcli("backup", str(src), env=repo_env)
    target = (f"sftp://{sftp_server.user}@{sftp_server.host}:{sftp_server.port}"
              f"{sftp_server.root}/long-names")
    mcli("restore", "latest", "--target", target, env=repo_env)
    restored = sftp_server.root / "long-names"
    got = {p.name: p.read_bytes() for p in restored.rglob("*") if p.is_file()}
    assert got == names


def test_links_pipes_and_sockets_of_a_folder_source_are_reported_not_copied(
        tmp_path: Path, mcli: CLI, sftp_server) -> None:
    """Object stores hold no symlinks, pipes or sockets: a migration from a folder says
    which it left out and what each is, instead of skipping them without a word."""
    import socket

    def fill(src: Path) -> None:
        (src / "site").mkdir(parents=True)
        (src / "site" / "index.html").write_bytes(b"<h1>hi</h1>")
        os.symlink("index.html", src / "site" / "home.html")
        os.symlink("/etc", src / "etc-link")  # a link to a folder is not walked into
        os.mkfifo(src / "site" / "queue")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(src / "site" / "app.sock"))
        sock.close()

    local = tmp_path / "src"
    fill(local)
    remote = Path(sftp_server.remote_path())
    fill(remote)
    cli = CLI(mcli.repo, env={**mcli.env, **sftp_server.env(),
                              "MULTIBACKUP_STATE_DIR": str(tmp_path / "state")})
    for src, dst in ((str(local), tmp_path / "dst"),
                     (sftp_server.location(remote.name), tmp_path / "dst-from-sftp")):
        r = cli("migrate", src, str(dst), "--json", ok=False)
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert doc["counts"] == {"copied": 1, "not-copied": 4}
        reasons = {o["key"]: o["reason"] for o in doc["objects"] if o["status"] == "not-copied"}
        assert reasons == {"etc-link": "a symbolic link, not a regular file",
                           "site/home.html": "a symbolic link, not a regular file",
                           "site/queue": "a named pipe, not a regular file",
                           "site/app.sock": "a socket, not a regular file"}
        assert [p.name for p in dst.rglob("*")] == ["site", "index.html"]
        # the human summary names each one; an --exclude leaves it out of the report
        r = cli("migrate", src, str(dst), "--exclude", "site/app.sock", ok=False)
        assert r.code == 0
        lines = r.out.splitlines()
        assert any(line.startswith("not-copied") and line.endswith(
            " site/queue: a named pipe, not a regular file") for line in lines), r.out
        assert "app.sock" not in r.out and "1 skipped, 3 not-copied" in r.out


class _Throttling(_Proxy):
    """A proxy before SeaweedFS that answers the first GET and the first PUT of each
    object with 503 SlowDown, drops the connection of the first GET of ``drop.bin``
    without a reply, and throttles every request for ``never.bin``."""

    keep_host = True
    seen: set[str] = set()
    lock = threading.Lock()

    def _refuse(self) -> bool:
        if self.command not in ("GET", "PUT") or "?" in self.path:
            return False  # listings go through
        request = f"{self.command} {self.path}"
        with self.lock:
            first = request not in self.seen
            self.seen.add(request)
        if first and self.command == "GET" and self.path.endswith("/drop.bin"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if first or self.path.endswith("/never.bin"):
            self._answer(503, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>"
                              b"SlowDown</Code><Message>Please reduce your request rate."
                              b"</Message></Error>", "application/xml")
            return True
        return False


def test_small_objects_between_buckets_are_retried_when_throttled_or_dropped(
        s3_server: S3Server, mcli: CLI) -> None:
    """Small objects from S3 to S3 (a GET and a PUT each, through libcurl) are tried again after
    a 503 or a dropped connection, each with a new signature: all arrive whole with their
    headers, and the one the server never takes fails alone, in one line."""
    src_b, dst_b = s3_server.new_bucket(), s3_server.new_bucket()
    client = s3_server.client()
    rng = random.Random(31)
    objs = {f"d{i % 3}/o{i:02d}.txt": rng.randbytes(rng.randint(0, 5000)) for i in range(24)}
    objs["drop.bin"] = rng.randbytes(3000)
    for key, data in objs.items():
        client.put_object(Bucket=src_b, Key=key, Body=data, ContentType="text/x-small",
                          Metadata={"n": str(len(data))})
    client.put_object(Bucket=src_b, Key="never.bin", Body=b"never")
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    handler = type("Throttled", (_Throttling,), {"upstream": port, "seen": set()})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    cli = CLI(mcli.repo, env={**mcli.env,
                              "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_address[1]}"})
    try:
        doc = _run(cli, f"s3://{src_b}", f"s3://{dst_b}/m", "--no-server-side-copy",
                   "--transfers", "4", code=1)
    finally:
        proxy.shutdown()
    assert doc["counts"] == {"copied": len(objs), "failed": 1}
    (failed,) = [o for o in doc["objects"] if o["status"] == "failed"]
    assert failed["key"] == "never.bin"
    assert "SlowDown: Please reduce your request rate." in failed["reason"]
    assert "\n" not in failed["reason"]
    assert _bucket(s3_server, dst_b, "m/") == objs
    for key, data in objs.items():
        head = client.head_object(Bucket=dst_b, Key=f"m/{key}")
        assert head["ContentType"] == "text/x-small" and head["Metadata"] == {"n": str(len(data))}
    # every object was refused (or dropped) once on each request, then taken
    assert {r.split(" ", 1)[0] for r in handler.seen} == {"GET", "PUT"}
    assert sum(r.startswith("PUT") for r in handler.seen) == len(objs)


def test_small_objects_go_to_workers_in_batches_large_ones_alone(tmp_path: Path) -> None:
    """Many small objects are handed to the workers in batches, a large one never shares
    a batch, and every object of a mixed copy still arrives whole."""
    from multibackup.backends.base import ObjectInfo
    from multibackup.backends.location import open_store, parse_location
    from multibackup.engine.migrate import MigrateOptions, Migrator, batch_size, batches
    from multibackup.engine.migrate_scratch import Task

    assert batch_size(10_000, 8) == 16 and batch_size(100, 8) == 1 and batch_size(0, 4) == 1
    tasks = [Task(ObjectInfo(f"k{i}", 10_000 if i in (3, 4) else 10), None, "copy", "")
             for i in range(9)]
    got = [[t.src.key for t in b] for b in batches(tasks, 2, small=100)]
    assert got == [["k0", "k1"], ["k3"], ["k4"], ["k2", "k5"], ["k6", "k7"], ["k8"]]

    src = open_store(parse_location(str(tmp_path / "src")))
    objects = {f"d{i % 7}/small-{i}": os.urandom(i % 300) for i in range(700)}
    objects.update({f"big-{i}": os.urandom(300_000) for i in range(3)})
    for key, data in objects.items():
        src.put(key, data)
    dst_dir = tmp_path / "dst"
    report = Migrator(src, open_store(parse_location(str(dst_dir))),
                      MigrateOptions(transfers=3, chunk_size=64 * 1024)).run()
    assert report.ok and report.counts() == {"copied": len(objects)}
    assert {str(p.relative_to(dst_dir)): p.read_bytes()
            for p in dst_dir.rglob("*") if p.is_file()} == objects


class _Store:
    """A store seen through: every attribute is the wrapped store's."""

    def __init__(self, store: object) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def _small_tree(tmp_path: Path, count: int) -> tuple[object, dict[str, bytes]]:
    from multibackup.backends.location import open_store, parse_location

    src = open_store(parse_location(str(tmp_path / "src")))
    objects = {f"o{i:03d}": os.urandom(50 + i) for i in range(count)}
    for key, data in objects.items():
        src.put(key, data)
    return src, objects


def test_copying_starts_while_the_source_is_still_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source's listing is compared a stored batch at a time: the first objects are
    copied while it still runs (here it waits for a copy halfway), and every object
    arrives once and whole. Meanwhile the progress bar says the totals still grow."""
    from multibackup.backends.location import open_store, parse_location
    from multibackup.cli.output import bar_words
    from multibackup.engine import migrate_scratch
    from multibackup.engine.migrate import MigrateOptions, Migrator
    from multibackup.engine.progress import Progress

    monkeypatch.setattr(migrate_scratch, "_BATCH", 10)
    src, objects = _small_tree(tmp_path, 60)
    copied = threading.Event()
    seen: dict[str, bool] = {}

    class Pausing(_Store):
        def list(self) -> object:
            for n, info in enumerate(self._store.list()):
                if n == 30:  # three batches stored: has any object been copied yet?
                    seen["copied before the listing ended"] = copied.wait(10)
                    seen["bar"] = bar_words(progress, unit_bytes=True)
                yield info

    class Watched(_Store):
        writes: list[str] = []

        def put(self, key: str, data: bytes, *args: object, **kwargs: object) -> None:
            self._store.put(key, data, *args, **kwargs)
            self.writes.append(key)
            copied.set()

    dst_dir = tmp_path / "dst"
    dst = Watched(open_store(parse_location(str(dst_dir))))
    progress = Progress()
    report = Migrator(Pausing(src), dst, MigrateOptions(transfers=2), progress=progress).run()
    assert seen["copied before the listing ended"]
    assert seen["bar"].endswith(" files, still listing") and seen["bar"] != "0 files, still listing"
    assert bar_words(progress, unit_bytes=True) == "60 files" and not progress.counting
    assert progress.total_items == progress.done_items == 60
    assert report.ok and report.counts() == {"copied": 60}
    assert sorted(dst.writes) == sorted(objects)  # each once
    assert {p.name: p.read_bytes() for p in dst_dir.iterdir() if p.is_file()} == objects


def test_a_source_listing_that_fails_midway_deletes_nothing_and_keeps_what_was_verified(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies begin before the source is fully listed, so a listing that breaks off can
    follow some of them: the run ends with the listing's error, a sync deletes nothing
    (the unlisted rest would look extraneous), and the journal keeps every object
    verified before the break, which the next run skips."""
    from multibackup.backends.location import open_store, parse_location
    from multibackup.engine import migrate_scratch
    from multibackup.engine.journal import Journal
    from multibackup.engine.migrate import MigrateOptions, Migrator
    from multibackup.engine.progress import Progress
    from multibackup.errors import StoreError

    monkeypatch.setattr(migrate_scratch, "_BATCH", 10)
    src, objects = _small_tree(tmp_path, 60)
    dst_dir = tmp_path / "dst"
    dst_dir.mkdir()
    (dst_dir / "o059").write_bytes(b"an older copy of an object listed last")
    (dst_dir / "zz-extra").write_bytes(b"not at the source")

    listed: list[str] = []

    class Breaking(_Store):
        def list(self) -> object:
            for n, info in enumerate(self._store.list()):
                if n == 45:
                    raise StoreError("listing the source: connection reset")
                listed.append(info.key)
                yield info

    journal_path = str(tmp_path / "journal.sqlite")
    options = MigrateOptions(transfers=2, mode="sync", delete=True)
    dst = open_store(parse_location(str(dst_dir)))
    progress = Progress()
    with Journal("src", "dst", journal_path) as journal, \
            pytest.raises(StoreError, match="connection reset"):
        Migrator(Breaking(src), dst, options, journal=journal, progress=progress).run()
    assert not progress.counting
    assert (dst_dir / "zz-extra").read_bytes() == b"not at the source"
    with Journal("src", "dst", journal_path) as journal:
        verified = set(journal.verified())
    assert verified and verified <= set(listed)
    for key in objects:  # a folder lists in no set order: which were copied varies
        copy = dst_dir / key
        if key in verified:
            assert copy.read_bytes() == objects[key]
        elif key == "o059":
            assert copy.read_bytes().startswith(b"an older copy")
        else:
            assert not copy.exists()

    with Journal("src", "dst", journal_path) as journal:
        report = Migrator(src, dst, options, journal=journal).run()
    results = {r.key: (r.status, r.reason) for r in report.results}
    assert {k for k, (s, why) in results.items() if s == "skipped"} == verified
    assert all(why == "verified earlier (journal)"
               for s, why in results.values() if s == "skipped")
    assert results["zz-extra"][0] == "deleted" and report.ok
    assert {p.name: p.read_bytes() for p in dst_dir.iterdir() if p.is_file()} == objects


def test_a_listing_stopped_midway_ends_in_its_own_thread(s3_server: S3Server,
                                                         tmp_path: Path) -> None:
    """The destination's listing fails while the source's, through OpenDAL, is halfway:
    the run ends with the destination's error, and the source's lister is ended in the
    thread that listed (an OpenDAL lister dropped on another thread, as when a Future
    keeps the error's traceback, aborts the whole process)."""
    import subprocess
    import sys

    bucket = s3_server.new_bucket()
    _fill(s3_server, bucket, {f"k{i}": b"x" * i for i in range(5)}, prefix="")
    script = f"""
import gc, threading, time
from multibackup.backends.location import open_store, parse_location
from multibackup.engine.migrate import MigrateOptions, Migrator
from multibackup.errors import StoreError

src = open_store(parse_location("s3://{bucket}"))
dst = open_store(parse_location({str(tmp_path / "dst")!r}))
failed = threading.Event()

class Source:
    def __getattr__(self, name):
        return getattr(src, name)

    def list(self):
        for n, info in enumerate(src.list()):
            if n == 1:  # the plan has stopped by now: the listing is told at this item
                failed.wait(10)
                time.sleep(0.5)
            yield info

class Destination:
    def __getattr__(self, name):
        return getattr(dst, name)

    def list(self):
        failed.set()
        raise StoreError("the destination cannot be listed")
        yield

try:
    Migrator(Source(), Destination(), MigrateOptions()).run()
except StoreError as exc:
    print("stopped:", exc)
gc.collect()
print("ended")
"""
    r = subprocess.run([sys.executable, "-c", script], env={**os.environ, **s3_server.env()},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["stopped: the destination cannot be listed", "ended"]
    assert "unsendable" not in r.stderr
