"""Migrations to and from FTP and FTPS (pyftpdlib on loopback): copy, verify, rerun,
sync with deletes, check, ranged reads of large files, servers without MLSD, and a
temporary file left by a killed upload that must never count as an object."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI, S3Server
from servers_ftp import FTP_PASSWORD, FTPServer, start_ftp_server

BIG = 20 * 1024 * 1024 + 4321  # three 8 MiB ranges


@pytest.fixture(scope="module")
def ftpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    server = start_ftp_server(tmp_path_factory.mktemp("ftpd"))
    yield server
    server.stop()


# names of 255 bytes, the most a file name may have (the second in two-byte characters):
# their temporary names while being written must fit too
LONG_SMALL = "site/" + "é" * 125 + "-.txt"
LONG_BIG = "media/" + "v" * 251 + ".bin"


def _objects() -> dict[str, bytes]:
    return {"site/index.html": b"<h1>home</h1>\n" * 50, "site/css/a.css": b"a{}\n" * 10,
            "empty.txt": b"", "media/big.bin": os.urandom(BIG),
            LONG_SMALL: b"a long name\n", LONG_BIG: os.urandom(BIG // 2)}


def _run(cli: CLI, *args: str, code: int = 0) -> dict:
    r = cli("migrate", *args, "--json", ok=False)
    assert r.code == code, (r.code, r.err, r.out[-2000:])
    assert FTP_PASSWORD not in r.out + r.err
    return json.loads(r.out)


def _status(doc: dict, status: str) -> set[str]:
    return {o["key"] for o in doc["objects"] if o["status"] == status}


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("kind", ["mlsd", "list", "ftps"])
def test_s3_to_ftp_and_back(kind: str, ftpd: FTPServer, s3_server: S3Server,
                            tmp_path: Path) -> None:
    """To FTP (with MLSD; with LIST only, as vsftpd; over TLS) and back."""
    server = (ftpd if kind == "mlsd" else
              start_ftp_server(tmp_path / "ftpd", mlsd=False) if kind == "list" else
              start_ftp_server(tmp_path / "ftpd", scheme="ftps"))
    try:
        objs = _objects()
        bucket = s3_server.new_bucket()
        client = s3_server.client()
        for key, data in objs.items():
            client.put_object(Bucket=bucket, Key=f"data/{key}", Body=data)
        name = f"mig-{uuid.uuid4().hex[:8]}"
        env = {**s3_server.env(), **server.env(), "MULTIBACKUP_STATE_DIR": str(tmp_path / "state"),
               "MULTIBACKUP_FTP_PASSWORD": FTP_PASSWORD, "MULTIBACKUP_SOURCE_PASSWORD": ""}
        cli = CLI(str(tmp_path / "unused"), env=env)
        ftp_url = server.url(name)

        doc = _run(cli, f"s3://{bucket}/data", ftp_url)
        assert _status(doc, "copied") == set(objs)
        # verified by reading back (FTP names no checksum): every byte read twice
        assert doc["bytes_read"] == 2 * sum(map(len, objs.values()))
        want = {k: hashlib.md5(v).hexdigest() for k, v in objs.items()}
        assert _tree(server.root / name) == want
        assert _run(cli, f"s3://{bucket}/data", ftp_url)["counts"] == {"skipped": len(objs)}
        # a copy rewritten by hand at the FTP side, same size, a later time: copied again
        hand = server.root / name / "site" / "index.html"
        hand.write_bytes(bytes(reversed(objs["site/index.html"])))
        os.utime(hand, (hand.stat().st_mtime + 60, hand.stat().st_mtime + 60))
        doc = _run(cli, f"s3://{bucket}/data", ftp_url)
        assert _status(doc, "copied") == {"site/index.html"}
        assert hand.read_bytes() == objs["site/index.html"]

        # a killed upload's temporary file is no object: never copied, compared or deleted
        leftover = server.root / name / "site" / ".index.html.tmp-0123456789ab"
        leftover.write_bytes(b"half")
        back = s3_server.new_bucket()
        doc = _run(cli, ftp_url, f"s3://{back}/copy")
        assert _status(doc, "copied") == set(objs)  # large ones in ranged reads (REST)
        for key, data in objs.items():
            assert client.get_object(Bucket=back, Key=f"copy/{key}")["Body"].read() == data

        # sync: an object gone from the source is deleted at the FTP side, within the limit
        client.delete_object(Bucket=bucket, Key="data/site/css/a.css")
        (server.root / name / "stray.txt").write_bytes(b"not at the source")
        doc = _run(cli, f"s3://{bucket}/data", ftp_url, "--mode", "check", code=1)
        assert _status(doc, "extraneous") == {"site/css/a.css", "stray.txt"}
        doc = _run(cli, f"s3://{bucket}/data", ftp_url, "--mode", "sync", "--delete")
        assert _status(doc, "deleted") == {"site/css/a.css", "stray.txt"}
        assert not (server.root / name / "stray.txt").exists()
        assert leftover.exists()
        # a sync into the folder above the FTP source (or the same, spelt otherwise) is
        # refused before anything is deleted
        inner = server.url(f"{name}/site")
        for dst_arg in (ftp_url, server.url(f"{name}//site/../")):
            r = cli("migrate", inner, dst_arg, "--mode", "sync", "--delete", ok=False)
            assert r.code == 2 and "lies within" in r.err and FTP_PASSWORD not in r.err
        del want["site/css/a.css"]
        assert {k: v for k, v in _tree(server.root / name).items()
                if not k.endswith("tmp-0123456789ab")} == want
    finally:
        if server is not ftpd:
            server.stop()


def test_ftp_errors_are_one_line(ftpd: FTPServer, tmp_path: Path) -> None:
    env = {"MULTIBACKUP_STATE_DIR": str(tmp_path / "state"),
           "MULTIBACKUP_FTP_PASSWORD": "wrong-password-61"}
    cli = CLI(str(tmp_path / "unused"), env=env)
    r = cli("migrate", ftpd.url("x"), str(tmp_path / "dst"), ok=False)
    lines = r.err.strip().splitlines()
    assert r.code != 0 and len(lines) == 1 and lines[0].startswith("error:")
    assert "wrong-password-61" not in r.err + r.out and FTP_PASSWORD not in r.err
    # a password in the URL is refused, as for every other scheme, and not echoed
    in_url = ftpd.url("x").replace("@", ":in-url-secret-63@", 1)
    r = cli("migrate", in_url, str(tmp_path / "dst"), ok=False)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "password in the URL" in r.err and "in-url-secret-63" not in r.err + r.out
    # the password of backup sources is not sent to a migration's FTP server
    r = cli("migrate", ftpd.url("x"), str(tmp_path / "dst"), ok=False,
            env={"MULTIBACKUP_FTP_PASSWORD": "", "MULTIBACKUP_SOURCE_PASSWORD": FTP_PASSWORD})
    assert r.code != 0 and "login refused" in r.err, r.err
    assert "MULTIBACKUP_SRC_FTP_PASSWORD" in r.err and FTP_PASSWORD not in r.err
    # and with the right one, FTP to a local folder
    (ftpd.root / "vanish").mkdir(exist_ok=True)
    (ftpd.root / "vanish" / "a.txt").write_bytes(b"a")
    cli.env["MULTIBACKUP_FTP_PASSWORD"] = FTP_PASSWORD
    doc = _run(cli, ftpd.url("vanish"), str(tmp_path / "dst"))
    assert _status(doc, "copied") == {"a.txt"}
    assert (tmp_path / "dst" / "a.txt").read_bytes() == b"a"


def test_saved_migrations_name_ftp_sources(ftpd: FTPServer, s3_server: S3Server,
                                           tmp_path: Path) -> None:
    """A [migrations.NAME] entry may start or end at an FTP [sources.NAME] entry, whose
    password comes from the config's reference only."""
    name = f"saved-{uuid.uuid4().hex[:8]}"
    site = ftpd.root / name
    (site / "css").mkdir(parents=True)
    objs = {"index.html": b"<p>hi</p>\n" * 30, "css/a.css": b"a{}\n", "big.bin": os.urandom(BIG)}
    for key, data in objs.items():
        (site / key).write_bytes(data)
    bucket = s3_server.new_bucket()
    config = tmp_path / "config.toml"
    config.write_text(f"""
[sources.oldhost]
url = "{ftpd.url(name)}"
password = {{ env = "OLDHOST_PASSWORD" }}

[sources.newhost]
url = "{ftpd.url(name + '-copy')}"
password = {{ env = "OLDHOST_PASSWORD" }}

[destinations.cloud]
location = "s3://{bucket}/site"
endpoint = "{s3_server.endpoint}"

[migrations.leave-oldhost]
source = "oldhost"
destination = "cloud"

[migrations.back-to-ftp]
source = "cloud"
destination = "newhost"
mode = "sync"
delete = true
""")
    # the environment's FTP passwords are wrong: only the config's reference is used
    env = {**s3_server.env(), "MULTIBACKUP_STATE_DIR": str(tmp_path / "state"),
           "MULTIBACKUP_FTP_PASSWORD": "wrong", "MULTIBACKUP_SOURCE_PASSWORD": "wrong",
           "OLDHOST_PASSWORD": FTP_PASSWORD}
    cli = CLI(str(tmp_path / "unused"), env=env)
    doc = _run(cli, "--config", str(config), "leave-oldhost")
    assert _status(doc, "copied") == set(objs)
    client = s3_server.client()
    for key, data in objs.items():
        assert client.get_object(Bucket=bucket, Key=f"site/{key}")["Body"].read() == data

    doc = _run(cli, "--config", str(config), "back-to-ftp")
    assert _status(doc, "copied") == set(objs)
    want = {k: hashlib.md5(v).hexdigest() for k, v in objs.items()}
    assert _tree(ftpd.root / (name + "-copy")) == want
    (ftpd.root / (name + "-copy") / "stray.txt").write_bytes(b"x")
    doc = _run(cli, "--config", str(config), "back-to-ftp")
    assert doc["counts"] == {"skipped": len(objs), "deleted": 1}
    assert _tree(ftpd.root / (name + "-copy")) == want

    cli.env["OLDHOST_PASSWORD"] = "wrong-password-62"
    r = cli("migrate", "--config", str(config), "leave-oldhost", ok=False)
    assert r.code != 0 and len(r.err.strip().splitlines()) == 1
    assert "wrong-password-62" not in r.err + r.out


def test_a_saved_migration_takes_only_ftp_sources(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[sources.shell]
url = "sftp://web@example.test/var/www"

[destinations.disk]
location = "{tmp_path / 'disk'}"

[migrations.m]
source = "shell"
destination = "disk"
""")
    cli = CLI(str(tmp_path / "unused"), env={"MULTIBACKUP_STATE_DIR": str(tmp_path / "s")})
    r = cli("migrate", "--config", str(config), "m", ok=False)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "config.toml:9: migrations.m.source: 'shell' is a sftp:// source" in r.err, r.err
    config.write_text(config.read_text().replace('source = "shell"', 'source = "shel"'))
    r = cli("migrate", "--config", str(config), "m", ok=False)
    assert r.code == 2 and "unknown destination 'shel'" in r.err
