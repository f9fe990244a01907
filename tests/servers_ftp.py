"""Fixtures for real FTP and FTPS servers (pyftpdlib) on loopback.

Each server is a separate process (this file run as a script), so a test can stop it to
see an outage, and the server's threads never share the test's GIL. It has one user with
a password and full rights below its root, an anonymous read-only login, passive ports on
127.0.0.1, and optionally explicit TLS (``AUTH TLS``, which pyftpdlib implements with
pyOpenSSL) with a self-signed certificate made here, or no ``MLSD`` (as vsftpd), to test
the ``LIST`` fallback.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import _free_port

FTP_USER = "mbuser"
FTP_PASSWORD = "ftp-secret-Kq7-do-not-leak"
_PASSWORD_ENV = "MB_TEST_FTP_PASSWORD"  # the server reads it here, never from argv


@dataclass
class FTPServer:
    """A running pyftpdlib; ``root`` is the user's home, ``anon_root`` the anonymous one's."""

    host: str
    port: int
    root: Path
    anon_root: Path
    workdir: Path
    scheme: str = "ftp"
    ca_file: str = ""
    mlsd: bool = True
    process: subprocess.Popen[bytes] | None = None

    def url(self, path: str, user: str | None = FTP_USER) -> str:
        who = f"{user}@" if user else ""
        return f"{self.scheme}://{who}{self.host}:{self.port}/{path.lstrip('/')}"

    def env(self, password: str = FTP_PASSWORD) -> dict[str, str]:
        env = {"MULTIBACKUP_SOURCE_PASSWORD": password}
        if self.ca_file:
            env["MULTIBACKUP_FTPS_CA_FILE"] = self.ca_file
        return env

    def start(self) -> None:
        args = [sys.executable, __file__, "--port", str(self.port), "--root", str(self.root),
                "--anon-root", str(self.anon_root),
                "--passive-ports", ",".join(str(_free_port()) for _ in range(8))]
        if self.scheme == "ftps":
            args += ["--certfile", str(self.workdir / "server.pem")]
        if not self.mlsd:
            args.append("--no-mlsd")
        log = open(self.workdir / "ftpd.log", "ab")  # noqa: SIM115 - the server holds it
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, _PASSWORD_ENV: FTP_PASSWORD})
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pyftpdlib exited: {(self.workdir / 'ftpd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(3) == b"220":
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("pyftpdlib did not start listening")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(10)
        self.process = None


def _self_signed(workdir: Path) -> Path:
    """A certificate for 127.0.0.1 with its key (server.pem), and the certificate alone
    (ca.pem) for the client to trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "multibackup test ftps")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    (workdir / "server.pem").write_bytes(cert_pem + key_pem)
    (workdir / "ca.pem").write_bytes(cert_pem)
    return workdir / "ca.pem"


def start_ftp_server(work: Path, scheme: str = "ftp", mlsd: bool = True) -> FTPServer:
    """A new pyftpdlib serving ``work/root`` (user) and ``work/anon`` (anonymous)."""
    if scheme == "ftps":
        try:
            import OpenSSL  # noqa: F401 - pyftpdlib's TLS handler needs it
        except ImportError:
            pytest.skip("FTPS needs pyOpenSSL for pyftpdlib's TLS handler (pip install pyopenssl)")
    (work / "root").mkdir(parents=True)
    (work / "anon").mkdir()
    server = FTPServer("127.0.0.1", _free_port(), work / "root", work / "anon", work,
                       scheme=scheme, mlsd=mlsd)
    if scheme == "ftps":
        server.ca_file = str(_self_signed(work))
    server.start()
    return server


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    server = start_ftp_server(tmp_path_factory.mktemp("ftpd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPServer]:
    server = start_ftp_server(tmp_path_factory.mktemp("ftpsd"), scheme="ftps")
    yield server
    server.stop()


def _serve(argv: list[str]) -> None:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer as Server

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--anon-root", required=True)
    p.add_argument("--passive-ports", required=True)
    p.add_argument("--certfile")
    p.add_argument("--no-mlsd", action="store_true")
    args = p.parse_args(argv)
    authorizer = DummyAuthorizer()
    authorizer.add_user(FTP_USER, os.environ[_PASSWORD_ENV], args.root, perm="elradfmwMT")
    authorizer.add_anonymous(args.anon_root)
    handler: type[FTPHandler]
    if args.certfile:
        from pyftpdlib.handlers import TLS_FTPHandler

        class TLSHandler(TLS_FTPHandler):
            certfile = args.certfile
            tls_control_required = True
            tls_data_required = True

        handler = TLSHandler
    else:
        class Handler(FTPHandler):
            pass

        handler = Handler
    if args.no_mlsd:
        handler.proto_cmds = {k: v for k, v in handler.proto_cmds.items()
                              if k not in ("MLSD", "MLST")}
    handler.authorizer = authorizer
    handler.passive_ports = [int(p) for p in args.passive_ports.split(",")]
    handler.banner = "multibackup test server ready"
    handler.auth_failed_timeout = 0.2  # pyftpdlib's 3 s per refusal slows the tests only
    server = Server(("127.0.0.1", args.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1:])
