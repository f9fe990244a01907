"""Redis as a backup source: the RDB snapshot through ``redis-cli --rdb -``, restored and
loaded by a second, fresh redis-server."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI, _free_port
from servers_redis import REDIS_PASSWORD, RedisServer, serve_redis, start_redis, wait_loaded

from multibackup.errors import SourceError, UsageError
from multibackup.sources import redis as redis_source
from multibackup.sources.url import open_source, open_target

FAR_FUTURE = 4102444800  # 2100-01-01: a fixed expiry, so digests compare across servers


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from serve_redis(tmp_path_factory)


def _resp(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
    return b"".join(parts)


def _load(server: RedisServer) -> dict[str, int]:
    """100,000+ keys of every common type in db 0, a few in db 1, in one --pipe."""
    rng = random.Random(5)
    cmds = [_resp("FLUSHALL"), _resp("SELECT", 0)]
    for i in range(40_000):
        cmds.append(_resp("SET", f"s:{i}", f"value-{i}-".encode() * (i % 7 + 1)
                          + rng.randbytes(i % 5)))
    for i in range(20_000):
        cmds.append(_resp("HSET", f"h:{i}", "a", i, "b", i * 2, "c", "text"))
        cmds.append(_resp("RPUSH", f"l:{i}", f"x{i}", "y", "z"))
        cmds.append(_resp("SADD", f"set:{i}", f"m{i}", "n", "o"))
    for i in range(2_000):
        cmds.append(_resp("ZADD", f"z:{i}", 1, "a", i, "b"))
    for i in range(100):
        cmds.append(_resp("EXPIREAT", f"s:{i}", FAR_FUTURE))
    cmds.append(_resp("SET", "big", rng.randbytes(3 * 1024 * 1024 + 7)))
    cmds.append(_resp("SELECT", 1))
    for i in range(1_000):
        cmds.append(_resp("SET", f"db1:{i}", i))
    out = server.cli("--pipe", stdin=b"".join(cmds))
    assert "errors: 0" in out, out
    sizes = {"db0": int(server.cli("DBSIZE", db=0)), "db1": int(server.cli("DBSIZE", db=1))}
    assert sizes == {"db0": 40_000 + 3 * 20_000 + 2_000 + 1, "db1": 1_000}
    return sizes


def _state(server: RedisServer) -> dict[str, object]:
    """What must survive a round trip: sizes, the whole-dataset digest, sample values."""
    return {"db0": int(server.cli("DBSIZE", db=0)), "db1": int(server.cli("DBSIZE", db=1)),
            "digest": server.cli("DEBUG", "DIGEST"),
            "string": server.cli("GET", "s:12345"),
            "hash": server.cli("HGETALL", "h:777"),
            "list": server.cli("LRANGE", "l:5", "0", "-1"),
            "set": sorted(server.cli("SMEMBERS", "set:9").split()),
            "zset": server.cli("ZRANGE", "z:3", "0", "-1", "WITHSCORES"),
            "ttl": int(server.cli("TTL", "s:7")) > 0,
            "big": server.cli("DEBUG", "DIGEST-VALUE", "big"),
            "db1 value": server.cli("GET", "db1:999", db=1)}


def _env(password: str | None = REDIS_PASSWORD) -> dict[str, str]:
    env = {"REDISCLI_AUTH": ""}  # never inherited from the test's own environment
    if password is not None:
        env["MULTIBACKUP_SOURCE_PASSWORD"] = password
    return env


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert REDIS_PASSWORD not in text


def test_rdb_round_trip_into_a_fresh_server(redis_server: RedisServer, cli: CLI,
                                            tmp_path: Path) -> None:
    _load(redis_server)
    expected = _state(redis_server)
    assert expected["ttl"] and expected["db1 value"] == "999"
    cli("init")
    snapshots = {}
    try:
        # diskless (the default): redis-cli copies the 40-byte end marker to stdout;
        # disk-based: the exact payload length. Both must give the same, whole RDB.
        for mode in ("yes", "no"):
            redis_server.cli("CONFIG", "SET", "repl-diskless-sync", mode)
            r = cli("backup", redis_server.url, "--json", env=_env())
            _no_secret(r.out, r.err)
            summary = r.json()
            assert summary["files_new"] + summary["files_changed"] == 1
            assert summary["errors"] == [] and summary["total_bytes"] > 3 * 1024 * 1024
            snapshots[mode] = summary
    finally:
        redis_server.cli("CONFIG", "SET", "repl-diskless-sync", "yes")
    assert snapshots["yes"]["total_bytes"] == snapshots["no"]["total_bytes"]
    listing = cli("ls", snapshots["no"]["snapshot_id"], "--json").json()
    assert listing["snapshot"]["paths"] == [redis_server.url]
    assert [n["path"] for n in listing["nodes"]] == ["/dump.rdb"]
    for mode, summary in snapshots.items():
        target = tmp_path / f"restored-{mode}"
        cli("restore", summary["snapshot_id"], "--target", str(target))
        rdb = (target / "dump.rdb").read_bytes()
        assert rdb[:5] == b"REDIS" and rdb[-9] == 0xFF
        fresh = start_redis(target, password=None)
        try:
            wait_loaded(fresh)
            assert _state(fresh) == expected
        finally:
            fresh.stop()


def _through_stream(script: str) -> bytes:
    """What the RDB reader makes of a real process's stdout, stderr and exit status."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL)
        try:
            return redis_source._RDBStream(proc, err, "redis://test:1").read()
        finally:
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def test_rdb_stream_checks(redis_server: RedisServer, tmp_path: Path) -> None:
    redis_server.cli("FLUSHALL")
    redis_server.cli("SET", "x", "y" * 5000)
    rdb = tmp_path / "real.rdb"
    redis_server.cli("--rdb", str(rdb))
    good = rdb.read_bytes()
    n = len(good)
    ok = "Transfer finished with success"
    # diskless: the 40-byte end marker follows the RDB on stdout and is dropped
    assert _through_stream(f"cat {rdb}; printf '%040d' 7; echo '{ok} after {n} bytes' >&2"
                           ) == good
    # disk-based: exactly the payload
    assert _through_stream(f"cat {rdb}; echo '{ok}.' >&2") == good
    with pytest.raises(SourceError, match="truncated"):
        _through_stream(f"head -c {n - 100} {rdb}; echo '{ok} after {n - 100} bytes' >&2")
    with pytest.raises(SourceError, match="reported"):
        _through_stream(f"head -c {n - 100} {rdb}; echo '{ok} after {n} bytes' >&2")
    with pytest.raises(SourceError, match="SYNC with master failed"):
        _through_stream(f"head -c 1000 {rdb}; echo 'SYNC with master failed: -ERR x' >&2; "
                        "exit 1")
    with pytest.raises(SourceError, match="did not report a finished transfer"):
        _through_stream(f"cat {rdb}")
    with pytest.raises(SourceError, match="not an RDB"):
        _through_stream(f"printf 'hello world, not redis'; echo '{ok}.' >&2")


def test_password_never_in_argv_only_in_the_environment() -> None:
    source = open_source("redis://backup@db.example:6380/0", {"password": REDIS_PASSWORD})
    assert isinstance(source, redis_source.RedisSource)
    argv = source.argv()
    assert REDIS_PASSWORD not in " ".join(argv)
    assert argv[-2:] == ["--rdb", "-"] and argv[5:7] == ["--user", "backup"]
    assert source.environment()["REDISCLI_AUTH"] == REDIS_PASSWORD
    assert source.describe() == "redis://backup@db.example:6380"  # no db number
    assert REDIS_PASSWORD not in repr(source)
    tls = open_source("rediss://cache.example", {"tls_ca_file": "/etc/ca.pem"})
    assert tls.argv() == ["redis-cli", "-h", "cache.example", "-p", "6379", "--tls", "--sni",
                          "cache.example", "--cacert", "/etc/ca.pem", "--rdb", "-"]


@pytest.mark.parametrize("url", ["redis://host/abc", "redis://host:99999", "redis://",
                                 "redis://host/0?x=1"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(UsageError):
        open_source(url)


def test_url_with_password_and_restore_target_refused(cli: CLI,
                                                       redis_server: RedisServer) -> None:
    cli("init")
    r = cli("backup", f"redis://u:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}", ok=False)
    assert r.code == 2 and "password" in r.err
    _no_secret(r.out, r.err)
    with pytest.raises(UsageError, match="cannot be a restore target"):
        open_target(redis_server.url)


def test_wrong_or_missing_password_fails_without_a_snapshot(redis_server: RedisServer,
                                                            cli: CLI) -> None:
    redis_server.cli("SET", "k", "v")
    cli("init")
    wrong = "wrong-redis-password-4411"
    r = cli("backup", redis_server.url, env=_env(wrong), ok=False)
    assert r.code != 0
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "authentication failed" in lines[0], r.err
    assert wrong not in r.out + r.err
    _no_secret(r.out, r.err)
    r = cli("backup", redis_server.url, env=_env(None), ok=False)
    assert r.code != 0 and "needs a password" in r.err and len(r.err.strip().splitlines()) == 1
    assert cli("snapshots", "--json").json() == []


def test_server_down_is_a_clear_error(cli: CLI) -> None:
    cli("init")
    port = _free_port()
    r = cli("backup", f"redis://127.0.0.1:{port}", env=_env(), ok=False)
    assert r.code != 0
    assert f"redis://127.0.0.1:{port}: cannot connect" in r.err
    assert len(r.err.strip().splitlines()) == 1
    _no_secret(r.out, r.err)
    assert cli("snapshots", "--json").json() == []


def test_acl_user(redis_server: RedisServer, cli: CLI, tmp_path: Path) -> None:
    redis_server.cli("FLUSHALL")
    redis_server.cli("SET", "acl", "ok")
    user_pw = "acl-user-secret-93b1"
    redis_server.cli("ACL", "SETUSER", "backup", "reset", "on", f">{user_pw}", "+sync",
                     "+replconf", "+ping")
    redis_server.cli("ACL", "SETUSER", "reader", "reset", "on", f">{user_pw}", "+get")
    cli("init")
    url = f"redis://backup@127.0.0.1:{redis_server.port}"
    r = cli("backup", url, "--json", env=_env(user_pw))
    assert r.json()["files_new"] == 1
    assert cli("snapshots", "--json").json()[0]["paths"] == [url]
    r = cli("backup", f"redis://reader@127.0.0.1:{redis_server.port}", env=_env(user_pw),
            ok=False)
    assert r.code != 0 and "SYNC/REPLCONF" in r.err, r.err
    assert user_pw not in r.out + r.err
    target = tmp_path / "acl"
    cli("restore", "latest", "--target", str(target))
    fresh = start_redis(target, password=None)
    try:
        wait_loaded(fresh)
        assert fresh.cli("GET", "acl") == "ok"
    finally:
        fresh.stop()


def _certificates(work: Path) -> tuple[Path, Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=multibackup test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (work / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return work / "ca.crt", work / "server.crt", work / "server.key"


def test_tls(cli: CLI, tmp_path: Path) -> None:
    work = tmp_path / "tls"
    work.mkdir()
    ca, cert, key = _certificates(work)
    server = start_redis(work / "data", tls=True, extra=(
        f"tls-cert-file {cert}", f"tls-key-file {key}", f"tls-ca-cert-file {ca}",
        "tls-auth-clients no"))
    try:
        cli("init")
        url = f"rediss://localhost:{server.port}"
        r = cli("backup", url, env=_env(), ok=False)  # the server's CA is not trusted
        assert r.code != 0 and "TLS failed" in r.err, r.err
        r = cli("backup", url, "--json",
                env={**_env(), "MULTIBACKUP_REDIS_TLS_CA_FILE": str(ca)})
        assert r.json()["files_new"] == 1
        target = tmp_path / "restored"
        cli("restore", "latest", "--target", str(target))
        assert json.loads(cli("snapshots", "--json").out)[0]["paths"] == [url]
        assert (target / "dump.rdb").read_bytes()[:5] == b"REDIS"
    finally:
        server.stop()
