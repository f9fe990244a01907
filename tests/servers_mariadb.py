"""Fixtures for a real MariaDB server on loopback.

The server is the distribution's ``mariadbd`` with its own data directory made by
``mariadb-install-db`` in a private directory, listening on a free port of 127.0.0.1 and
on a Unix socket there. Grant tables are on: the tests back up as a ``backup`` account
with a real password (over TCP), as a user of a production server would; the fixture
itself administers the server as ``root`` through the socket (no password, reachable only
by this user). The event scheduler is off, so a test's events never change its data.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import _free_port

BACKUP_USER = "backup"
# quotes, '#', ';' and '\' test the option-file escaping
BACKUP_PASSWORD = 'mb-secret-do-not-leak-4e1b"x#y;z\\w'


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for d in ("/usr/sbin", "/usr/libexec"):
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
    return None


def sql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class MariaDBServer:
    """A running mariadbd; ``root_sql`` runs statements as root through the socket."""

    workdir: Path
    port: int
    mariadbd: str
    client: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return str(self.workdir / "s.sock")

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def url(self, database: str = "", scheme: str = "mysql") -> str:
        return f"{scheme}://{BACKUP_USER}@127.0.0.1:{self.port}/{database}"

    def env(self, password: str = BACKUP_PASSWORD) -> dict[str, str]:
        return {"MULTIBACKUP_SOURCE_PASSWORD": password}

    def start(self) -> None:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - the server holds it
        self.process = subprocess.Popen(
            [self.mariadbd, "--no-defaults", f"--user={getpass.getuser()}",
             f"--datadir={self.datadir}", f"--socket={self.socket}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--pid-file={self.workdir / 'mariadbd.pid'}",
             f"--log-error={self.workdir / 'error.log'}", "--skip-name-resolve",
             "--event-scheduler=OFF", "--character-set-server=utf8mb4",
             "--collation-server=utf8mb4_general_ci", "--innodb-buffer-pool-size=128M",
             "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
             "--innodb-use-native-aio=0", "--max-connections=50"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("mariadbd exited: "
                                   + (self.workdir / "error.log").read_text()[-2000:])
            p = subprocess.run([self.client, "--no-defaults", "-uroot", f"--socket={self.socket}",
                                "-N", "-e", "SELECT 1"], capture_output=True)
            if p.returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("mariadbd did not start: "
                           + (self.workdir / "error.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def root_sql(self, sql: str, database: str | None = None, *,
                 check: bool = True) -> str:
        """Run statements as root (batch mode, no column names); the output."""
        argv = [self.client, "--no-defaults", "-uroot", f"--socket={self.socket}", "-N", "-B",
                "--default-character-set=utf8mb4"]
        if database is not None:
            argv += ["--", database]
        p = subprocess.run(argv, input=sql.encode(), capture_output=True)
        if check and p.returncode != 0:
            raise RuntimeError(f"SQL failed: {p.stderr.decode()[-2000:]}")
        return p.stdout.decode()

    def root_client(self, database: str | None = None) -> subprocess.Popen[bytes]:
        """An open root session fed through stdin (to hold locks while a test acts)."""
        argv = [self.client, "--no-defaults", "-uroot", f"--socket={self.socket}", "-N", "-B",
                "--default-character-set=utf8mb4",
                "-n"]  # -n: unbuffered, so each answer arrives as soon as it is ready
        if database is not None:
            argv += ["--", database]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)


def start_mariadb(workdir: Path) -> MariaDBServer:
    """Initialise a data directory in ``workdir`` and start a server on it, with the
    ``backup`` account (every privilege, password ``BACKUP_PASSWORD``) and only root@localhost
    besides."""
    mariadbd = _binary("mariadbd", "mysqld")
    install = _binary("mariadb-install-db", "mysql_install_db")
    client = _binary("mariadb", "mysql")
    if not (mariadbd and install and client and _binary("mariadb-dump", "mysqldump")):
        pytest.skip("MariaDB server or client programs are not installed")
    assert mariadbd and install and client
    workdir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([install, "--no-defaults", f"--datadir={workdir / 'data'}",
                        f"--user={getpass.getuser()}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {p.stdout.decode()[-1000:]}"
                           f"{p.stderr.decode()[-1000:]}")
    server = MariaDBServer(workdir, _free_port(), mariadbd, client)
    server.start()
    # install-db also makes root@<hostname>, @127.0.0.1, @::1: keep only root@localhost
    for line in server.root_sql("SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user "
                                "WHERE User = 'root' AND Host <> 'localhost'").splitlines():
        server.root_sql(f"DROP USER {line}")
    server.root_sql(f"CREATE USER {BACKUP_USER}@'%' IDENTIFIED BY {sql_literal(BACKUP_PASSWORD)};"
                    f"GRANT ALL PRIVILEGES ON *.* TO {BACKUP_USER}@'%' WITH GRANT OPTION;")
    return server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """One MariaDB server for the session, in a short private directory (socket paths are
    limited to about 100 characters)."""
    work = Path(tempfile.mkdtemp(prefix="mb-maria-"))
    server = start_mariadb(work)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
