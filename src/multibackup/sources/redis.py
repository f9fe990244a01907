"""Redis: the server's RDB snapshot, streamed by ``redis-cli --rdb -``.

``redis://[user@]host[:port]`` and ``rediss://...`` (TLS). The snapshot holds one file,
``dump.rdb``: the server's own point-in-time snapshot of every database, sent as it would be
to a replica and piped straight into the chunker, never written to disk here. A database
number in the URL (``/0``) is accepted and ignored: an RDB always holds all databases.

``redis-cli`` 6.2 or newer is needed (older ones write ``--rdb -`` to a file named ``-``).
The password comes from the config layer's ``password``, else ``MULTIBACKUP_SOURCE_PASSWORD``,
else an inherited ``REDISCLI_AUTH``; it reaches ``redis-cli`` only through its environment
(``REDISCLI_AUTH``), never its arguments. An ACL user needs the ``sync`` and ``replconf``
commands. For ``rediss://`` the CA, client certificate and key files come from the
credentials ``tls_ca_file``/``tls_cert_file``/``tls_key_file`` or the variables
``MULTIBACKUP_REDIS_TLS_CA_FILE``/``..._CERT_FILE``/``..._KEY_FILE``; without a CA file the
system's trusted roots apply.

The stream is complete only if ``redis-cli`` exits 0, reports the transfer finished, and the
bytes start with the ``REDIS`` magic and end with the RDB end-of-file opcode (0xFF) and its
8-byte checksum. redis-cli 6.2-7.x also copy the 40-byte end marker of a diskless transfer
to stdout (they truncate it only from files); it is held back and dropped.

There is no ``redis://`` restore target: an RDB cannot be loaded into a running server.
Restore ``dump.rdb`` to a directory and start a server on it::

    multibackup restore latest --target /var/lib/redis-restore
    redis-server --dir /var/lib/redis-restore --dbfilename dump.rdb
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from multibackup.errors import SourceError, UsageError
from multibackup.sources.base import FILE, UNKNOWN_SIZE, Entry

NAME = "dump.rdb"
PASSWORD_ENV = "MULTIBACKUP_SOURCE_PASSWORD"
TLS_ENV = {"tls_ca_file": "MULTIBACKUP_REDIS_TLS_CA_FILE",
           "tls_cert_file": "MULTIBACKUP_REDIS_TLS_CERT_FILE",
           "tls_key_file": "MULTIBACKUP_REDIS_TLS_KEY_FILE"}
_TLS_FLAGS = {"tls_ca_file": "--cacert", "tls_cert_file": "--cert", "tls_key_file": "--key"}

MARKER = 40  # RDB_EOF_MARK_SIZE: the random end marker of a diskless transfer
_TRAILER = 9  # EOF opcode 0xFF + 8-byte CRC64
_CONNECT_TIMEOUT = 15.0
_FINISHED = re.compile(r"Transfer finished with success(?: after (\d+) bytes)?")
_MIN_VERSION = (6, 2)


def _parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, user) of a redis:// or rediss:// URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        raise UsageError(f"invalid Redis URL {url!r}: bad port number") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss") or not parts.hostname:
        raise UsageError(f"invalid Redis URL {url!r}: expected redis://[user@]host[:port]")
    if parts.query or parts.fragment:
        raise UsageError(f"invalid Redis URL {url!r}: unexpected '?' or '#'")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise UsageError(f"invalid Redis URL {url!r}: the path can only be a database number "
                         "(and is ignored: an RDB snapshot holds every database)")
    return scheme, parts.hostname, port, unquote(parts.username or "")


def _version(cli: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"cannot run {cli}: {exc}") from None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        raise SourceError(f"cannot tell the version of {cli} from {out.strip()[:80]!r}")
    return tuple(int(x) for x in match.groups("0"))


def _message(stderr: str) -> str:
    """The line of redis-cli's chatter that says what went wrong."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for marker in ("AUTH failed", "Could not connect", "SYNC with master failed",
                   "Error reading", "I/O error", "Error"):
        for line in lines:
            if line.startswith(marker):
                return line
    return lines[-1] if lines else "no error message"


def _explain(line: str) -> str:
    if "WRONGPASS" in line or "invalid password" in line:
        return f"authentication failed: wrong user name or password ({line})"
    if "NOAUTH" in line:
        return ("the server needs a password: give it in the config file or "
                f"${PASSWORD_ENV} ({line})")
    if "NOPERM" in line:
        return f"the user may not run SYNC/REPLCONF, which --rdb needs ({line})"
    if "certificate" in line or "SSL" in line:
        return f"TLS failed ({line})"
    return line


class _RDBStream(io.RawIOBase):
    """redis-cli's stdout, minus the end marker it may append, checked at its end."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr: BinaryIO, where: str) -> None:
        super().__init__()
        self._proc = proc
        self._stdout = proc.stdout
        self._stderr = stderr
        self._where = where
        self._out = memoryview(b"")
        self._held = b""  # the last MARKER bytes: maybe the end marker, maybe the RDB's end
        self._head = b""
        self._last = b""
        self.received = 0
        self.emitted = 0
        self.finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._out:
            if self.finished:
                return 0
            assert self._stdout is not None
            data = self._stdout.read1(1 << 20)
            if data:
                self.received += len(data)
                data = self._held + data
                cut = max(0, len(data) - MARKER)
                self._held = data[cut:]
                self._set_out(data[:cut])
            else:
                self._set_out(self._finish())
                self.finished = True
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _set_out(self, data: bytes) -> None:
        if not data:
            return
        if len(self._head) < 5:
            self._head += data[:5 - len(self._head)]
        self._last = (self._last + data)[-_TRAILER:]
        self.emitted += len(data)
        self._out = memoryview(data)

    def _finish(self) -> bytes:
        """At end of stream: the held bytes that belong to the RDB, after every check."""
        code = self._proc.wait()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode("utf-8", "replace")
        finished = _FINISHED.search(stderr)
        # 6.2.0-6.2.4 fail to fsync stdout after a good transfer: not an error
        fsync_only = code != 0 and finished is not None and "Fail to fsync" in stderr
        if code != 0 and not fsync_only:
            raise SourceError(f"{self._where}: redis-cli --rdb failed: "
                              f"{_explain(_message(stderr))}")
        if not finished:
            raise SourceError(f"{self._where}: redis-cli did not report a finished transfer "
                              f"({_message(stderr)})")
        tail = self._held
        if finished.group(1) is not None:
            payload = int(finished.group(1))
            if self.received == payload + MARKER:
                tail = b""  # the end marker, copied to stdout
            elif self.received != payload:
                raise SourceError(f"{self._where}: redis-cli reported {payload} bytes but "
                                  f"sent {self.received}")
        self._check(tail)
        return tail

    def _check(self, tail: bytes) -> None:
        head = (self._head + tail)[:5]
        last = (self._last + tail)[-_TRAILER:]
        if self.emitted + len(tail) < 5 + _TRAILER or head != b"REDIS":
            raise SourceError(f"{self._where}: the stream is not an RDB file")
        if last[0] != 0xFF:
            raise SourceError(f"{self._where}: the RDB stream is truncated (no end-of-file "
                              "opcode)")


class RedisSource:
    """A Redis server's RDB snapshot as one file, ``dump.rdb``."""

    complete_only = True
    parallel = 1

    def __init__(self, scheme: str, host: str, port: int, user: str, password: str | None,
                 tls_files: Mapping[str, str]) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self._tls_files = dict(tls_files)

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{user}{host}:{self.port}"

    def __repr__(self) -> str:
        return f"RedisSource({self.describe()!r})"

    def argv(self, cli: str = "redis-cli") -> list[str]:
        """redis-cli's arguments: no secret among them (the process list shows them)."""
        args = [cli, "-h", self.host, "-p", str(self.port)]
        if self.user:
            args += ["--user", self.user]
        if self.scheme == "rediss":
            args.append("--tls")
            if not self.host.replace(".", "").isdigit() and ":" not in self.host:
                args += ["--sni", self.host]
            for key, flag in _TLS_FLAGS.items():
                if self._tls_files.get(key):
                    args += [flag, self._tls_files[key]]
        return [*args, "--rdb", "-"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self._password:
            env["REDISCLI_AUTH"] = self._password
        elif not env.get("REDISCLI_AUTH"):
            env.pop("REDISCLI_AUTH", None)  # empty would be sent as an empty password
        return env

    def list_dir(self, path: str) -> list[Entry]:
        if path:
            return []
        return [Entry(NAME, FILE, size=UNKNOWN_SIZE, mtime_ns=time.time_ns(), mode=0o600)]

    def _cli(self) -> str:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise SourceError("redis-cli is not installed (Debian/Ubuntu: apt install "
                              "redis-tools); it streams the RDB snapshot")
        if _version(cli) < _MIN_VERSION:
            raise SourceError(f"{cli} is too old: 6.2 or newer streams --rdb to stdout")
        return cli

    def _probe(self) -> None:
        """Fail fast on an unreachable server (redis-cli itself waits for TCP to give up)."""
        try:
            socket.create_connection((self.host, self.port), timeout=_CONNECT_TIMEOUT).close()
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise SourceError(f"{self.describe()}: cannot connect: {reason}") from None

    @contextlib.contextmanager
    def open(self, path: str, entry: Entry) -> Iterator[BinaryIO]:
        if path != NAME:
            raise SourceError(f"{self.describe()}: no file {path!r}")
        cli = self._cli()
        self._probe()
        with tempfile.TemporaryFile() as stderr:
            try:
                proc = subprocess.Popen(self.argv(cli), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=stderr,
                                        env=self.environment())
            except OSError as exc:
                raise SourceError(f"cannot run {cli}: {exc.strerror or exc}") from None
            stream = _RDBStream(proc, stderr, self.describe())
            try:
                yield stream  # type: ignore[misc]
                if not stream.finished:
                    raise SourceError(f"{self.describe()}: the RDB stream was not read to "
                                      "the end")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()

    def close(self) -> None:
        pass


def _tls_files(credentials: Mapping[str, str]) -> dict[str, str]:
    files = {}
    for key, env in TLS_ENV.items():
        value = credentials.get(key) or os.environ.get(env, "")
        if value:
            files[key] = value
    return files


def open_source(url: str, credentials: Mapping[str, str]) -> RedisSource:
    scheme, host, port, user = _parse(url)
    password = credentials.get("password") or os.environ.get(PASSWORD_ENV) or None
    return RedisSource(scheme, host, port, user, password, _tls_files(credentials))
