"""Remote file trees as sources and restore targets: SFTP (OpenSSH) and FTP/FTPS (pyftpdlib).

Everything goes through the real ``multibackup`` program against real servers on
loopback: back up a remote tree, restore it to local disk and back to the server, back up
again to see that unchanged files are not read, and the failures a user meets (wrong
password, unknown host key, server down, a file the server will not hand out).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI, _free_port
from servers_ftp import FTP_PASSWORD, FTPServer, start_ftp_server
from servers_sftp import SFTPServer, start_sftp_server

from multibackup.errors import MultibackupError, SourceError, SourceUnavailable
from multibackup.sources.base import TreeSource
from multibackup.sources.url import open_source

BASE_TIME = 1_700_000_000  # whole seconds: SFTP and FTP carry no finer times
UNICODE_DIR = "Ünïcode dir"
UNICODE_FILE = "café ü–ß 日本.txt"
BIG = 3 * 1024 * 1024 + 12345


def make_remote_tree(root: Path, symlink: bool = True) -> Path:
    """Nested directories, an empty file, a ~3 MiB file, a non-ASCII name, modes, a link."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / UNICODE_DIR).mkdir()
    files = {
        "index.html": b"<h1>home</h1>\n" * 200,
        "empty.txt": b"",
        "big.bin": os.urandom(BIG),
        "a/b/c/deep.txt": b"deep down\n",
        "a/script.sh": b"#!/bin/sh\necho hi\n",
        f"{UNICODE_DIR}/{UNICODE_FILE}": "naïve façade\n".encode(),
    }
    modes = {"a/script.sh": 0o750, "index.html": 0o640, "a/b/c/deep.txt": 0o600}
    for i, (rel, data) in enumerate(sorted(files.items())):
        p = root / rel
        p.write_bytes(data)
        os.chmod(p, modes.get(rel, 0o644))
        os.utime(p, (BASE_TIME + i, BASE_TIME + 100 * i))
    if symlink:
        os.symlink("a/b/c/deep.txt", root / "link-to-deep")
    return root


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """What a restore must reproduce: kinds, bytes, file modes, mtimes (s), link targets."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), int(st.st_mtime), digest)
    return out


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- SFTP -----------------------------------------------------------------------------------


def _sftp_url(server: SFTPServer, path: Path, user: str | None = None) -> str:
    return f"sftp://{user or server.user}@{server.host}:{server.port}{path}"


def test_sftp_backup_restore_and_incremental(sftp_server: SFTPServer, cli: CLI,
                                             tmp_path: Path) -> None:
    src = make_remote_tree(sftp_server.root / f"site-{uuid.uuid4().hex[:8]}")
    url = _sftp_url(sftp_server, src)
    cli.env.update(sftp_server.env())
    cli("init")
    first = cli("backup", url, "--json").json()
    assert first["files_new"] == 6 and first["errors"] == []
    assert first["bytes_read"] == first["total_bytes"] > BIG
    assert cli("snapshots", "--json").json()[0]["paths"] == [url]

    cli("restore", "latest", "--target", str(tmp_path / "local"))
    assert tree_state(tmp_path / "local") == tree_state(src)

    second = cli("backup", url, "--json").json()
    assert second["parent"] == first["snapshot_id"]
    assert second["files_unchanged"] == 6 and second["bytes_read"] == 0
    assert second["data_blobs"] == 0

    (src / "a/b/c/deep.txt").write_bytes(b"changed, and longer\n")
    os.utime(src / "a/b/c/deep.txt", (BASE_TIME, BASE_TIME + 5000))
    third = cli("backup", url, "--json").json()
    assert (third["files_changed"], third["files_new"], third["files_unchanged"]) == (1, 0, 5)
    assert third["bytes_read"] == len(b"changed, and longer\n")

    # back onto the server, into a directory that does not exist yet
    back = sftp_server.root / f"restored-{uuid.uuid4().hex[:8]}" / "www"
    r = cli("restore", "latest", "--target", _sftp_url(sftp_server, back))
    assert "6 files" in r.out and "1 symlinks" in r.out
    assert tree_state(back) == tree_state(src)
    assert not [p for p in back.rglob("*.tmp-*")]

    # a second restore into the same place replaces nothing
    (back / "index.html").write_bytes(b"edited on the server\n")
    r = cli("restore", "latest", "--target", _sftp_url(sftp_server, back), ok=False)
    assert r.code == 1
    assert "index.html: exists on the server; not replaced" in r.err
    assert (back / "index.html").read_bytes() == b"edited on the server\n"


def test_sftp_restore_refuses_to_follow_a_link_on_the_server(sftp_server: SFTPServer, cli: CLI,
                                                            tmp_path: Path) -> None:
    src = sftp_server.root / f"small-{uuid.uuid4().hex[:8]}"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.txt").write_text("x")
    cli.env.update(sftp_server.env())
    cli("init")
    cli("backup", _sftp_url(sftp_server, src))
    back = sftp_server.root / f"linked-{uuid.uuid4().hex[:8]}"
    back.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, back / "a")  # planted: "a" leads out of the target directory
    r = cli("restore", "latest", "--target", _sftp_url(sftp_server, back), ok=False)
    assert r.code == 1 and "a is a symbolic link on the server" in r.err
    assert list(outside.iterdir()) == []


def test_sftp_wrong_password_is_one_line_and_secret(sftp_server: SFTPServer, cli: CLI) -> None:
    secret = "sftp-pass-Zx81-do-not-leak"
    cli("init")
    r = cli("backup", _sftp_url(sftp_server, sftp_server.root), ok=False,
            env={"MULTIBACKUP_SOURCE_PASSWORD": secret,
                 "MULTIBACKUP_SFTP_KNOWN_HOSTS": sftp_server.known_hosts})
    assert r.code == 1
    line = _one_line_error(r.err)
    assert "authentication failed" in line and "password" in line
    assert secret not in r.out + r.err
    assert cli("snapshots", "--json").json() == []


def test_sftp_unknown_host_key(sftp_server: SFTPServer, cli: CLI, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    env = {"MULTIBACKUP_SFTP_KEY_FILE": sftp_server.key_file,
           "MULTIBACKUP_SFTP_KNOWN_HOSTS": str(known)}
    url = _sftp_url(sftp_server, sftp_server.root)
    cli("init")
    r = cli("backup", url, ok=False, env=env)
    assert r.code == 1
    line = _one_line_error(r.err)
    assert "unknown host" in line and "ssh-keyscan" in line
    assert cli("snapshots", "--json").json() == []
    # accept-new learns the key once, as ssh does; strict then accepts it
    src = make_remote_tree(sftp_server.root / f"hk-{uuid.uuid4().hex[:8]}", symlink=False)
    url = _sftp_url(sftp_server, src)
    cli("backup", url, env={**env, "MULTIBACKUP_SFTP_HOST_KEY_POLICY": "accept-new"})
    assert f"[{sftp_server.host}]:{sftp_server.port}" in known.read_text()
    cli("backup", url, env=env)


def test_sftp_server_down(cli: CLI) -> None:
    cli("init")
    r = cli("backup", f"sftp://someone@127.0.0.1:{_free_port()}/srv/www", ok=False)
    assert r.code == 1
    assert "cannot reach the server" in _one_line_error(r.err)
    assert cli("snapshots", "--json").json() == []


def test_sftp_missing_path(sftp_server: SFTPServer, cli: CLI) -> None:
    cli.env.update(sftp_server.env())
    cli("init")
    r = cli("backup", _sftp_url(sftp_server, sftp_server.root / "no-such-dir"), ok=False)
    assert r.code == 1
    assert "no such file or directory on the server" in _one_line_error(r.err)
    assert cli("snapshots", "--json").json() == []


def _read_all(source: TreeSource, name: str) -> bytes:
    entry = {e.name: e for e in source.list_dir("")}[name]
    out = bytearray()
    buf = bytearray(100_000)
    with source.open(name, entry) as stream:
        while n := stream.readinto(buf):
            out += buf[:n]
    return bytes(out)


def _changed_while_read(source: TreeSource, path: Path) -> None:
    """A file that changes between listing and reading is an error, not a silent mix."""
    path.write_bytes(b"x" * 5000)
    assert _read_all(source, path.name) == b"x" * 5000
    for size in (7000, 100):  # grew, then shrank after the listing
        entry = {e.name: e for e in source.list_dir("")}[path.name]
        path.write_bytes(b"y" * size)
        with pytest.raises(SourceError, match="changed while being read"), \
                source.open(path.name, entry) as stream:
            while stream.readinto(bytearray(4096)):
                pass


def test_sftp_file_changed_after_listing(sftp_server: SFTPServer) -> None:
    src = sftp_server.root / f"chg-{uuid.uuid4().hex[:8]}"
    src.mkdir()
    source = open_source(_sftp_url(sftp_server, src),
                         {"key_file": sftp_server.key_file, "known_hosts": sftp_server.known_hosts})
    try:
        assert source.complete_only is False and source.parallel == 4
        _changed_while_read(source, src / "f.bin")
    finally:
        source.close()


def _server_gone(source: TreeSource, stop: object) -> MultibackupError:
    """After the server stops for good, the run ends: SourceUnavailable, not a plain
    SourceError, which would only skip a directory (the request on the dropped connection
    itself may fail as one)."""
    source.list_dir("")
    stop()  # type: ignore[operator]
    for _ in range(3):
        try:
            source.list_dir("")
        except SourceUnavailable as exc:
            return exc
        except SourceError:
            continue
    raise AssertionError("a server that is gone did not end the run")


def test_sftp_server_gone_mid_run_ends_the_run(tmp_path: Path) -> None:
    server = start_sftp_server(tmp_path)
    try:
        source = open_source(_sftp_url(server, server.root),
                             {"key_file": server.key_file, "known_hosts": server.known_hosts})
        error = _server_gone(source, server.stop)
        assert "cannot reach the server" in str(error)
        source.close()
    finally:
        server.stop()


@pytest.fixture
def sftp_limited(sftp_server: SFTPServer) -> Iterator[tuple[SFTPServer, str]]:
    """An SFTP login that file permissions apply to (root reads a mode-000 file anyway).

    As root, a second sshd whose tree lives outside pytest's private temp directory lets
    ``nobody`` log in; otherwise the session's server and the current user do.
    """
    if os.geteuid() != 0:
        yield sftp_server, sftp_server.user
        return
    work = Path(tempfile.mkdtemp(prefix="mb-sshd-"))
    os.chmod(work, 0o755)
    server = start_sftp_server(work)
    try:
        os.chmod(server.root, 0o755)
        (work / "authorized_keys" / "nobody").write_text((work / "client_ed25519.pub").read_text())
        yield server, "nobody"
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_sftp_unreadable_file_is_skipped_and_named(sftp_limited: tuple[SFTPServer, str],
                                                  cli: CLI, tmp_path: Path) -> None:
    server, user = sftp_limited
    src = server.root / f"perm-{uuid.uuid4().hex[:8]}"
    (src / "sub").mkdir(parents=True)
    (src / "ok.txt").write_text("readable\n")
    (src / "sub" / "secret.txt").write_text("no one may read this\n")
    os.chmod(src / "sub" / "secret.txt", 0)
    os.chmod(src, 0o755)
    os.chmod(src / "sub", 0o755)
    cli.env.update(server.env())
    cli("init")
    r = cli("backup", _sftp_url(server, src, user), ok=False)
    assert r.code == 3, r.err
    assert "sub/secret.txt: permission denied on the server" in r.err
    cli("restore", "latest", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "ok.txt").read_text() == "readable\n"
    assert (tmp_path / "out" / "sub").is_dir() and not (tmp_path / "out" / "sub" / "secret.txt").exists()


# ---- FTP / FTPS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ftpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    server = start_ftp_server(tmp_path_factory.mktemp("ftpd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ftpsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    server = start_ftp_server(tmp_path_factory.mktemp("ftpsd"), scheme="ftps")
    yield server
    server.stop()


def _ftp_round_trip(server: FTPServer, cli: CLI, tmp_path: Path) -> None:
    name = f"site-{uuid.uuid4().hex[:8]}"
    src = make_remote_tree(server.root / name, symlink=False)
    url = server.url(name)
    cli.env.update(server.env())
    cli("init")
    first = cli("backup", url, "--json").json()
    assert first["files_new"] == 6 and first["errors"] == []
    assert first["bytes_read"] == first["total_bytes"] > BIG

    cli("restore", "latest", "--target", str(tmp_path / "local"))
    assert tree_state(tmp_path / "local") == tree_state(src)

    second = cli("backup", url, "--json").json()
    assert second["files_unchanged"] == 6 and second["bytes_read"] == 0
    (src / "index.html").write_bytes(b"<h1>new home</h1>\n")
    os.utime(src / "index.html", (BASE_TIME, BASE_TIME + 7000))
    third = cli("backup", url, "--json").json()
    assert (third["files_changed"], third["files_unchanged"]) == (1, 5)
    assert third["bytes_read"] == len(b"<h1>new home</h1>\n")

    back = f"restored-{uuid.uuid4().hex[:8]}/www"
    r = cli("restore", "latest", "--target", server.url(back))
    assert "6 files" in r.out
    assert tree_state(server.root / back) == tree_state(src)
    r = cli("restore", "latest", "--target", server.url(back), ok=False)
    assert r.code == 1 and "exists on the server; not replaced" in r.err


def test_ftp_backup_restore_and_incremental(ftpd: FTPServer, cli: CLI,
                                            tmp_path: Path) -> None:
    _ftp_round_trip(ftpd, cli, tmp_path)


def test_ftps_backup_restore_and_incremental(ftpsd: FTPServer, cli: CLI,
                                             tmp_path: Path) -> None:
    _ftp_round_trip(ftpsd, cli, tmp_path)


def test_ftps_untrusted_certificate(ftpsd: FTPServer, cli: CLI) -> None:
    cli("init")
    r = cli("backup", ftpsd.url("/"), ok=False,
            env={"MULTIBACKUP_SOURCE_PASSWORD": FTP_PASSWORD})
    assert r.code == 1
    line = _one_line_error(r.err)
    assert "certificate is not trusted" in line and "MULTIBACKUP_FTPS_CA_FILE" in line
    assert FTP_PASSWORD not in r.out + r.err


def test_ftp_without_mlsd_lists_with_list(cli: CLI, tmp_path: Path) -> None:
    server = start_ftp_server(tmp_path / "ftpd", mlsd=False)
    try:
        src = make_remote_tree(server.root / "site", symlink=False)
        cli.env.update(server.env())
        cli("init")
        first = cli("backup", server.url("site"), "--json").json()
        assert first["files_new"] == 6 and first["errors"] == []
        cli("restore", "latest", "--target", str(tmp_path / "local"))
        assert tree_state(tmp_path / "local") == tree_state(src)
        second = cli("backup", server.url("site"), "--json").json()
        assert second["files_unchanged"] == 6 and second["bytes_read"] == 0
    finally:
        server.stop()


def test_ftp_anonymous_login(ftpd: FTPServer, cli: CLI, tmp_path: Path) -> None:
    (ftpd.anon_root / "pub").mkdir(exist_ok=True)
    (ftpd.anon_root / "pub" / "readme.txt").write_text("public\n")
    cli("init")
    cli("backup", ftpd.url("/pub", user=None))
    cli("restore", "latest", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "readme.txt").read_text() == "public\n"


def test_ftp_wrong_password_is_one_line_and_secret(ftpd: FTPServer, cli: CLI) -> None:
    secret = "wrong-ftp-pass-Qv2-do-not-leak"
    cli("init")
    r = cli("backup", ftpd.url("/"), ok=False,
            env={"MULTIBACKUP_SOURCE_PASSWORD": secret})
    assert r.code == 1
    line = _one_line_error(r.err)
    assert "login refused" in line and "mbuser" in line
    assert secret not in r.out + r.err
    assert cli("snapshots", "--json").json() == []
    # the restore target checks the login before the repository is opened
    r = cli("restore", "latest", "--target", ftpd.url("/x"), ok=False,
            env={"MULTIBACKUP_SOURCE_PASSWORD": secret})
    assert r.code == 1 and "login refused" in _one_line_error(r.err)


def test_ftp_server_down(cli: CLI) -> None:
    cli("init")
    r = cli("backup", f"ftp://u@127.0.0.1:{_free_port()}/x", ok=False,
            env={"MULTIBACKUP_SOURCE_PASSWORD": "pw"})
    assert r.code == 1
    assert "cannot reach the server" in _one_line_error(r.err)
    assert cli("snapshots", "--json").json() == []


def test_ftp_file_changed_after_listing(ftpd: FTPServer) -> None:
    (ftpd.root / "chg").mkdir()
    source = open_source(ftpd.url("chg"), {"password": FTP_PASSWORD})
    try:
        _changed_while_read(source, ftpd.root / "chg" / "f.bin")
    finally:
        source.close()


def test_ftp_server_gone_mid_run_ends_the_run(tmp_path: Path) -> None:
    server = start_ftp_server(tmp_path)
    try:
        source = open_source(server.url("/"), {"password": FTP_PASSWORD})
        error = _server_gone(source, server.stop)
        assert "cannot reach the server" in str(error)
        source.close()
    finally:
        server.stop()


def test_ftp_link_loop_is_skipped(ftpd: FTPServer, cli: CLI, tmp_path: Path) -> None:
    """pyftpdlib lists a link to a directory as that directory: a link back up would
    recurse for ever, so it is named as an error and the rest is saved."""
    src = ftpd.root / f"loop-{uuid.uuid4().hex[:8]}"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("f\n")
    os.symlink("..", src / "sub" / "up")
    cli.env.update(ftpd.env())
    cli("init")
    r = cli("backup", ftpd.url(src.name), ok=False)
    assert r.code == 3 and "sub/up: this directory is one of its own parents" in r.err
    cli("restore", "latest", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "f.txt").read_text() == "f\n"
