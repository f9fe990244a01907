"""Fixtures for a real Redis server on loopback.

``redis-server`` runs in the foreground as the current user on a free high port of
127.0.0.1, with its own directory, a password (from a 0600 config file, so it is not in
the process list) and no automatic saves. ``start_redis`` also serves the restore tests:
a second server started on a restored ``dump.rdb``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import _free_port

REDIS_PASSWORD = "redis-secret-do-not-leak-7c2d"


def redis_binaries() -> tuple[str, str]:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        pytest.skip("redis-server / redis-cli are not installed (apt install redis-server)")
    return server, cli


@dataclass
class RedisServer:
    port: int
    password: str | None
    workdir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args: str, stdin: bytes | None = None, check: bool = True,
            db: int | None = None, timeout: float = 120) -> str:
        """Run redis-cli against this server; the password goes through the environment."""
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        argv = [redis_binaries()[1], "-h", "127.0.0.1", "-p", str(self.port)]
        if db is not None:
            argv += ["-n", str(db)]
        p = subprocess.run([*argv, *args], input=stdin, capture_output=True, env=env,
                           timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        if check and (p.returncode != 0 or out.startswith(("ERR", "WRONGPASS", "NOAUTH"))):
            raise AssertionError(f"redis-cli {' '.join(args)}: {out} {p.stderr!r}")
        return out.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(workdir: Path, password: str | None = REDIS_PASSWORD,
                extra: tuple[str, ...] = (), port: int | None = None,
                tls: bool = False) -> RedisServer:
    """A redis-server with its data in ``workdir`` (loading ``workdir/dump.rdb`` if there).

    ``extra`` lines go into its config file; with ``tls`` the port serves TLS only and
    ``extra`` must name the certificate files.
    """
    server_bin, _ = redis_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    lines = ["bind 127.0.0.1", f"port {0 if tls else port}", f"dir {workdir}",
             "dbfilename dump.rdb", 'save ""', "appendonly no", "daemonize no",
             f"logfile {workdir / 'redis.log'}", "repl-diskless-sync-delay 0",
             "enable-debug-command local"]
    if tls:
        lines.append(f"tls-port {port}")
    if password:
        lines.append(f"requirepass {password}")
    conf = workdir / "redis.conf"
    conf.write_text("\n".join([*lines, *extra]) + "\n")
    os.chmod(conf, 0o600)
    proc = subprocess.Popen([server_bin, str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=workdir)
    server = RedisServer(port, password, workdir, proc)
    if tls:
        return _wait_tls(server)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (workdir / "redis.log").read_text() if (workdir / "redis.log").exists() else ""
            raise RuntimeError(f"redis-server exited: {log[-2000:]}")
        if server.cli("PING", check=False) == "PONG":
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("redis-server did not become ready")


def _wait_tls(server: RedisServer) -> RedisServer:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError("redis-server (TLS) exited: "
                               + (server.workdir / "redis.log").read_text()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("redis-server (TLS) did not become ready")


def wait_loaded(server: RedisServer, timeout: float = 60) -> None:
    """Until the server has loaded its RDB (it answers LOADING before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "loading:0" in server.cli("INFO", "persistence", check=False):
            return
        time.sleep(0.1)
    raise RuntimeError("redis-server did not finish loading its RDB")


def serve_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A password-protected Redis for as long as the generator runs."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One password-protected Redis for the session; tests FLUSHALL what they need."""
    yield from serve_redis(tmp_path_factory)
