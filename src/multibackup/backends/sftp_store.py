"""ObjectStore over SFTP (OpenSSH and compatible servers), with paramiko.

OpenDAL has no SFTP service, so this module speaks SFTP itself. Design points:

- A small pool of SSH connections, one SFTP channel each, opened lazily and used by one
  thread at a time: the repository uploads several packs at once, and one SSH connection
  is one TCP stream with one cipher state, which would serialise them.
- Writes go to ``<root>/.tmp/<random>`` and are renamed into place, so a reader never sees
  a partial object and an interrupted upload leaves only a temp file (``sweep_temporary``).
- Transfers keep 2 MiB of requests in flight (255 KiB each when the server states such
  limits, as OpenSSH does, else 32 KiB) and check every reply. paramiko's own pipelined
  file writes drop the status of each write and of the final close, so a full disk would
  go unnoticed and a truncated file would be renamed into place; hence the request loop
  here (``_Transfer``), which frames requests and parses replies itself, without copies.
- Client CPU is what SFTP costs most (paramiko is pure Python per SSH packet): AES-GCM is
  preferred, requests are as large as the server allows, and see the constants below.
- Errors are reduced to one line that names the problem (authentication, host key,
  unreachable server, permission, full disk) and never carries a password or passphrase.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import random
import socket
import stat as stat_mod
import struct
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_EOF,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_WRITE,
    SFTP_OK,
    SFTPError,
)
from paramiko.sftp_attr import SFTPAttributes
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    BadHostKeyException,
    IncompatiblePeer,
    PasswordRequiredException,
    SSHException,
)

from multibackup.backends.base import ObjectInfo, not_an_object
from multibackup.errors import ObjectExists, ObjectNotFound, StorageFull, StoreError, UsageError
from multibackup.secret import Secret

T = TypeVar("T")

_log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
HOST_KEY_POLICIES = ("strict", "accept-new", "insecure")
# Transfer tuning. Measured on loopback OpenSSH 9.2, 2 cores with AES-NI: 40 puts of 16 MiB
# and 160 ranged gets of 4 MiB, from 4 threads. Client CPU went from 2.7-3.4 s to about
# 1.2 s (puts) and from 3.2-4.6 s to about 1.3 s (gets); each comment says what its choice
# saved.
#
#: bytes per read or write request when the server does not state its limits: every SFTP
#: server handles 32 KiB (OpenSSH's own client falls back to it too)
_CHUNK = 32 * 1024
#: the most we ask for per request when the server states higher limits (OpenSSH 8.6+
#: states 255 KiB for both in limits@openssh.com). 255 KiB instead of 32 KiB requests cut
#: client CPU by about a third (puts 2.2 -> 1.5 s, gets 2.8 -> 1.8 s) and sshd CPU by a
#: quarter: a 32 KiB write plus its header took two SSH packets, and each request costs
#: a reply to parse. 128 KiB measured no better.
_MAX_CHUNK = 255 * 1024
#: bytes of requests in flight per transfer (64 x 32 KiB, or 8 x 255 KiB). 1 MiB used a
#: little less CPU but made 4 parallel gets 10-20 % slower; 4 MiB gained nothing
_IN_FLIGHT_BYTES = 2 * 1024 * 1024
#: the channel window must hold every reply in flight, or the server stalls (8 MiB: no gain)
_WINDOW = 4 * 1024 * 1024
# The channel's maximum packet size stays paramiko's 32 KiB: sshd sends at most 32 KiB of
# channel data per packet however large we allow (256 KiB changed neither packet counts
# nor CPU), and it accepts at most 32 KiB per packet from us.
_KEEPALIVE = 30
_HEAD = struct.Struct(">IBI")  # SFTP packet length, type, request id
_U32 = struct.Struct(">I")
_OFFSET_SIZE = struct.Struct(">QI")
_MAX_REPLY = 16 * 1024 * 1024  # as paramiko: a longer reply means the stream is garbage
#: cipher preference (the client's order decides). paramiko prefers aes128-ctr with a
#: separate HMAC, computed and compared in Python per packet; AES-GCM is one call into
#: OpenSSL (AES-NI) per packet: puts 3.2 -> 2.2 s, gets 4.5 -> 2.8 s of client CPU, and
#: sshd 25 % less. aes256-gcm measured the same as aes128-gcm. CTR stays for servers
#: without GCM; CBC and 3DES are dropped as insecure (OpenSSH no longer offers them).
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr",
            "aes256-ctr")
#: MACs, used only with CTR. paramiko's order: with aes128-ctr, hmac-sha2-256 measured
#: 0.8 s less client CPU on the puts than hmac-sha2-256-etm@openssh.com; both are sound.
#: HMAC-SHA1 (still in OpenSSH's defaults) last, for old servers; MD5 and truncated MACs
#: are dropped.
_MACS = ("hmac-sha2-256", "hmac-sha2-512", "hmac-sha2-256-etm@openssh.com",
         "hmac-sha2-512-etm@openssh.com", "hmac-sha1")
_USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
_SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
_STATVFS_READ_ONLY = 0x1

_known_hosts_lock = threading.Lock()  # several stores may append to one known_hosts file


class _ScrubSecrets(logging.Filter):
    """Blanks known secrets out of paramiko's log records.

    paramiko does not log passwords today; this keeps it so should a debug line ever
    include one. A logger's filters only see records logged on that very logger, hence one
    filter installed on each logger paramiko uses.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            scrubbed = _scrub(text, self.secrets)
            if scrubbed != text:
                record.msg, record.args = scrubbed, None
        return True


# paramiko logs a traceback at ERROR level whenever a connection fails during the
# handshake; with no handler configured, Python would print those to stderr next to our
# one-line error. A library-style NullHandler keeps them out unless the application
# configures logging itself.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
_scrubber = _ScrubSecrets()
for _name in ("paramiko", "paramiko.transport", "paramiko.transport.sftp", "paramiko.client",
              "paramiko.agent", "paramiko.hostkeys"):
    logging.getLogger(_name).addFilter(_scrubber)


def _scrub(text: str, secrets: set[str] | list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class _ConnectFailed(Exception):
    """Opening a connection failed; ``transient`` says whether trying again may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class _UnknownHost(Exception):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name = name
        self.key = key


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """What to do with a server whose key is not in known_hosts (a mismatch never gets here)."""

    def __init__(self, store: SFTPStore) -> None:
        self.store = store

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if self.store.host_key_policy == "insecure":
            return
        if self.store.host_key_policy == "accept-new":
            self.store._remember_host_key(hostname, key)
            return
        raise _UnknownHost(hostname, key)


class _SFTP(paramiko.SFTPClient):
    """An SFTP client that knows how much the server takes per read and write request."""

    read_size = _CHUNK
    write_size = _CHUNK

    def learn_limits(self) -> None:
        """Ask for the server's request size limits (``limits@openssh.com``, OpenSSH 8.6+).

        Other servers answer "unsupported" and get 32 KiB requests, as do stated limits of 0
        ("no limit stated"). Higher limits are capped at ``_MAX_CHUNK``, lower ones kept.
        """
        try:
            kind, msg = self._request(CMD_EXTENDED, "limits@openssh.com")
        except OSError:
            return
        if kind != CMD_EXTENDED_REPLY:
            return
        max_packet, max_read, max_write = (msg.get_int64() for _ in range(3))
        # a request's header and a reply's framing must fit in a packet too
        packet_room = max_packet - 1024 if max_packet > 1024 else 0
        for name, limit in (("read_size", max_read), ("write_size", max_write)):
            if limit or packet_room:
                setattr(self, name, min(x for x in (limit, packet_room, _MAX_CHUNK) if x > 0))


class _Transfer:
    """Reads or writes of one open file with many requests in flight; every reply checked.

    Requests are framed and replies parsed here, between the caller's buffer (a memoryview
    of the object; a preallocated bytearray for reads) and the SSH channel, which stays
    paramiko's. paramiko's generic request path makes several more copies of each byte:
    into a Message and out again, then of the rest of the request for each SSH packet sent,
    and on the way back it re-concatenates each reply as its pieces arrive and copies the
    data out twice. Measured once the cipher and request sizes were tuned, framing here
    saves 5-15 % of the client CPU (A/B in one process, one connection, per 160 MiB: puts
    0.30 -> 0.27 s, gets 0.58 -> 0.55 s; 4 threads' gets 1.9 -> 1.6 s).

    Request ids come from the SFTPClient's counter; replies are consumed here and never
    reach paramiko's dispatcher, which is safe as a connection serves one thread at a time,
    a transfer collects all its replies before it ends, and after a connection error the
    connection is discarded.
    """

    def __init__(self, sftp: paramiko.SFTPClient, handle: bytes) -> None:
        self.sftp = sftp
        self.channel = sftp.sock
        self.handle = _U32.pack(len(handle)) + handle
        self.pending: dict[int, tuple[int, int]] = {}  # request id -> (offset, length)
        self.error: Exception | None = None
        self.eof = False

    def _request_id(self) -> int:
        with self.sftp._lock:
            num = self.sftp.request_number
            self.sftp.request_number = num + 1
        return num

    def write(self, offset: int, data: memoryview) -> None:
        num, size = self._request_id(), len(data)
        head = (_HEAD.pack(1 + 4 + len(self.handle) + 12 + size, CMD_WRITE, num) + self.handle
                + _OFFSET_SIZE.pack(offset, size))
        self._send(b"".join((head, data)))  # one frame: no small SSH packet per request
        self.pending[num] = (offset, size)

    def read(self, offset: int, size: int) -> None:
        num = self._request_id()
        self._send(_HEAD.pack(1 + 4 + len(self.handle) + 12, CMD_READ, num) + self.handle
                   + _OFFSET_SIZE.pack(offset, size))
        self.pending[num] = (offset, size)

    def _send(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:
            sent = self.channel.send(view)  # one SSH packet (paramiko copies from the view)
            if sent <= 0:
                raise EOFError("the SFTP channel closed")
            view = view[sent:]

    def _recv_into(self, view: memoryview) -> None:
        while view:
            data = self.channel.recv(len(view))
            if not data:
                raise EOFError("the SFTP channel closed")
            view[:len(data)] = data
            view = view[len(data):]

    def _recv(self, size: int) -> bytes:
        if size == 0:
            return b""  # a recv would wait for data
        data = self.channel.recv(size)
        if len(data) == size:
            return data
        if not data:
            raise EOFError("the SFTP channel closed")
        buf = bytearray(size)
        buf[:len(data)] = data
        self._recv_into(memoryview(buf)[len(data):])
        return bytes(buf)

    def wait_one(self, into: memoryview | None = None, base: int = 0) -> tuple[int, int, int]:
        """Read one reply. Data for a read lands in ``into`` at the read's offset - ``base``
        (or is dropped when ``into`` is None); returns (offset, asked length, bytes got)."""
        length, kind, num = _HEAD.unpack(self._recv(_HEAD.size))
        if not 5 <= length <= _MAX_REPLY:
            raise SFTPError(f"garbage SFTP reply (length {length})")
        rest = length - 5
        if num not in self.pending:
            raise SFTPError(f"SFTP reply to unknown request {num}")
        offset, size = self.pending.pop(num)
        if kind == CMD_DATA and rest >= 4:
            (count,) = _U32.unpack(self._recv(4))
            rest -= 4
            if count > rest:
                raise SFTPError("malformed SFTP data reply")
            if count == 0:
                self.eof = True  # no data where some was asked for: at the end
            got = min(count, size)  # a server sending more than asked: keep what was asked
            if into is not None:
                self._recv_into(into[offset - base:offset - base + got])
                rest -= got
            self._recv(rest)
            return offset, size, got
        body = self._recv(rest)
        if kind == CMD_STATUS and rest >= 4:
            code = _U32.unpack_from(body)[0]
            if code == SFTP_EOF:
                self.eof = True
            elif code != SFTP_OK and self.error is None:
                try:
                    self.sftp._convert_status(paramiko.Message(body))
                except Exception as exc:  # the status as paramiko reports it (IOError)
                    self.error = exc
        elif self.error is None:
            self.error = SFTPError(f"unexpected reply type {kind}")
        return offset, size, 0

    def drain(self) -> None:
        while self.pending:
            self.wait_one()


class _Connection:
    """One SSH connection and its SFTP channel."""

    def __init__(self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient) -> None:
        self.client = client
        self.sftp = sftp

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:
            pass
        self.client.close()


def _transport(*args: Any, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport with our cipher and MAC preferences (``_CIPHERS``, ``_MACS``).

    ``SSHClient.connect`` calls it instead of ``Transport``; a server offering none of them
    fails with the usual "cannot agree on algorithms" error.
    """
    transport = paramiko.Transport(*args, **kwargs)
    options = transport.get_security_options()
    options.ciphers = [name for name in _CIPHERS if name in options.ciphers]
    options.digests = [name for name in _MACS if name in options.digests]
    return transport


def _info(key: str, attrs: paramiko.SFTPAttributes) -> ObjectInfo:
    """An object as SFTP describes it: the size, and an ETag made of size and time.

    SFTP (version 3) has no checksum and times in whole seconds. The ETag lets a
    migration's journal see a file rewritten in place, at the source or by hand at the
    destination, with its size unchanged. The time stays out of ``mtime_ns``: that would
    let a comparison without a journal take "destination not older" for "same", which
    a copy rewritten by hand would fool; such a comparison hashes both sides instead.
    """
    size, mtime = attrs.st_size or 0, int(attrs.st_mtime or 0)
    return ObjectInfo(key, size, f"{size:x}-{mtime:x}" if mtime else None)


def _in_flight(size: int) -> int:
    """How many requests of ``size`` bytes a transfer keeps in flight."""
    return max(4, min(64, _IN_FLIGHT_BYTES // size))


def _alive(sftp: paramiko.SFTPClient) -> bool:
    transport = sftp.get_channel().get_transport()
    return transport is not None and transport.is_active() and not sftp.get_channel().closed


class SFTPStore:
    """An SFTP directory as an ObjectStore; keys are ``/``-separated paths below ``root``."""

    def __init__(self, host: str, port: int = 22, username: str = "", root: str = "/", *,
                 password: str | None = None, key_file: str | None = None,
                 key_passphrase: str | None = None, known_hosts: str | None = None,
                 host_key_policy: str = "strict", retries: int = 3, connections: int = 4,
                 description: str | None = None, timeout: float = 20.0) -> None:
        self.host = host
        self.port = int(port)
        self.username = username
        # absolute, or relative to the directory SFTP sessions start in (usually home)
        root = posixpath.normpath(root or "/")
        self.root = "/" + root.strip("/") if root.startswith("/") else root
        shown_host = f"[{host}]" if ":" in host else host
        user = f"{username}@" if username else ""
        shown_root = self.root if self.root.startswith("/") else "/" + self.root
        self.description = description or f"sftp://{user}{shown_host}:{self.port}{shown_root}"
        if host_key_policy not in HOST_KEY_POLICIES:
            raise UsageError(f"{self.description}: unknown host key policy {host_key_policy!r} "
                             f"(use one of {', '.join(HOST_KEY_POLICIES)})")
        self.host_key_policy = host_key_policy
        self.concurrency = max(1, int(connections))
        #: entries below the prefix the last listing passed over as no objects (symlinks,
        #: pipes, sockets, devices), each with what it is (see OpenDALStore.passed_over)
        self.passed_over: list[tuple[ObjectInfo, str]] = []
        self.is_local = False
        self._retries = max(0, int(retries))
        self._timeout = float(timeout)
        self._password = Secret(password) if password else None
        self._passphrase = Secret(key_passphrase) if key_passphrase else None
        _scrubber.secrets.update(self._secrets)
        self._key_file = os.path.expanduser(key_file) if key_file else None
        self._key: paramiko.PKey | None = None
        self._key_lock = threading.Lock()
        self._known_hosts = os.path.expanduser(known_hosts or _USER_KNOWN_HOSTS)
        self._read_system_known_hosts = known_hosts is None
        self._host_keys: paramiko.HostKeys | None = None
        # the name known_hosts files use for this server
        self._host_key_name = host if self.port == 22 else f"[{host}]:{self.port}"
        self._idle: list[_Connection] = []
        # a store dropped without close() still ends its SSH sessions
        weakref.finalize(self, _close_all, self._idle)
        self._open = 0
        self._pool = threading.Condition()
        self._dirs: set[str] = set()  # directories known to exist (created or seen)
        self._posix_rename = True  # until the server says it lacks posix-rename@openssh.com

    @property
    def _secrets(self) -> list[str]:
        return [s.value for s in (self._password, self._passphrase) if s]

    # -- paths -----------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{self.description}: invalid object key {key!r}")
        return posixpath.join(self.root, key)

    def _where(self, action: str, key: str) -> str:
        return f"{self.description}: {action} {key}"

    # -- connections -----------------------------------------------------------------------

    def close(self) -> None:
        """Close idle connections (the store stays usable: it reconnects on demand)."""
        with self._pool:
            idle = self._idle[:]
            self._idle.clear()
            self._open -= len(idle)
            self._pool.notify_all()
        for conn in idle:
            conn.close()

    def __enter__(self) -> SFTPStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _acquire(self) -> _Connection:
        stale: list[_Connection] = []
        try:
            with self._pool:
                while True:
                    while self._idle:
                        conn = self._idle.pop()
                        if conn.alive():
                            return conn
                        stale.append(conn)
                        self._open -= 1
                    if self._open < self.concurrency:
                        self._open += 1
                        break
                    self._pool.wait()
        finally:
            for conn in stale:
                conn.close()
        try:
            return self._connect()
        except BaseException:
            with self._pool:
                self._open -= 1
                self._pool.notify()
            raise

    def _release(self, conn: _Connection, broken: bool = False) -> None:
        if broken:
            conn.close()
        with self._pool:
            if broken:
                self._open -= 1
            else:
                self._idle.append(conn)
            self._pool.notify()

    @contextlib.contextmanager
    def session(self, action: str, key: str) -> Iterator[paramiko.SFTPClient]:
        """A pooled SFTP channel held for a caller's own requests.

        For the SFTP tree source and restore target, which stream a file through one
        channel instead of running one idempotent operation (``_run``). Connecting is
        retried like ``_run`` does and fails with one line (``StoreError``); a channel whose
        connection failed on the way is closed instead of going back to the pool.
        """
        for attempt in range(self._retries + 1):
            try:
                conn = self._acquire()
                break
            except _ConnectFailed as exc:
                if attempt == self._retries or not exc.transient:
                    raise StoreError(f"{self._where(action, key)}: {exc.message}") from None
                self._backoff(attempt)
        broken = True
        try:
            yield conn.sftp
            broken = False
        except Exception as exc:
            broken = _connection_error(exc)
            raise
        finally:
            self._release(conn, broken=broken or not conn.alive())

    def _connect(self) -> _Connection:
        """Open, verify and authenticate one SSH connection and start SFTP on it."""
        address = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        except socket.gaierror as exc:
            raise _ConnectFailed(f"cannot reach the server (cannot resolve {self.host}: "
                                 f"{exc.strerror})", transient=False) from None
        except TimeoutError:
            raise _ConnectFailed(f"cannot reach the server (no answer from {address} within "
                                 f"{self._timeout:g} s)", transient=False) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise _ConnectFailed(f"cannot reach the server ({reason} at {address})",
                                 transient=True) from None
        # Nagle's algorithm held back small requests (reads, window adjustments, opens,
        # closes) until an ACK the server delayed: one thread's 160 gets of 4 MiB took 5.8 s
        # with it, 1.3 s without; 4 threads' 2.3 s -> 1.5 s. The bulk of a write still fills
        # whole segments, and client CPU did not change.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        client = paramiko.SSHClient()
        try:
            for kind, key in self._known_keys().items():
                client.get_host_keys().add(self._host_key_name, kind, key)
            client.set_missing_host_key_policy(_HostKeyPolicy(self))
            pkey = self._private_key()
            password = self._password.value if self._password else None
            default_keys = pkey is None and password is None
            # ``timeout`` bounds the whole negotiation; it must outlast the banner timeout,
            # or on a silent server the two raced and the loser (the connection closed
            # under the banner read) looked like a dropped connection and was retried
            client.connect(self.host, self.port, username=self.username or None,
                           password=password, pkey=pkey, sock=sock, timeout=2 * self._timeout,
                           allow_agent=default_keys, look_for_keys=default_keys,
                           banner_timeout=self._timeout, auth_timeout=self._timeout,
                           channel_timeout=self._timeout,
                           # zlib in Python on encrypted packs only costs CPU
                           compress=False, transport_factory=_transport)
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(_KEEPALIVE)
            channel = transport.open_session(window_size=_WINDOW, timeout=self._timeout)
            channel.settimeout(self._timeout)
            channel.invoke_subsystem("sftp")
            sftp = _SFTP(channel)
            sftp.learn_limits()
        except BaseException as exc:
            client.close()
            sock.close()
            if isinstance(exc, _ConnectFailed | StoreError):
                raise
            if isinstance(exc, Exception):
                raise self._connect_failure(exc) from None
            raise
        return _Connection(client, sftp)

    def _connect_failure(self, exc: Exception) -> _ConnectFailed:
        """Name what went wrong while connecting; say whether a retry may help."""
        address = f"{self.host}:{self.port}"
        text = _scrub(" ".join(str(exc).split()), self._secrets) or type(exc).__name__
        if isinstance(exc, _UnknownHost):
            return _ConnectFailed(
                f"unknown host: {exc.name} is not in {self._known_hosts} (its "
                f"{exc.key.get_name()} key is {exc.key.fingerprint}); after checking that "
                f"fingerprint with the server's administrator, add it with `ssh-keyscan -p "
                f"{self.port} {self.host} >> {self._known_hosts}`, or connect once with host "
                f"key policy accept-new (MULTIBACKUP_SFTP_HOST_KEY_POLICY=accept-new)",
                transient=False)
        if isinstance(exc, BadHostKeyException):
            return _ConnectFailed(
                f"host key mismatch: {self._host_key_name} presented the "
                f"{exc.key.get_name()} key {exc.key.fingerprint}, but {self._known_hosts} "
                f"records {exc.expected_key.fingerprint}; this may be a man-in-the-middle "
                f"attack. If the server's key was changed on purpose, remove the old entry "
                f"with `ssh-keygen -R '{self._host_key_name}' -f {self._known_hosts}`",
                transient=False)
        if isinstance(exc, AuthenticationException) or "No authentication methods" in text:
            return _ConnectFailed(self._auth_failure(exc), transient=False)
        if isinstance(exc, IncompatiblePeer):
            return _ConnectFailed(f"cannot agree on algorithms with the server ({text})",
                                  transient=False)
        if isinstance(exc, paramiko.ChannelException | SFTPError) or "subsystem" in text:
            return _ConnectFailed(f"the server refused the SFTP subsystem ({text})",
                                  transient=False)
        if _caused_by(exc, TimeoutError):
            return _ConnectFailed(f"cannot reach the server (no SSH answer from {address} "
                                  f"within {self._timeout:g} s)", transient=False)
        if "SSH protocol banner" in text:
            cause = exc.__cause__ or exc.__context__
            reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else ""
            return _ConnectFailed(f"cannot reach the server ({address} closed the connection "
                                  f"before the SSH greeting{': ' + reason if reason else ''})",
                                  transient=True)
        # the server closed or reset the connection during the handshake (restarting,
        # overloaded: MaxStartups), or some other SSH-level failure
        return _ConnectFailed(f"cannot reach the server ({text})", transient=True)

    def _auth_failure(self, exc: Exception) -> str:
        who = f"user {self.username!r}" if self.username else "the current user"
        if self._key_file and self._password:
            tried = f"the key file {self._key_file} and the password"
        elif self._key_file:
            tried = f"the key file {self._key_file}"
        elif self._password:
            tried = "the password"
        else:
            tried = "ssh-agent and the default keys in ~/.ssh"
        if isinstance(exc, BadAuthenticationType):
            allowed = ", ".join(exc.allowed_types) or "none"
            return (f"authentication failed for {who} with {tried}: the server accepts only "
                    f"{allowed}")
        if "No authentication methods" in str(exc):
            return (f"authentication failed for {who}: no key file or password given, and no "
                    f"ssh-agent or default key (~/.ssh/id_*) found")
        return f"authentication failed for {who} with {tried} (wrong key or password?)"

    def _private_key(self) -> paramiko.PKey | None:
        """The key file, decrypted once per store (a failure here is final, not retried)."""
        if self._key_file is None:
            return None
        with self._key_lock:
            if self._key is None:
                self._key = self._load_key(self._key_file)
            return self._key

    def _load_key(self, path: str) -> paramiko.PKey:
        passphrase = self._passphrase.value if self._passphrase else None
        where = f"{self.description}: key file {path}"
        try:
            return paramiko.PKey.from_path(path, passphrase.encode() if passphrase else None)
        except OSError as exc:
            raise StoreError(f"{where}: cannot read it ({exc.strerror or exc})") from None
        except (PasswordRequiredException, TypeError):
            raise StoreError(f"{where}: the key is encrypted, give its passphrase "
                             f"(MULTIBACKUP_SFTP_KEY_PASSPHRASE)") from None
        except Exception as exc:  # cryptography: ValueError; paramiko: SSHException
            if self._passphrase is not None:
                raise StoreError(f"{where}: cannot decrypt it (wrong passphrase?) or not a "
                                 f"private key") from None
            detail = _scrub(" ".join(str(exc).split()), self._secrets)
            raise StoreError(f"{where}: not a usable private key ({detail})") from None

    def _known_keys(self) -> dict[str, paramiko.PKey]:
        """The keys known_hosts records for this server, by key type."""
        with _known_hosts_lock:
            if self._host_keys is None:
                keys = paramiko.HostKeys()
                paths = [self._known_hosts]
                if self._read_system_known_hosts:
                    paths.append(_SYSTEM_KNOWN_HOSTS)
                for path in paths:
                    if not os.path.exists(path):
                        continue
                    try:
                        keys.load(path)
                    except Exception as exc:
                        raise StoreError(f"{self.description}: cannot read the known hosts "
                                         f"file {path} ({exc})") from None
                self._host_keys = keys
            found = self._host_keys.lookup(self._host_key_name)
            return dict(found) if found else {}

    def _remember_host_key(self, name: str, key: paramiko.PKey) -> None:
        """accept-new: append a first-seen server key to known_hosts, as ``ssh`` would."""
        with _known_hosts_lock:
            assert self._host_keys is not None
            known = self._host_keys.lookup(name)
            if known and known.get(key.get_name()) == key:
                return  # another connection of this store just added it
            directory = os.path.dirname(self._known_hosts)
            try:
                if directory:
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                fd = os.open(self._known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as out:
                    out.write(f"{name} {key.get_name()} {key.get_base64()}\n")
            except OSError as exc:
                raise StoreError(f"{self.description}: cannot add the host key to "
                                 f"{self._known_hosts} ({exc.strerror or exc})") from None
            self._host_keys.add(name, key.get_name(), key)
            _log.warning("%s: added the %s host key %s of %s to %s", self.description,
                         key.get_name(), key.fingerprint, name, self._known_hosts)

    # -- running operations ----------------------------------------------------------------

    def _run(self, action: str, key: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run ``operation`` on a pooled channel; reconnect and retry when the connection drops.

        Every operation here is idempotent (writes go through a fresh temp file and a
        rename), so running it again after a lost connection is safe.
        """
        where = self._where(action, key)
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                conn = self._acquire()
            except _ConnectFailed as exc:
                if last or not exc.transient:
                    raise StoreError(f"{where}: {exc.message}") from None
                _log.debug("%s: %s; retrying", where, exc.message)
                self._backoff(attempt)
                continue
            try:
                result = operation(conn.sftp)
            except StoreError:
                self._release(conn, broken=not conn.alive())
                raise
            except Exception as exc:
                if _connection_error(exc) or not conn.alive():
                    self._release(conn, broken=True)
                    reason = _scrub(" ".join(str(exc).split()), self._secrets)
                    reason = reason or type(exc).__name__
                    if last:
                        raise StoreError(f"{where}: connection to the server lost "
                                         f"({reason})") from None
                    _log.debug("%s: connection lost (%s); reconnecting", where, reason)
                    self._backoff(attempt)
                    continue
                self._release(conn)
                raise self._error(exc, where) from None
            self._release(conn)
            return result
        raise AssertionError("unreachable")

    @staticmethod
    def _backoff(attempt: int) -> None:
        delay = min(0.25 * 2 ** attempt, 5.0)
        time.sleep(delay * random.uniform(0.8, 1.2))

    def _error(self, exc: Exception, where: str) -> StoreError:
        """One line for an SFTP status error (the connection itself is fine)."""
        text = _scrub(" ".join(str(exc).split()), self._secrets) or type(exc).__name__
        code = exc.errno if isinstance(exc, OSError) else None
        if code == errno.ENOENT:
            return ObjectNotFound(f"{where}: object not found")
        if code == errno.EACCES:
            return StoreError(f"{where}: permission denied on the server")
        if "unsupported" in text.lower():
            return StoreError(f"{where}: the server does not support this operation ({text})")
        return StoreError(f"{where}: {text}")

    # -- SFTP requests -------------------------------------------------------------------

    @staticmethod
    def _open_handle(sftp: paramiko.SFTPClient, path: str, flags: int) -> bytes:
        kind, msg = sftp._request(CMD_OPEN, path, flags, SFTPAttributes())
        if kind != CMD_HANDLE:
            raise SFTPError("expected a file handle")
        return msg.get_binary()

    def _upload(self, sftp: paramiko.SFTPClient, path: str, data: bytes | bytearray) -> None:
        """Create ``path`` (it must not exist) holding ``data``; every reply is checked.

        After a connection error nothing is cleaned up here: the connection is discarded.
        """
        view = memoryview(data).cast("B")
        handle = self._open_handle(sftp, path, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL)
        xfer = _Transfer(sftp, handle)
        size = getattr(sftp, "write_size", _CHUNK)
        in_flight = _in_flight(size)
        pos = 0
        while pos < len(view) and xfer.error is None:
            while pos < len(view) and len(xfer.pending) < in_flight:
                chunk = view[pos:pos + size]
                xfer.write(pos, chunk)
                pos += len(chunk)
            xfer.wait_one()
        xfer.drain()
        if xfer.error is not None:
            _close_quietly(sftp, handle)
            raise xfer.error
        sftp._request(CMD_CLOSE, handle)  # a failing close (NFS, quota) is a failed write

    def _download(self, sftp: paramiko.SFTPClient, path: str, offset: int,
                  length: int | None) -> bytes:
        """Read ``length`` bytes from ``offset`` (to the end when None), many reads in flight."""
        if length is None:
            attrs = sftp.stat(path)
            if not stat_mod.S_ISREG(attrs.st_mode or 0):
                raise OSError(errno.ENOENT, "not a regular file")
            length = (attrs.st_size or 0) - offset
            if length < 0:
                raise StoreError(f"offset {offset} is beyond the end of the object")
        handle = self._open_handle(sftp, path, SFTP_FLAG_READ)
        buf = bytearray(length)
        view = memoryview(buf)
        got = 0
        xfer = _Transfer(sftp, handle)
        size = getattr(sftp, "read_size", _CHUNK)
        in_flight = _in_flight(size)
        todo = deque((o, min(size, offset + length - o))
                     for o in range(offset, offset + length, size))
        while (todo or xfer.pending) and xfer.error is None and not xfer.eof:
            while todo and len(xfer.pending) < in_flight:
                xfer.read(*todo.popleft())
            start, asked, n = xfer.wait_one(view, offset)
            got += n
            if 0 < n < asked:  # servers may answer with less than asked
                todo.append((start + n, asked - n))
        xfer.drain()
        _close_quietly(sftp, handle)
        if xfer.error is not None:
            raise xfer.error
        if got != length:
            raise StoreError(f"short read: got {got} of {length} bytes (is the object shorter?)")
        return bytes(buf)

    def _statvfs(self, sftp: paramiko.SFTPClient, path: str) -> tuple[int, bool] | None:
        """Free bytes and read-only flag of the server file system (OpenSSH extension)."""
        try:
            kind, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", path)
        except Exception:
            return None
        if kind != CMD_EXTENDED_REPLY:
            return None
        values = [msg.get_int64() for _ in range(11)]
        frsize, bavail, flags = values[1], values[4], values[9]
        return bavail * frsize, bool(flags & _STATVFS_READ_ONLY)

    def _diagnose_failure(self, sftp: paramiko.SFTPClient, where: str, size: int) -> StoreError:
        """Explain a write's generic "Failure" status.

        OpenSSH reports ENOSPC, EDQUOT, EROFS and EIO all as SSH_FX_FAILURE; the file system
        statistics tell a full disk or a read-only one apart. Called before the partial
        temp file is removed, so a disk that just filled up still looks full.
        """
        info = (self._statvfs(sftp, posixpath.join(self.root, TMP_DIR))
                or self._statvfs(sftp, self.root))
        if info is None:
            return StoreError(f"{where}: the server reported a failure (a full disk or an "
                              f"exceeded quota shows like this)")
        free, read_only = info
        if read_only:
            return StoreError(f"{where}: the server's file system is read-only")
        if free < size:
            return StorageFull(f"{where}: no space left on the server ({free} bytes free)")
        return StoreError(f"{where}: the server reported a failure ({free} bytes free, so "
                          f"perhaps a quota or an I/O error)")

    def ensure_dir(self, sftp: paramiko.SFTPClient, path: str) -> None:
        """Create ``path`` and its parents unless known to exist; tolerate racing creators."""
        if path in self._dirs or path in ("/", "", "."):
            return
        try:
            attrs = sftp.stat(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            self.ensure_dir(sftp, posixpath.dirname(path))
            try:
                sftp.mkdir(path)
            except OSError as exc:
                try:  # created meanwhile by another writer?
                    attrs = sftp.stat(path)
                except OSError:
                    raise exc from None
                if not stat_mod.S_ISDIR(attrs.st_mode or 0):
                    raise
        else:
            if not stat_mod.S_ISDIR(attrs.st_mode or 0):
                raise StoreError(f"{self.description}: {path} exists and is not a directory")
        self._dirs.add(path)

    def _forget_dirs(self, path: str) -> None:
        """Another client removed a directory we had cached: forget it and its parents."""
        while path not in ("/", "", "."):
            self._dirs.discard(path)
            path = posixpath.dirname(path)

    def _is_file(self, sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            return stat_mod.S_ISREG(sftp.stat(path).st_mode or 0)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise

    def _rename(self, sftp: paramiko.SFTPClient, tmp: str, path: str, replace: bool) -> None:
        if not replace:
            # SSH_FXP_RENAME refuses an existing target; OpenSSH implements it with link()
            # and unlink(), so the check and the creation are one atomic step.
            sftp.rename(tmp, path)
            return
        if self._posix_rename:
            try:
                sftp.posix_rename(tmp, path)
                return
            except OSError as exc:
                if exc.errno is not None or "unsupported" not in str(exc).lower():
                    raise
                self._posix_rename = False  # not OpenSSH: fall back to remove + rename
        try:
            sftp.remove(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        sftp.rename(tmp, path)

    def _store(self, sftp: paramiko.SFTPClient, key: str, data: bytes | bytearray,
               replace: bool, renamed: list[bool]) -> None:
        """Write a temp file, then rename it to the key (replacing, or create-only)."""
        where = self._where("writing", key)
        path = self._path(key)
        tmp_dir = posixpath.join(self.root, TMP_DIR)
        tmp = posixpath.join(tmp_dir, f"{uuid.uuid4().hex}.tmp")
        parent = posixpath.dirname(path)
        try:
            self.ensure_dir(sftp, tmp_dir)
            self.ensure_dir(sftp, parent)
            self._upload(sftp, tmp, data)
            renamed[0] = True
            try:
                self._rename(sftp, tmp, path, replace)
            except OSError as exc:
                if not replace and self._is_file(sftp, path):
                    raise ObjectExists(f"{where}: object already exists") from None
                if exc.errno != errno.ENOENT:
                    raise
                # a directory we had cached was removed by someone else: recreate it
                self._forget_dirs(parent)
                self.ensure_dir(sftp, parent)
                self._rename(sftp, tmp, path, replace)
        except BaseException as exc:
            error: BaseException = exc
            if isinstance(exc, OSError) and not _connection_error(exc) and _alive(sftp):
                if exc.errno is None and "unsupported" not in str(exc).lower():
                    error = self._diagnose_failure(sftp, where, len(data))
                elif exc.errno == errno.ENOENT:
                    error = StoreError(f"{where}: a directory or the temporary file "
                                       f"vanished during the write")
            if not _connection_error(exc) and _alive(sftp):
                try:
                    sftp.remove(tmp)
                except (OSError, EOFError):
                    pass
            if error is exc:
                raise
            raise error from None

    # -- ObjectStore -----------------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray) -> None:
        """Replace or create ``key``: temp file, then posix-rename over the old object."""
        renamed = [False]
        self._run("writing", key, lambda sftp: self._store(sftp, key, data, True, renamed))

    def put_new(self, key: str, data: bytes) -> None:
        """Create-only: temp file, then a plain SFTP rename, which fails if the key exists.

        Race-safe on OpenSSH: its rename is link() + unlink(), and link() atomically fails
        when the target exists, so of two writers exactly one wins (no hard-link extension
        is needed on our side). Only on file systems without hard links does OpenSSH fall
        back to a check then a rename. Opening the key itself with O_EXCL would be atomic
        too, but would expose a half-written object and leave it behind after a crash.
        """
        renamed = [False]

        def attempt(sftp: paramiko.SFTPClient) -> None:
            earlier = renamed[0]
            try:
                self._store(sftp, key, data, False, renamed)
            except ObjectExists:
                # the reply to an earlier attempt's rename may have been lost with the
                # connection: if the object holds exactly our bytes, that rename won
                if earlier and self._download(sftp, self._path(key), 0, None) == bytes(data):
                    return
                raise

        self._run("writing", key, attempt)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write an object from chunks without holding it whole; returns its size.

        For migrations of objects too large for memory. Like ``put``, the bytes go to a temp
        file that is renamed over the key only when complete, so a failure (or an exception
        from ``chunks``) never leaves a truncated object. Not retried: ``chunks`` is consumed.
        """
        where = self._where("writing", key)
        path = self._path(key)
        tmp_dir = posixpath.join(self.root, TMP_DIR)
        tmp = posixpath.join(tmp_dir, f"{uuid.uuid4().hex}.tmp")
        size = 0
        with self.session("writing", key) as sftp:
            try:
                self.ensure_dir(sftp, tmp_dir)
                self.ensure_dir(sftp, posixpath.dirname(path))
                with sftp.open(tmp, "wb") as fh:
                    fh.set_pipelined(True)
                    for chunk in chunks:
                        fh.write(chunk)
                        size += len(chunk)
                self._rename(sftp, tmp, path, True)
            except BaseException as exc:
                if not _connection_error(exc) and _alive(sftp):
                    with contextlib.suppress(OSError, EOFError):
                        sftp.remove(tmp)
                if isinstance(exc, OSError) and not _connection_error(exc):
                    raise self._error(exc, where) from None
                raise
        return size

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        if length == 0:
            return b""

        def read(sftp: paramiko.SFTPClient) -> bytes:
            try:
                return self._download(sftp, path, offset, length)
            except StoreError as exc:  # a short read: name the object
                raise StoreError(f"{self._where('reading', key)}: {exc}") from None

        return self._run("reading", key, read)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)

        def stat(sftp: paramiko.SFTPClient) -> ObjectInfo:
            attrs = sftp.stat(path)
            if not stat_mod.S_ISREG(attrs.st_mode or 0):
                raise ObjectNotFound(f"{self._where('reading metadata of', key)}: "
                                     f"not an object (a directory?)")
            return _info(key, attrs)

        return self._run("reading metadata of", key, stat)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return self._run("reading metadata of", key, lambda sftp: self._is_file(sftp, path))

    def delete(self, key: str) -> None:
        path = self._path(key)

        def remove(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

        self._run("deleting", key, remove)

    def _listdir(self, directory: str, prefix: str) -> list[SFTPAttributes]:
        path = posixpath.join(self.root, directory) if directory else self.root

        def listdir(sftp: paramiko.SFTPClient) -> list[SFTPAttributes]:
            try:
                return sftp.listdir_attr(path)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return []
                raise

        return self._run("listing", prefix or "/", listdir)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects below ``prefix``, depth first in name order; the temp directory is skipped.

        Each directory is listed on its own pooled connection, released before yielding,
        so a caller may use the store while iterating (even with one connection).
        """
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        self.passed_over = []
        yield from self._walk(start, prefix)

    def _walk(self, directory: str, prefix: str) -> Iterator[ObjectInfo]:
        entries = sorted(self._listdir(directory, prefix), key=lambda a: a.filename)
        for attrs in entries:
            key = f"{directory}/{attrs.filename}" if directory else attrs.filename
            mode = attrs.st_mode or 0
            if stat_mod.S_ISDIR(mode):
                if key == TMP_DIR:
                    continue
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(key, prefix)
            elif stat_mod.S_ISREG(mode) and key.startswith(prefix):
                yield _info(key, attrs)
            elif key.startswith(prefix) and (what := not_an_object(mode)):
                self.passed_over.append((_info(key, attrs), what))

    def remove_empty_temporary(self) -> None:
        """Remove the temporary directory when nothing is left in it, so a migration into
        an SFTP folder leaves only what it copied. The server's rmdir refuses a directory
        that is not empty, so another writer's file there is never touched."""
        tmp_dir = posixpath.join(self.root, TMP_DIR)

        def rmdir(sftp: paramiko.SFTPClient) -> None:
            with contextlib.suppress(OSError):  # not empty, gone, or not ours to remove
                sftp.rmdir(tmp_dir)

        with contextlib.suppress(StoreError):  # tidying only: the copy is done
            self._run("tidying", TMP_DIR, rmdir)

    def sweep_temporary(self, older_than: float) -> int:
        """Remove temp files of interrupted writes last modified over ``older_than`` s ago.

        Ages use the server's modification times against this machine's clock, so keep
        ``older_than`` well above any clock skew (prune uses an hour).
        """
        tmp_dir = posixpath.join(self.root, TMP_DIR)

        def sweep(sftp: paramiko.SFTPClient) -> int:
            try:
                entries = sftp.listdir_attr(tmp_dir)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return 0
                raise
            cutoff = time.time() - older_than
            removed = 0
            for attrs in entries:
                if stat_mod.S_ISREG(attrs.st_mode or 0) and (attrs.st_mtime or 0) < cutoff:
                    try:
                        sftp.remove(posixpath.join(tmp_dir, attrs.filename))
                        removed += 1
                    except OSError as exc:
                        if exc.errno != errno.ENOENT:  # swept by someone else meanwhile
                            raise
            return removed

        return self._run("sweeping", TMP_DIR, sweep)


def _close_all(connections: list[_Connection]) -> None:
    for conn in connections:
        conn.close()


def _close_quietly(sftp: paramiko.SFTPClient, handle: bytes) -> None:
    try:
        sftp._request(CMD_CLOSE, handle)
    except (OSError, EOFError):
        pass  # only a status error: the handle is gone either way


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _connection_error(exc: BaseException) -> bool:
    """True when the connection, not the request, failed (so reconnecting may help)."""
    return isinstance(exc, EOFError | SSHException | SFTPError | TimeoutError | ConnectionError)
