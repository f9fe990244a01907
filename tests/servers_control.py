"""The multibackup server itself, started the way a user starts it: ``multibackup server``
as its own process on a free loopback port, with its own state directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import _free_port

ADMIN_EMAIL = "admin@example.test"
ADMIN_PASSWORD = "admin-password-do-not-leak-41"


@dataclass
class ControlServer:
    url: str
    email: str
    password: str
    state_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    extra_args: tuple[str, ...] = ()

    def stop(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_control_server(state_dir: Path, *, port: int | None = None,
                         args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                         ) -> ControlServer:
    """Start a server and wait until /healthz answers (or fail with its output)."""
    port = port or _free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir.parent / f"server-{port}.log"
    full_env = {**os.environ, "MULTIBACKUP_ADMIN_EMAIL": ADMIN_EMAIL,
                "MULTIBACKUP_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MULTIBACKUP_STATE_DIR": str(state_dir / "engine"), **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "multibackup", "server", "--port", str(port),
             "--state-dir", str(state_dir), *args],
            stdout=out, stderr=subprocess.STDOUT, env=full_env)
    server = ControlServer(f"http://127.0.0.1:{port}", ADMIN_EMAIL, ADMIN_PASSWORD,
                           state_dir, port, proc, log, args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {server.output()}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop(kill=True)
    raise RuntimeError(f"server did not answer within 60 s: {server.output()}")


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[ControlServer]:
    """A fresh server (SQLite, own state) for one test."""
    server = start_control_server(tmp_path / "server")
    try:
        yield server
    finally:
        server.stop()
