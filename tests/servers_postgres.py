"""Fixtures for real PostgreSQL servers on loopback.

Each server is the distribution's ``postgres`` binary with its own cluster (``initdb``) in
a private directory, listening on a free port of 127.0.0.1 with password authentication
(SCRAM) for every connection, so the tests see what a user of a production server sees:
wrong passwords are refused and the dump tools really authenticate. PostgreSQL refuses to
run as root; tests run as root in CI, so the cluster belongs to the ``postgres`` account
the Debian package creates (or ``nobody``) and the server runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import _free_port

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "pg-secret-do-not-leak-7c2d:\\x"  # ':' and '\' test the passfile escaping


def pg_bindir() -> Path | None:
    """The newest installed server bin directory (Debian keeps one per major version)."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin"):
        if os.access(os.path.join(d, "postgres"), os.X_OK):
            m = re.search(r"(\d+)", d)
            found.append((int(m.group(1)) if m else 0, d))
    if found:
        return Path(max(found)[1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _run_as() -> str | None:
    """The account the server runs as when the tests run as root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    pytest.skip("running as root and neither a 'postgres' nor a 'nobody' account exists")
    return None


@dataclass
class PGServer:
    """A running cluster; ``psql`` runs SQL as the superuser for test set-up and checks."""

    bindir: Path
    workdir: Path
    port: int
    run_as: str | None
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    password: str = SUPERUSER_PASSWORD
    process: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def _as_owner(self) -> dict[str, Any]:
        return {"user": self.run_as, "group": pwd.getpwnam(self.run_as).pw_gid,
                "extra_groups": []} if self.run_as else {}

    def start(self) -> None:
        """Start (again) on the same port with the same data; returns once it accepts."""
        self._log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen([str(self.bindir / "postgres"), "-D", str(self.datadir)],
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir, start_new_session=True,
                                        **self._as_owner())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("postgres exited: "
                                   + (self.workdir / "server.log").read_text()[-2000:])
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", self.host,
                                    "-p", str(self.port)], capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("postgres did not start accepting connections")

    def stop(self, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT), or an immediate one (SIGQUIT) like a crash."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self._log.close()

    def env(self, database: str = "postgres") -> dict[str, str]:
        """libpq settings for the tests' own clients (psql, pgbench) as the superuser."""
        env = dict(os.environ)
        env.update({"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                    "PGPASSWORD": self.password, "PGDATABASE": database})
        return env

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; the unaligned, tuples-only output."""
        p = subprocess.run([self.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-c", sql], env=self.env(database), capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"psql failed: {p.stderr.strip()}")
        return p.stdout.strip()

    def url(self, database: str = "", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{database}"

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pg_server() -> PGServer:
    """A new cluster with a password-protected superuser, started on a free port."""
    bindir = pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries are missing (apt-get install postgresql; "
                    "scripts/test-servers.sh)")
    run_as = _run_as()
    # not below pytest's tmp dir: that is private to root, and the server runs as another user
    workdir = Path(tempfile.mkdtemp(prefix="mb-postgres-"))
    (workdir / "pwfile").write_text(SUPERUSER_PASSWORD + "\n")
    if run_as:
        ent = pwd.getpwnam(run_as)
        for p in (workdir, workdir / "pwfile"):
            os.chown(p, ent.pw_uid, ent.pw_gid)
    os.chmod(workdir, 0o700)
    server = PGServer(bindir, workdir, _free_port(), run_as)
    init = subprocess.run([str(bindir / "initdb"), "-D", str(server.datadir), "-U", SUPERUSER,
                           f"--pwfile={workdir / 'pwfile'}", "--auth=scram-sha-256",
                           "-E", "UTF8", "--locale=C", "--no-sync"],
                          cwd=workdir, capture_output=True, text=True, **server._as_owner())
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
    os.unlink(workdir / "pwfile")
    with open(server.datadir / "postgresql.conf", "a") as conf:
        conf.write("\n".join([
            "", "listen_addresses = '127.0.0.1'", f"port = {server.port}",
            f"unix_socket_directories = '{workdir}'",
            # a test server: durability is not the point, speed is
            "fsync = off", "full_page_writes = off", "synchronous_commit = off",
            "shared_buffers = 32MB", "max_connections = 40", "log_min_messages = warning", ""]))
    server.start()
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PGServer]:
    """PostgreSQL on 127.0.0.1 with SCRAM password authentication, for the whole session."""
    server = start_pg_server()
    try:
        yield server
    finally:
        server.destroy()
