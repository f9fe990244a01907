"""A directory on an FTP or FTPS server as a backup source and as a restore target.

``ftp://[user@]host[:port]/path`` and ``ftps://...`` (explicit TLS: ``AUTH TLS`` on the
usual port, then ``PROT P`` so that file data is encrypted too). The path is absolute on
the server; ``/~/path`` is relative to the login directory. Without a user name the login
is anonymous. The password comes from the config layer or ``MULTIBACKUP_SOURCE_PASSWORD``;
an FTPS server's certificate is checked against the system's CAs plus, when given, the
PEM file in ``ca_file`` / ``MULTIBACKUP_FTPS_CA_FILE`` (for a private CA or a self-signed
server certificate).

FTP carries one transfer per control connection and ``ftplib`` is not thread-safe, so
each reader thread takes a connection of its own from a small pool. Directories are listed
with ``MLSD`` (exact sizes and UTC modification times); servers without it (vsftpd) are
listed with ``LIST`` plus one ``MDTM`` per file for its time. A file is read from the data
connection as it arrives; the server's final reply (226) and the byte count are checked
before the file counts as read.

As a restore target each file is stored under a hidden temporary name, given its time
(``MFMT``) and mode (``SITE CHMOD``) where the server offers them, and renamed into place
(``RNFR``/``RNTO``). An existing file is not replaced unless ``overwrite`` is set; that
check and the rename are two commands, so unlike SFTP it is not atomic. FTP cannot create
symbolic links: they are reported, not restored.

Losing the server for good in the middle of a run ends the run without a snapshot; a
single file the server refuses is skipped and named.
"""

from __future__ import annotations

import calendar
import contextlib
import ftplib
import os
import posixpath
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from multibackup.errors import SourceError, SourceUnavailable, UsageError
from multibackup.secret import Secret
from multibackup.sources.base import (
    DIR,
    FILE,
    SYMLINK,
    UNKNOWN_SIZE,
    Entry,
    safe_relative,
    temporary_name,
)
from multibackup.sources.url import PASSWORD_ENV, redacted

PARALLEL = 4  # files read at once, one control connection each
CA_FILE_ENV = "MULTIBACKUP_FTPS_CA_FILE"
_TIMEOUT = 20.0
_IDLE_CHECK = 15.0  # a connection idle longer than this is checked with NOOP before reuse
_MAX_DEPTH = 256  # a server that does not name directories uniquely could loop through links
_NS = 1_000_000_000
_FACTS = ("type", "size", "modify", "unix.mode", "unique")


class _ConnectFailed(Exception):
    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class _FTPS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session.

    Servers such as vsftpd (``require_ssl_reuse``) and FileZilla Server refuse a data
    connection that does not, so that nobody else can connect to the passive port first.
    """

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = getattr(self.sock, "session", None)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _reply(exc: BaseException) -> str:
    """The server's reply (``550 ...``) or the socket error, on one line."""
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    return _one_line(exc) or type(exc).__name__


def _code(exc: BaseException) -> str:
    return str(exc)[:3]


def _failure(exc: BaseException, action: str) -> tuple[SourceError, bool]:
    """The error for a command or transfer that failed while ``action``, and whether its
    control connection is of no further use (the server closed it, or it broke)."""
    if isinstance(exc, (ftplib.error_perm, ftplib.error_temp)):
        return SourceError(_reply(exc)), _code(exc) == "421"  # 421: "closing connection"
    if isinstance(exc, ValueError):  # ftplib refuses a line break in a command
        return SourceError(f"cannot be named over FTP ({_reply(exc)})"), False
    return SourceError(f"connection to the server lost while {action} ({_reply(exc)})"), True


def _ftp_time(text: str) -> int:
    """``YYYYMMDDHHMMSS[.fff]`` (UTC, RFC 3659) in nanoseconds since the epoch."""
    text = text.strip()
    base, _, frac = text.partition(".")
    seconds = calendar.timegm(time.strptime(base[:14], "%Y%m%d%H%M%S"))
    fraction = int((frac + "000000000")[:9]) if frac.isdigit() else 0
    return seconds * _NS + fraction


def _mode_of(perms: str) -> int:
    """The permission bits of an ``ls -l`` mode string such as ``-rwxr-x---``."""
    mode = 0
    for i, ch in enumerate(perms[1:10]):
        if ch not in "-STL":
            mode |= 1 << (8 - i)
    return mode


@dataclass
class _Server:
    scheme: str
    host: str
    port: int
    user: str
    root: str  # absolute once resolved; relative to the login directory before
    password: Secret | None = field(default=None, repr=False)
    ca_file: str = ""
    password_from: str = f"${PASSWORD_ENV} or the config's password"  # for the hint

    @property
    def tls(self) -> bool:
        return self.scheme == "ftps"

    def describe(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        path = self.root if self.root.startswith("/") else "/~/" + self.root
        return f"{self.scheme}://{user}{shown}:{self.port}{path.rstrip('/') or '/'}"


def _parse(url: str, credentials: Mapping[str, str],
           password_from: str | None = None) -> _Server:
    """``password_from``: where the caller looks for a password (it passes what it found in
    ``credentials``); by default the config's or ``MULTIBACKUP_SOURCE_PASSWORD``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    shown = repr(redacted(url))
    env_names = password_from or f"${PASSWORD_ENV} or the config's password"
    try:
        port = parts.port or 21
    except ValueError:
        raise UsageError(f"invalid FTP URL {shown}: bad port") from None
    host = parts.hostname or ""
    if scheme not in ("ftp", "ftps") or not host:
        raise UsageError(f"invalid FTP URL {shown}: expected {scheme}://[user@]host[:port]/path")
    if parts.password is not None:
        raise UsageError(f"invalid FTP URL {shown}: a password in the URL would show in the "
                         f"process list; give it in {env_names}")
    if parts.query or parts.fragment:
        raise UsageError(f"invalid FTP URL {shown}: no query or fragment expected")
    path = unquote(parts.path) or "/"
    if "\r" in path or "\n" in path:
        raise UsageError(f"invalid FTP URL {shown}: line breaks in the path")
    if path == "/~" or path.startswith("/~/"):
        root = posixpath.normpath(path[3:] or ".")
        if root.startswith(".."):
            raise UsageError(f"invalid FTP URL {shown}: the path leaves the login directory")
    else:
        root = "/" + posixpath.normpath(path).lstrip("/")
    password = credentials.get("password") or (
        "" if password_from else os.environ.get(PASSWORD_ENV, ""))
    ca_file = credentials.get("ca_file") or os.environ.get(CA_FILE_ENV, "").strip()
    return _Server(scheme, host, port, unquote(parts.username or ""), root,
                   Secret(password) if password else None, os.path.expanduser(ca_file),
                   env_names)


class _Connections:
    """A small pool of logged-in control connections, one per thread at a time.

    A server that takes fewer connections than asked for (``421 Too many connections``)
    leaves the pool at the number it did accept, instead of failing the run.
    """

    def __init__(self, server: _Server, size: int) -> None:
        self.server = server
        self.limit = max(1, size)
        self.features: set[str] | None = None
        self._idle: list[tuple[ftplib.FTP, float]] = []
        self._open = 0
        self._cond = threading.Condition()

    # -- one connection --------------------------------------------------------------------

    def _connect(self) -> ftplib.FTP:
        s = self.server
        address = f"{s.host}:{s.port}"
        ftp: ftplib.FTP
        if s.tls:
            context = ssl.create_default_context()
            if s.ca_file:
                try:
                    context.load_verify_locations(s.ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise _ConnectFailed(f"cannot load the CA file {s.ca_file} "
                                         f"({_reply(exc)})", transient=False) from None
            ftp = _FTPS(context=context, timeout=_TIMEOUT)
        else:
            ftp = ftplib.FTP(timeout=_TIMEOUT)
        try:
            ftp.connect(s.host, s.port)
        except socket.gaierror as exc:
            raise _ConnectFailed(f"cannot reach the server (cannot resolve {s.host}: "
                                 f"{exc.strerror})", transient=False) from None
        except TimeoutError:
            raise _ConnectFailed(f"cannot reach the server (no answer from {address} within "
                                 f"{_TIMEOUT:g} s)", transient=False) from None
        except OSError as exc:
            raise _ConnectFailed(f"cannot reach the server ({_reply(exc)} at {address})",
                                 transient=True) from None
        except (ftplib.Error, EOFError) as exc:  # 421 in the greeting: busy, or too many
            raise _ConnectFailed(f"the server refused the connection ({_reply(exc)})",
                                 transient=True) from None
        try:
            self._login(ftp)
        except BaseException:
            with contextlib.suppress(Exception):
                ftp.close()
            raise
        return ftp

    def _login(self, ftp: ftplib.FTP) -> None:
        s = self.server
        step = "starting TLS"
        try:
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
            step = "logging in"
            if s.user:
                ftp.login(s.user, s.password.value if s.password else "")
            else:
                ftp.login()  # anonymous
            if isinstance(ftp, ftplib.FTP_TLS):
                step = "protecting the data connections"
                ftp.prot_p()
            step = "setting up the session"
            if self.features is None:
                self.features = self._feat(ftp)
            if "UTF8" in self.features:
                with contextlib.suppress(ftplib.Error):
                    ftp.sendcmd("OPTS UTF8 ON")
            if "MLST" in self.features:
                with contextlib.suppress(ftplib.Error):
                    ftp.sendcmd("OPTS MLST " + "".join(f + ";" for f in _FACTS))
            ftp.voidcmd("TYPE I")
        except ssl.SSLCertVerificationError as exc:
            raise _ConnectFailed(
                f"the server's TLS certificate is not trusted ({exc.verify_message}); if it is "
                f"the right server, give its CA certificate (or its own, when self-signed) in "
                f"{CA_FILE_ENV}", transient=False) from None
        except ssl.SSLError as exc:
            raise _ConnectFailed(f"TLS failed while {step} ({_reply(exc)})",
                                 transient=False) from None
        except ftplib.error_perm as exc:
            if step == "starting TLS":
                raise _ConnectFailed(f"the server does not offer TLS (AUTH TLS: {_reply(exc)}); "
                                     "use ftp:// only on a network you trust",
                                     transient=False) from None
            if step == "logging in":
                who = f"user {s.user!r}" if s.user else "anonymous login"
                if s.user and s.password is None:
                    hint = f"no password given: set {s.password_from}"
                else:
                    hint = "wrong user name or password?"
                raise _ConnectFailed(f"login refused for {who} ({_reply(exc)}; {hint})",
                                     transient=False) from None
            raise _ConnectFailed(f"the server refused {step} ({_reply(exc)})",
                                 transient=False) from None
        except (ftplib.Error, OSError, EOFError) as exc:
            raise _ConnectFailed(f"connection lost while {step} ({_reply(exc)})",
                                 transient=_code(exc) == "421" or not isinstance(exc, ftplib.Error)
                                 ) from None

    @staticmethod
    def _feat(ftp: ftplib.FTP) -> set[str]:
        """The server's FEAT keywords (``MLST``, ``MFMT``, ``UTF8``, ...), upper case."""
        try:
            text = ftp.sendcmd("FEAT")
        except ftplib.Error:
            return set()
        features = set()
        for line in text.splitlines()[1:]:
            if line.startswith(" "):
                features.add(line.split()[0].upper())
        return features

    # -- the pool --------------------------------------------------------------------------

    def acquire(self) -> ftplib.FTP:
        """A logged-in connection; raises ``_ConnectFailed`` when none can be had."""
        while True:
            conn: ftplib.FTP | None = None
            with self._cond:
                while not self._idle and self._open >= self.limit:
                    self._cond.wait()
                if self._idle:
                    conn, since = self._idle.pop()
                else:
                    self._open += 1
            if conn is not None:
                if time.monotonic() - since < _IDLE_CHECK or _answers(conn):
                    return conn
                self.release(conn, broken=True)  # the server dropped it meanwhile
                continue
            try:
                return self._connect()
            except _ConnectFailed as exc:
                with self._cond:
                    self._open -= 1
                    self._cond.notify_all()
                    if exc.transient and self._open > 0:
                        self.limit = self._open  # the server takes no more: share those
                        continue
                raise

    def release(self, conn: ftplib.FTP, broken: bool = False) -> None:
        if broken:
            with contextlib.suppress(Exception):
                conn.close()
        with self._cond:
            if broken:
                self._open -= 1
            else:
                self._idle.append((conn, time.monotonic()))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle = [conn for conn, _ in self._idle]
            self._idle.clear()
            self._open -= len(idle)
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.quit()
            with contextlib.suppress(Exception):
                conn.close()


def _answers(conn: ftplib.FTP) -> bool:
    try:
        conn.voidcmd("NOOP")
        return True
    except (ftplib.Error, OSError, EOFError):
        return False


class _Client:
    """Runs commands on pooled connections and turns failures into the engine's errors.

    A command the server refuses is a ``SourceError`` (that file or directory is skipped);
    a server that cannot be reached even on a new connection ends the run.
    """

    def __init__(self, server: _Server, size: int) -> None:
        self.server = server
        self.pool = _Connections(server, size)

    @property
    def features(self) -> set[str]:
        return self.pool.features or set()

    def connect(self) -> None:
        """The first connection, made at once: bad servers or logins fail early, as
        ``SourceError``; a root relative to the login directory is made absolute."""
        try:
            conn = self.pool.acquire()
        except _ConnectFailed as exc:
            raise SourceError(f"{self.server.describe()}: {exc.message}") from None
        try:
            if not self.server.root.startswith("/"):
                home = conn.pwd()
                if not home.startswith("/"):
                    raise SourceError(f"{self.server.describe()}: the server's login directory "
                                      f"{home!r} is not a path; give an absolute path")
                self.server.root = posixpath.normpath(posixpath.join(home, self.server.root))
        except (ftplib.Error, OSError, EOFError) as exc:
            self.pool.release(conn, broken=True)
            raise SourceError(f"{self.server.describe()}: {_reply(exc)}") from None
        self.pool.release(conn)

    def acquire(self) -> ftplib.FTP:
        try:
            return self.pool.acquire()
        except _ConnectFailed as exc:
            raise SourceUnavailable(f"{self.server.describe()}: {exc.message}") from None

    def run(self, action: str, operation: Callable[[ftplib.FTP], Any]) -> Any:
        """``operation`` (idempotent: a listing, a check, a directory) on a pooled
        connection; once more on a new one if the connection was lost meanwhile."""
        for attempt in (1, 2):
            conn = self.acquire()
            broken = True
            try:
                result = operation(conn)
                broken = False
                return result
            except (ftplib.error_perm, ftplib.error_temp) as exc:
                broken = _code(exc) == "421"  # "closing control connection"
                raise SourceError(_reply(exc)) from None
            except ValueError as exc:  # ftplib refuses a line break in a command
                broken = False
                raise SourceError(f"cannot be named over FTP ({_reply(exc)})") from None
            except (ftplib.Error, OSError, EOFError) as exc:
                if attempt == 2:
                    raise SourceError(f"connection to the server lost while {action} "
                                      f"({_reply(exc)})") from None
            finally:
                self.pool.release(conn, broken=broken)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.pool.close()


class _Reader:
    """The data connection of a ``RETR`` as a binary stream that counts its bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.count = 0

    def readinto(self, buffer: Any) -> int:
        n = self.file.readinto(buffer) or 0
        self.count += n
        return n

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.count += len(data)
        return data

    def close(self, complete: bool) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        if complete and isinstance(self.sock, ssl.SSLSocket):
            with contextlib.suppress(OSError, ValueError):
                self.sock.unwrap()  # a clean TLS end, as ftplib's own transfers do
        with contextlib.suppress(OSError):
            self.sock.close()


def _mlst(conn: ftplib.FTP, full: str) -> dict[str, str]:
    """The facts ``MLST`` states about one path (keys in lower case)."""
    reply = conn.sendcmd("MLST " + full)
    facts: dict[str, str] = {}
    for line in reply.splitlines()[1:-1]:
        for fact in line.strip().split(" ", 1)[0].split(";"):
            key, sep, value = fact.partition("=")
            if sep:
                facts[key.lower()] = value
    return facts


def _entry_from_facts(name: str, facts: dict[str, str]) -> Entry | None:
    kind = facts.get("type", "").lower()
    try:
        mtime = _ftp_time(facts["modify"]) if "modify" in facts else 0
    except ValueError:
        mtime = 0
    try:
        mode: int | None = int(facts["unix.mode"], 8) & 0o7777
    except (KeyError, ValueError):
        mode = None  # the server does not say: the usual defaults
    if kind == "file":
        size = int(facts["size"]) if facts.get("size", "").isdigit() else UNKNOWN_SIZE
        if not mtime:
            size = UNKNOWN_SIZE  # nothing to tell a change by: read it on every run
        return Entry(name, FILE, size=size, mtime_ns=mtime,
                     mode=0o644 if mode is None else mode)
    if kind == "dir":
        return Entry(name, DIR, mtime_ns=mtime, mode=0o755 if mode is None else mode)
    if kind.startswith("os.unix=slink:"):
        target = facts["type"].split(":", 1)[1]
        if target:
            return Entry(name, SYMLINK, mtime_ns=mtime, mode=0o777, target=target)
    return None  # cdir, pdir, devices, links without their target


class FTPSource:
    """A remote directory tree over FTP or FTPS, read one file per pooled connection."""

    complete_only = False
    parallel = PARALLEL

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.scheme = server.scheme
        self._client = _Client(server, PARALLEL + 1)  # + the walk's listings
        self._unique: dict[str, str] = {}  # directory -> the server's unique id (MLSD)
        self._mlsd = True

    def describe(self) -> str:
        return self.server.describe()

    def _full(self, path: str) -> str:
        return posixpath.join(self.server.root, path) if path else self.server.root

    def check(self) -> None:
        self._client.connect()
        self._mlsd = "MLST" in self._client.features
        if self._mlsd:  # the root's own id, so a link back up to it is seen as a loop
            with contextlib.suppress(SourceError):
                unique = self._client.run("checking", lambda c: _mlst(c, self.server.root))
                if unique.get("unique"):
                    self._unique[""] = unique["unique"]
        try:
            self.list_dir("")  # the root must be a readable directory
        except SourceError as exc:
            raise SourceError(f"{self.describe()}: {exc}") from None

    def list_dir(self, path: str) -> list[Entry]:
        if path.count("/") >= _MAX_DEPTH:
            raise SourceError(f"more than {_MAX_DEPTH} directory levels (a loop?); skipped")
        own = self._unique.get(path) if path else None
        if own is not None:
            parts = path.split("/")
            ancestors = ["/".join(parts[:i]) for i in range(len(parts))]
            if any(self._unique.get(a) == own for a in ancestors):
                raise SourceError("this directory is one of its own parents on the server "
                                  "(a link?); skipped")
        full = self._full(path)
        entries = self._client.run("listing", lambda conn: self._listing(conn, full, path))
        return sorted(entries, key=lambda e: e.name)

    def _listing(self, conn: ftplib.FTP, full: str, path: str) -> list[Entry]:
        try:
            if self._mlsd:
                try:
                    return self._mlsd_listing(conn, full, path)
                except ftplib.error_perm as exc:
                    if _code(exc) not in ("500", "502", "504"):
                        raise
                    self._mlsd = False  # FEAT promised more than the server does
            return self._list_listing(conn, full)
        finally:
            # listings switch the connection to ASCII (TYPE A); file transfers on this
            # pooled connection must get the bytes as they are
            with contextlib.suppress(ftplib.Error, OSError, EOFError):
                conn.voidcmd("TYPE I")

    def _mlsd_listing(self, conn: ftplib.FTP, full: str, path: str) -> list[Entry]:
        entries = []
        for name, facts in conn.mlsd(full):
            if name in (".", "..") or "/" in name:
                continue
            entry = _entry_from_facts(name, facts)
            if entry is None:
                continue
            if entry.kind == DIR and facts.get("unique"):
                child = f"{path}/{name}" if path else name
                self._unique[child] = facts["unique"]
            entries.append(entry)
        return entries

    def _list_listing(self, conn: ftplib.FTP, full: str) -> list[Entry]:
        """``LIST`` for servers without ``MLSD``; times from ``MDTM`` (LIST's are minutes)."""
        conn.cwd(full)  # "LIST -a" with no path: servers treat "-a" as ls's option, or ignore it
        lines: list[str] = []
        conn.retrlines("LIST -a", lines.append)
        entries = []
        for line in lines:
            fields = line.split(None, 8)
            if len(fields) < 9 or not fields[0] or fields[0][0] not in "-dl":
                continue
            perms, size_text, name = fields[0], fields[4], fields[8]
            mode = _mode_of(perms)
            if perms[0] == "l":
                name, _, target = name.partition(" -> ")
                if name not in (".", "..") and target:
                    entries.append(Entry(name, SYMLINK, mode=0o777, target=target))
                continue
            if name in (".", "..") or "/" in name:
                continue
            if perms[0] == "d":
                entries.append(Entry(name, DIR, mode=mode))
                continue
            size = int(size_text) if size_text.isdigit() else UNKNOWN_SIZE
            try:
                reply = conn.sendcmd("MDTM " + posixpath.join(full, name))
                mtime = _ftp_time(reply[4:])
            except (ftplib.error_perm, ValueError):
                mtime, size = 0, UNKNOWN_SIZE  # nothing to tell a change by: read every run
            entries.append(Entry(name, FILE, size=size, mtime_ns=mtime, mode=mode))
        return entries

    @contextlib.contextmanager
    def open(self, path: str, entry: Entry) -> Iterator[BinaryIO]:
        full = self._full(path)
        conn, sock = self._retrieve(full)
        broken = True
        try:
            reader = _Reader(sock)
            complete = False
            try:
                yield reader  # type: ignore[misc]
                complete = True
            finally:
                reader.close(complete)
            try:
                conn.voidresp()  # 226: the server sent the whole file
            except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply) as exc:
                broken = _code(exc) == "421"
                raise SourceError(f"the transfer did not complete ({_reply(exc)})") from None
            broken = False
            if reader.count != entry.size and entry.size != UNKNOWN_SIZE:
                raise SourceError(f"changed while being read (listed {entry.size} bytes, read "
                                  f"{reader.count}); it is backed up next time")
        except (ftplib.Error, OSError, EOFError) as exc:
            raise SourceError(f"connection to the server lost while reading "
                              f"({_reply(exc)})") from None
        finally:
            self._client.pool.release(conn, broken=broken)

    def read_range(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of a file from ``offset`` (all the rest when None): ``REST``
        then ``RETR``; a read that stops before the end closes the data connection, which
        aborts the transfer (the server answers 426, or 226 if it had sent all)."""
        full = self._full(path)
        conn = self._client.acquire()
        broken = True
        try:
            sock = conn.transfercmd("RETR " + full, rest=offset or None)
            reader = _Reader(sock)
            complete = False
            try:
                data = reader.read() if length is None else reader.read(length)
                complete = length is None or len(data) < length or reader.read(1) == b""
            finally:
                reader.close(complete)
            try:
                conn.voidresp()
            except (ftplib.error_temp, ftplib.error_perm) as exc:
                if complete or _code(exc) not in ("426", "450", "451"):
                    raise
            broken = False
            return data
        except (ftplib.Error, OSError, EOFError, ValueError) as exc:
            error, broken = _failure(exc, "reading")
            raise error from None
        finally:
            self._client.pool.release(conn, broken=broken)

    def stat_file(self, path: str) -> Entry | None:
        """The file at ``path`` (``MLST``, or ``SIZE`` and ``MDTM``); None when there is
        no file there."""
        full = self._full(path)

        def stat(conn: ftplib.FTP) -> Entry | None:
            try:
                if "MLST" in self._client.features:
                    entry = _entry_from_facts(posixpath.basename(full), _mlst(conn, full))
                    return entry if entry is not None and entry.kind == FILE else None
                conn.voidcmd("TYPE I")  # SIZE counts bytes only in binary mode
                size = conn.size(full)
                mtime = _ftp_time(conn.sendcmd("MDTM " + full)[4:])
            except ftplib.error_perm as exc:
                if _code(exc) == "550":
                    return None
                raise
            return Entry(posixpath.basename(full), FILE, size=size if size is not None
                         else UNKNOWN_SIZE, mtime_ns=mtime)

        return self._client.run("reading", stat)  # type: ignore[no-any-return]

    def _retrieve(self, full: str) -> tuple[ftplib.FTP, socket.socket]:
        """A connection and the data connection of ``RETR``; a pooled connection the server
        dropped meanwhile costs one retry on a new one, not the file."""
        for attempt in (1, 2):
            conn = self._client.acquire()
            try:
                return conn, conn.transfercmd("RETR " + full)
            except (ftplib.error_perm, ftplib.error_temp) as exc:
                self._client.pool.release(conn, broken=_code(exc) == "421")
                raise SourceError(_reply(exc)) from None
            except ValueError as exc:  # ftplib refuses a line break in a command
                self._client.pool.release(conn)
                raise SourceError(f"cannot be named over FTP ({_reply(exc)})") from None
            except (ftplib.Error, OSError, EOFError) as exc:
                self._client.pool.release(conn, broken=True)
                if attempt == 2:
                    raise SourceError(f"connection to the server lost while reading "
                                      f"({_reply(exc)})") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._client.close()


class FTPTarget:
    """Writes restored files below a directory on an FTP or FTPS server."""

    def __init__(self, server: _Server, connections: int = 1) -> None:
        self.server = server
        self.scheme = server.scheme
        self._client = _Client(server, connections)  # one file written per connection
        self._dirs: set[str] = set()
        self._chmod = True  # until the server refuses SITE CHMOD as unknown
        self._mfmt = True  # once the features are known: whether the server offers MFMT
        self.overwrite = False

    def describe(self) -> str:
        return self.server.describe()

    def connect(self) -> None:
        self._client.connect()
        self._mfmt = "MFMT" in self._client.features

    def _full(self, path: str) -> str:
        if not safe_relative(path):
            raise SourceError(f"{path!r} would be written outside {self.describe()}")
        return posixpath.join(self.server.root, path) if path else self.server.root

    def _kind(self, conn: ftplib.FTP, full: str) -> str:
        """"dir", "file" or "" (nothing there) for a path on the server."""
        if "MLST" in self._client.features:
            try:
                facts = _mlst(conn, full)
            except ftplib.error_perm:
                return ""
            return "dir" if facts.get("type", "").lower() in ("dir", "cdir", "pdir") else "file"
        try:
            conn.cwd(full)
            return "dir"
        except ftplib.error_perm:
            pass
        try:
            conn.sendcmd("SIZE " + full)
            return "file"
        except ftplib.error_perm:
            return ""

    def _ensure_dir(self, conn: ftplib.FTP, path: str) -> None:
        if path in self._dirs:
            return
        if path:
            self._ensure_dir(conn, posixpath.dirname(path))
        full = self._full(path)
        if path == "":  # the target itself: create its parents too
            parents = []
            probe = full
            while probe not in ("/", "") and self._kind(conn, probe) == "":
                parents.append(probe)
                probe = posixpath.dirname(probe)
            if probe not in ("/", "") and self._kind(conn, probe) != "dir":
                raise SourceError(f"{probe} exists on the server and is not a directory")
            for directory in reversed(parents):
                self._mkd(conn, directory)
        else:
            kind = self._kind(conn, full)
            if kind == "":
                self._mkd(conn, full)
            elif kind != "dir":
                raise SourceError(f"{path} exists on the server and is not a directory")
        self._dirs.add(path)

    def _mkd(self, conn: ftplib.FTP, full: str) -> None:
        try:
            conn.mkd(full)
        except ftplib.error_perm:
            if self._kind(conn, full) != "dir":  # made meanwhile by someone else?
                raise

    def makedirs(self, path: str) -> None:
        self._full(path)
        self._client.run("creating", lambda conn: self._ensure_dir(conn, path))

    def write(self, path: str, chunks: Iterator[bytes], *, size: int | None, mode: int,
              mtime_ns: int) -> None:
        """Store under a hidden temporary name, check the size (when known), set time and
        mode, rename into place."""
        full = self._full(path)
        directory, name = posixpath.split(path)
        tmp = posixpath.join(posixpath.dirname(full), temporary_name(name))
        conn = self._client.acquire()
        broken = False
        in_transfer = False  # the data connection is open: the control one is mid-command
        stored = False
        try:
            self._ensure_dir(conn, directory)
            if not self.overwrite and self._kind(conn, full):
                raise SourceError("exists on the server; not replaced")
            sock = conn.transfercmd("STOR " + tmp)
            stored = in_transfer = True
            try:
                written = 0
                for chunk in chunks:
                    sock.sendall(chunk)
                    written += len(chunk)
                if isinstance(sock, ssl.SSLSocket):
                    sock.unwrap()
            finally:
                sock.close()
            in_transfer = False
            conn.voidresp()  # 226: the server has it all (a full disk answers 452 or 552)
            if size is not None and written != size:
                raise SourceError(f"the snapshot's data ({written} bytes) does not match the "
                                  f"recorded size ({size} bytes)")
            if "SIZE" in self._client.features:
                got = conn.size(tmp)
                if got is not None and got != written:
                    raise SourceError(f"the server stored {got} of {written} bytes")
            self._set_metadata(conn, tmp, mode, mtime_ns)
            if self.overwrite and self._kind(conn, full) == "file":
                conn.delete(full)  # some servers refuse to rename over a file
            conn.rename(tmp, full)
            stored = False
        except (ftplib.Error, OSError, EOFError, ValueError) as exc:
            error, broken = _failure(exc, "writing")
            raise error from None
        finally:
            broken = broken or in_transfer
            if stored and not broken:
                with contextlib.suppress(ftplib.Error, OSError, EOFError):
                    conn.delete(tmp)
            self._client.pool.release(conn, broken=broken)
            if stored and broken:
                self._remove_quietly(tmp)

    def _set_metadata(self, conn: ftplib.FTP, full: str, mode: int, mtime_ns: int) -> None:
        if self._mfmt and mtime_ns > 0:
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime_ns // _NS))
            try:
                conn.sendcmd(f"MFMT {stamp} {full}")
            except ftplib.error_perm as exc:
                if _code(exc) not in ("500", "501", "502", "504"):
                    raise
                self._mfmt = False  # announced but not understood: times stay the server's
        if self._chmod:
            try:
                conn.sendcmd(f"SITE CHMOD {mode & 0o7777 or 0o644:o} {full}")
            except ftplib.error_perm as exc:
                if _code(exc) not in ("500", "501", "502", "504"):
                    raise
                self._chmod = False  # the server has no SITE CHMOD: modes stay its default

    def _remove_quietly(self, full: str) -> None:
        """Remove a temp file after the connection that wrote it broke (best effort)."""
        try:
            conn = self._client.pool.acquire()
        except _ConnectFailed:
            return
        ok = True
        try:
            conn.delete(full)
        except ftplib.error_perm:
            pass
        except (ftplib.Error, OSError, EOFError):
            ok = False
        self._client.pool.release(conn, broken=not ok)

    def symlink(self, path: str, target: str) -> None:
        self._full(path)
        raise SourceError("FTP cannot create symbolic links; not restored")

    def append(self, path: str, data: bytes) -> None:
        """Add ``data`` at the end of a file (``APPE``; a missing file is made)."""
        full = self._full(path)
        conn = self._client.acquire()
        broken = in_transfer = False
        try:
            self._ensure_dir(conn, posixpath.dirname(path))
            sock = conn.transfercmd("APPE " + full)
            in_transfer = True
            try:
                sock.sendall(data)
                if isinstance(sock, ssl.SSLSocket):
                    sock.unwrap()
            finally:
                sock.close()
            in_transfer = False
            conn.voidresp()  # 226: the server has it all
        except (ftplib.Error, OSError, EOFError, ValueError) as exc:
            error, broken = _failure(exc, "writing")
            raise error from None
        finally:
            self._client.pool.release(conn, broken=broken or in_transfer)

    def file_size(self, path: str) -> int | None:
        """A file's size (``SIZE``); None when there is no such file."""
        full = self._full(path)

        def size(conn: ftplib.FTP) -> int | None:
            conn.voidcmd("TYPE I")  # SIZE counts bytes only in binary mode
            try:
                return conn.size(full)
            except ftplib.error_perm as exc:
                if _code(exc) == "550":
                    return None
                raise

        return self._client.run("reading", size)  # type: ignore[no-any-return]

    def rename(self, old: str, new: str) -> None:
        """Move a file onto ``new``, replacing a file there (some servers will not rename
        over one, so it is deleted first)."""
        src, dst = self._full(old), self._full(new)

        def move(conn: ftplib.FTP) -> None:
            self._ensure_dir(conn, posixpath.dirname(new))
            if self._kind(conn, dst) == "file":
                conn.delete(dst)
            conn.rename(src, dst)

        self._client.run("renaming", move)

    def remove(self, path: str) -> None:
        """Delete a file; one that is not there is fine."""
        full = self._full(path)

        def delete(conn: ftplib.FTP) -> None:
            try:
                conn.delete(full)
            except ftplib.error_perm as exc:
                if _code(exc) != "550" or self._kind(conn, full) == "file":
                    raise

        self._client.run("deleting", delete)

    def close(self) -> None:
        self._client.close()


def parse_server(url: str, credentials: Mapping[str, str],
                 password_from: str | None = None) -> _Server:
    """The server, login and path of an ``ftp://`` or ``ftps://`` URL (UsageError if bad)."""
    return _parse(url, credentials, password_from)


def open_source(url: str, credentials: Mapping[str, str]) -> FTPSource:
    """The tree at the URL; logs in and lists the root at once, so errors come early."""
    source = FTPSource(_parse(url, credentials))
    try:
        source.check()
    except BaseException:
        source.close()
        raise
    return source


def open_target(url: str, credentials: Mapping[str, str]) -> FTPTarget:
    target = FTPTarget(_parse(url, credentials))
    try:
        target.connect()
    except BaseException:
        target.close()
        raise
    return target
