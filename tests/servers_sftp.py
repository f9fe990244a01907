"""Fixtures for a real OpenSSH SFTP server on loopback.

The server is the system ``sshd`` in the foreground, with its own host key, an authorized
client key, and ``ForceCommand internal-sftp``, so tests see exactly what a user of a real
server would: OpenSSH's status codes, rename semantics and connection handling. It can be
stopped and started again on the same port to test outages.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import _free_port

SSHD = "/usr/sbin/sshd"


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid``: sshd forks a process (in its own session) per connection."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


@dataclass
class SFTPServer:
    """A running sshd; ``root`` is the local directory its SFTP sessions start in."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    root: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    _stores: list[Any] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.workdir / "sshd_config"

    def start(self) -> None:
        """Start sshd (again) on the same port with the same keys; returns once it accepts."""
        log = open(self.workdir / "sshd.log", "ab")  # noqa: SIM115 - sshd holds it
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.workdir / 'sshd.log').read_text()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        """Kill sshd and every session it serves, like a crashed or rebooted server."""
        if self.process is None:
            return
        victims = _children(self.process.pid)
        self.process.kill()
        self.process.wait(10)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None

    def store(self, subdir: str | None = None, **options: Any) -> Any:
        """An SFTPStore rooted at ``root/subdir`` (a fresh directory name when not given)."""
        from multibackup.backends.sftp_store import SFTPStore

        options.setdefault("key_file", self.key_file)
        options.setdefault("known_hosts", self.known_hosts)
        store = SFTPStore(self.host, self.port, self.user, self.remote_path(subdir), **options)
        self._stores.append(store)
        return store

    def remote_path(self, subdir: str | None = None) -> str:
        return str(self.root / (subdir or uuid.uuid4().hex[:12]))

    def location(self, subdir: str | None = None) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}{self.remote_path(subdir)}"

    def env(self) -> dict[str, str]:
        """What the location wiring reads to log in (no password: the key is authorized)."""
        return {"MULTIBACKUP_SFTP_KEY_FILE": self.key_file,
                "MULTIBACKUP_SFTP_KNOWN_HOSTS": self.known_hosts}

    def authorize(self, public_key: Path) -> None:
        """Let another client key log in."""
        with open(self.workdir / "authorized_keys" / self.user, "a") as keys:
            keys.write(public_key.read_text())

    def close_stores(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()


def _write_config(server: SFTPServer, host_key: Path, sftp_options: str) -> None:
    server.config.write_text("\n".join([
        f"Port {server.port}",
        f"ListenAddress {server.host}",
        f"HostKey {host_key}",
        f"PidFile {server.workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {server.workdir / 'authorized_keys'}/%u",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "UseDNS no",
        "PermitRootLogin prohibit-password",
        # tests open many connections at once (one pool per store)
        "MaxStartups 100",
        "MaxSessions 100",
        "LogLevel ERROR",
        "Subsystem sftp internal-sftp",
        f"ForceCommand internal-sftp -d {server.root} {sftp_options}".rstrip(),
        "",
    ]))


def start_sftp_server(work: Path, sftp_options: str = "") -> SFTPServer:
    """A new sshd with fresh host and client keys, its SFTP root and logs in ``work``.

    ``sftp_options`` are extra ``internal-sftp`` flags, e.g. ``-R`` for a read-only server.
    """
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing (apt-get install openssh-server; scripts/test-servers.sh)")
    root = work / "sftproot"
    root.mkdir()
    user = "root" if os.geteuid() == 0 else getpass.getuser()
    _keygen(work / "host_ed25519", "host")
    _keygen(work / "client_ed25519", "client")
    (work / "authorized_keys").mkdir()
    (work / "authorized_keys" / user).write_text((work / "client_ed25519.pub").read_text())
    server = SFTPServer("127.0.0.1", _free_port(), user, str(work / "client_ed25519"),
                        str(work / "known_hosts"), root, work)
    kind, blob = (work / "host_ed25519.pub").read_text().split()[:2]
    Path(server.known_hosts).write_text(f"[{server.host}]:{server.port} {kind} {blob}\n")
    _write_config(server, work / "host_ed25519", sftp_options)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    server.start()
    return server


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPServer]:
    """OpenSSH on 127.0.0.1 with key authentication only, as a hardened production server."""
    server = start_sftp_server(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.close_stores()
        server.stop()
