"""MariaDB and MySQL: databases dumped by ``mariadb-dump``, loaded back by ``mariadb``.

URLs (``mariadb://`` is the same)::

    mysql://user@host:3306/shop     one database
    mysql://user@host:3306/         every database the user can see, except
                                    information_schema, performance_schema, sys, mysql

Query options: ``socket=/run/mysqld/mysqld.sock`` (connect through that Unix socket; the
URL's host is then only a label), ``ssl=1`` (ask for TLS: a MariaDB 10.x client still
talks plain text to a server without it), ``ssl-verify=1`` (insist on TLS and check the
server's certificate and name), ``ssl-ca=``, ``ssl-cert=``, ``ssl-key=`` (PEM paths),
``option-file=/path`` (an option file of your own, read first, so that the URL's settings
win), ``parallel=N`` (dumps run at once, default 1). A backup also takes ``users=0`` (leave
out ``@users.sql``).

A backup holds one file per database, ``<db>.sql`` ('%', '/' and a leading '@' in the name
written %25, %2F, %40), from ``mariadb-dump --single-transaction --quick --routines
--triggers --events --hex-blob --no-tablespaces``, without ``CREATE DATABASE``/``USE``, so
it can be loaded into a database of any name. A server backup adds ``@users.sql``:
``mariadb-dump --system=users``, the accounts (with their password hashes), roles and
grants, as portable SQL (MariaDB's tool only; the raw ``mysql`` database is not dumped,
so time zones, plugins and server definitions are not included). Each dump streams from
the tool's stdout into the repository; the run fails, and writes no snapshot, unless the
tool exits 0 and its output ends with its ``-- Dump completed`` line.

Consistency: ``--single-transaction`` gives a consistent view of InnoDB (transactional)
tables without locking them; MyISAM/Aria tables written during the dump may be caught
mid-change. Each database is consistent in itself, not with the others: they are dumped
one after another. DDL (ALTER, DROP, RENAME, TRUNCATE) on a table during the dump can
break it or make it fail.

The password comes from the config (``credentials["password"]``) or
``$MULTIBACKUP_SOURCE_PASSWORD``. It reaches the tools in an option file that is a pipe
(``--defaults-file=/dev/fd/N``, always the first argument): never argv, the environment
or the disk. ``--defaults-file`` rather than ``--defaults-extra-file`` so that a
``~/.my.cnf`` or ``/etc/mysql`` file cannot override the URL (it would be read after the
extra file); use ``?option-file=`` to bring one in. Without a password, none is sent
(``unix_socket`` authentication as root through the socket works).

As a restore target:

- ``mysql://user@host/newdb`` loads one ``<db>.sql`` into ``newdb``; a snapshot with
  several databases needs ``--include /<db>.sql``. ``@users.sql`` is server-wide and not
  loaded here unless it is the only file selected.
- ``mysql://user@host/`` loads every ``<db>.sql`` into the database of the same name, then
  ``@users.sql`` (last: a table-level GRANT needs its table).
- A missing database is created (the server's default character set; create it yourself
  first for another one) and dropped again if the load fails. An existing database is
  loaded only if it is empty (no tables, views, routines or events); otherwise the whole
  restore is refused before anything is written.
- ``@users.sql`` creates the accounts and roles that the target lacks, with their
  passwords, roles and grants; the lines of accounts and roles that already exist are
  left out, so no existing password or grant is changed. Loading the file by hand
  (``multibackup dump ... /@users.sql | mariadb``) stops at the first account that exists.
- Views, triggers, routines and events keep their ``DEFINER``: the restoring user needs
  the ``SET USER`` (``SUPER``) privilege, or to be that definer.
- Restoring under another name: views are written relative to their database, but the
  bodies of triggers, routines and events are kept as they were written, so one that
  names its database (``shop.orders``) still points at the original. A routine whose
  database collation differed from its database's current one names the original
  database in an ``ALTER DATABASE`` line.

Privileges: a backup account needs ``SELECT, SHOW VIEW, TRIGGER, EVENT`` on the databases;
routines it may not see are left out by mariadb-dump without a word, so give it
``SELECT`` on ``mysql.proc`` (MariaDB 10.x; ``SHOW CREATE ROUTINE`` from 11.3) or simply
``GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.*``, which also covers ``@users.sql``.
Without access to ``mysql.user`` a server backup fails, saying to add ``?users=0``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import IO, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

from multibackup.errors import SourceError, UsageError
from multibackup.sources.base import FILE, Entry, refuse_non_empty, refuse_several_dumps
from multibackup.sources.url import PASSWORD_ENV

SUFFIX = ".sql"
USERS = "@users.sql"
SYSTEM_DATABASES = frozenset({"information_schema", "performance_schema", "sys", "mysql"})
TRAILER = b"-- Dump completed"
_TAIL = 256  # bytes of a dump's end kept to find its trailer
_CONNECT_TIMEOUT = 30
_PIPE_SIZE = 1 << 20
_SOURCE_OPTIONS = ("users",)
_OPTIONS = ("socket", "ssl", "ssl-ca", "ssl-cert", "ssl-key", "ssl-verify", "option-file",
            "parallel")
_DUMP_ARGS = ("--single-transaction", "--quick", "--routines", "--triggers", "--events",
              "--hex-blob", "--no-tablespaces")


def dump_name(database: str) -> str:
    """The snapshot file of a database: any name becomes one file name, never ``@users.sql``."""
    name = database.replace("%", "%25").replace("/", "%2F")
    if name.startswith("@"):
        name = "%40" + name[1:]
    return name + SUFFIX


def database_of(path: str) -> str:
    """The database a ``<db>.sql`` file restores into (the inverse of ``dump_name``)."""
    name = path.rsplit("/", 1)[-1]
    return unquote(name[: -len(SUFFIX)])


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _equals(column: str, value: str) -> str:
    """``column = value``, exact (binary), whatever the characters and the SQL mode."""
    hexed = value.encode().hex()
    return (f"{column} = CONVERT(X'{hexed}' USING utf8mb4) "
            f"AND CAST({column} AS BINARY) = X'{hexed}'")


def _option_value(value: str) -> str:
    """A value for an option file: quoted, with the escapes its parser undoes."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def _flag(name: str, value: str) -> bool:
    if value.lower() in ("1", "yes", "true", "on"):
        return True
    if value.lower() in ("0", "no", "false", "off"):
        return False
    raise UsageError(f"invalid MySQL URL option {name}={value!r}: expected 1 or 0")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _child_env() -> dict[str, str]:
    """Our environment without a password the tools do not need (or would prefer)."""
    return {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, "MYSQL_PWD")}


class _Tools:
    """The client programs found on this machine, and which family they belong to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[str, str] = {}
        self._help: dict[str, str] = {}

    def find(self, kind: str) -> str:
        """``dump`` or ``client``: MariaDB's name first, then MySQL's."""
        with self._lock:
            if kind not in self._found:
                names = ("mariadb-dump", "mysqldump") if kind == "dump" else ("mariadb", "mysql")
                path = next((p for p in map(shutil.which, names) if p), None)
                if path is None:
                    raise SourceError(f"{names[0]} (or {names[1]}) not found on PATH: install "
                                      "the MariaDB or MySQL client programs")
                self._found[kind] = path
            return self._found[kind]

    def help(self, kind: str) -> str:
        tool = self.find(kind)
        with self._lock:
            if kind not in self._help:
                try:
                    p = subprocess.run([tool, "--no-defaults", "--help"], capture_output=True,
                                       timeout=30, stdin=subprocess.DEVNULL)
                    self._help[kind] = p.stdout.decode(errors="replace")
                except (OSError, subprocess.TimeoutExpired):
                    self._help[kind] = ""
            return self._help[kind]

    def is_mariadb(self, kind: str) -> bool:
        name = os.path.basename(self.find(kind))
        return name.startswith("mariadb") or "MariaDB" in self.help(kind)


class _Server:
    """How to reach one server: the settings of its option file, and the tools.

    The option file carries everything about the connection, the password included, and
    is handed to each child process as a pipe it inherits: nothing secret is ever in
    argv, the environment or a file on disk.
    """

    def __init__(self, url: str, credentials: Mapping[str, str],
                 own_options: tuple[str, ...]) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        try:
            self.host = parts.hostname or ""
            self.port = parts.port
        except ValueError:
            raise UsageError(f"invalid MySQL URL {url!r}: bad host or port") from None
        self.user = unquote(parts.username) if parts.username else ""
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if "/" in path.rstrip("/"):
            raise UsageError(f"invalid MySQL URL {url!r}: expected mysql://user@host:port/"
                             "database (a '/' in a database name is written %2F)")
        self.database: str | None = unquote(path.rstrip("/")) or None
        self.options: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            key = key.lower().replace("_", "-")
            if key == "password":
                raise UsageError(f"MySQL URL carries a password, which would show in the "
                                 f"process list: give it in the config file or ${PASSWORD_ENV}")
            if key not in _OPTIONS and key not in own_options:
                accepted = ", ".join(sorted((*_OPTIONS, *own_options)))
                raise UsageError(f"unknown MySQL URL option {key!r} (accepted: {accepted})")
            self.options[key] = value
        for key in ("socket", "ssl-ca", "ssl-cert", "ssl-key", "option-file"):
            if key in self.options and not os.path.isabs(self.options[key]):
                raise UsageError(f"MySQL URL option {key} needs an absolute path")
        try:
            self.parallel = max(1, int(self.options.get("parallel", "1")))
        except ValueError:
            raise UsageError("MySQL URL option parallel needs a number") from None
        self.ssl = _flag("ssl", self.options.get("ssl", "0"))
        self.ssl_verify = _flag("ssl-verify", self.options.get("ssl-verify", "0"))
        self.password = credentials.get("password") or os.environ.get(PASSWORD_ENV) or ""
        self.tools = _Tools()

    def describe(self) -> str:
        """The URL without options or secrets, plus the socket (another socket, another server)."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        db = dump_name(self.database)[: -len(SUFFIX)] if self.database else ""
        socket = f"?socket={self.options['socket']}" if "socket" in self.options else ""
        return f"{self.scheme}://{user}{host}{port}/{db}{socket}"

    def scrub(self, text: str) -> str:
        """The text without the password (the tools never echo it; this is a last guard).

        A very short password is left alone: replacing it would garble every message."""
        return text.replace(self.password, "***") if len(self.password) >= 4 else text

    def option_file(self, kind: str) -> bytes:
        mariadb = self.tools.is_mariadb(kind)
        lines = []
        if "option-file" in self.options:
            lines.append(f"!include {self.options['option-file']}")
        lines.append("[client]")
        if self.user:
            lines.append(f"user={_option_value(self.user)}")
        if self.password:
            lines.append(f"password={_option_value(self.password)}")
        if "socket" in self.options:
            lines += ["host=localhost", f"socket={_option_value(self.options['socket'])}"]
        else:
            if self.host:
                lines.append(f"host={_option_value(self.host)}")
            if self.port:
                lines.append(f"port={self.port}")
        lines += ["default-character-set=utf8mb4", "max-allowed-packet=1G"]
        for key in ("ssl-ca", "ssl-cert", "ssl-key"):
            if key in self.options:
                lines.append(f"{key}={_option_value(self.options[key])}")
        if mariadb:
            if self.ssl or self.ssl_verify:
                lines.append("ssl")
            if self.ssl_verify:
                lines.append("ssl-verify-server-cert")
        elif self.ssl_verify:
            lines.append("ssl-mode=VERIFY_IDENTITY")
        elif self.ssl:
            lines.append("ssl-mode=REQUIRED")
        if kind == "client":  # the dump tool has no connect-timeout option
            lines += ["[mysql]", f"connect-timeout={_CONNECT_TIMEOUT}"]
        return ("\n".join(lines) + "\n").encode()

    def spawn(self, kind: str, args: list[str], *, stdin: int | IO[bytes] | None,
              stdout: int | IO[bytes] | None, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start a tool with the option file as its first argument, read from a pipe."""
        tool = self.tools.find(kind)
        text = self.option_file(kind)
        r, w = os.pipe()
        try:
            try:
                os.write(w, text)  # a few hundred bytes: far below a pipe's capacity
            finally:
                os.close(w)
            try:
                return subprocess.Popen([tool, f"--defaults-file=/dev/fd/{r}", *args],
                                        stdin=stdin, stdout=stdout, stderr=stderr,
                                        pass_fds=(r,), env=_child_env())
            except OSError as exc:
                raise SourceError(f"cannot run {tool}: {exc.strerror or exc}") from None
        finally:
            os.close(r)

    def error_line(self, stderr: IO[bytes]) -> str:
        """The tool's first error line (else its first line that is no warning), without secrets."""
        stderr.seek(0)
        text = stderr.read(64 * 1024).decode(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        others = [line for line in lines
                  if not any(w in line.lower() for w in ("warning", "deprecated"))]
        line = (errors or others or lines or [""])[0]
        head, sep, tail = line.partition("Couldn't execute '")
        if sep and "': " in tail:  # the server's answer, not the tool's long query
            line = head + "a query failed: " + tail.rpartition("': ")[2]
        return self.scrub(line[:400])

    def query(self, sql: str, timeout: float | None = _CONNECT_TIMEOUT * 4) -> list[list[str]]:
        """Rows of tab-separated columns (``-N -B``); use HEX() for names with odd characters."""
        with tempfile.TemporaryFile() as err:
            proc = self.spawn("client", ["-N", "-B", "-e", sql], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=err)
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise SourceError(f"{self.describe()}: the server did not answer") from None
            if proc.returncode != 0:
                raise SourceError(f"{self.describe()}: {self.error_line(err) or 'query failed'}")
        return [line.split("\t") for line in out.decode().splitlines()]

    def databases(self) -> list[str]:
        rows = self.query("SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA")
        return [bytes.fromhex(r[0]).decode() for r in rows if r and r[0]]


class _DumpStream(io.RawIOBase):
    """The dump tool's stdout, keeping its last bytes to check the trailer."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        n = self._raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            with memoryview(b) as view:
                self.tail = (self.tail + bytes(view[max(0, n - _TAIL):n]))[-_TAIL:]
        return n or 0


class MySQLSource:
    """The dumps of one database, or of every database of a server plus its accounts."""

    scheme = "mysql"
    complete_only = True

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.scheme = server.scheme
        self.parallel = server.parallel
        self.with_users = _flag("users", server.options.get("users", "1"))
        self._names: dict[str, str] = {}
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.server.describe()

    def list_dir(self, path: str) -> list[Entry]:
        if path:
            return []
        s = self.server
        s.tools.find("dump")  # a missing tool fails before anything else
        visible = s.databases()  # fails on a wrong password or a server that is down
        if s.database is not None:
            if s.database not in visible:
                raise SourceError(f"{self.describe()}: database {s.database!r} does not exist "
                                  "(or the user may not see it)")
            chosen = [s.database]
        else:
            chosen = [d for d in visible
                      if d.lower() not in SYSTEM_DATABASES and not d.startswith("#mysql50#")]
        self._names = {dump_name(d): d for d in chosen}
        if s.database is None and self.with_users and "--system=" in s.tools.help("dump"):
            self._names[USERS] = ""
        now = time.time_ns()
        return [Entry(name, FILE, mtime_ns=now, mode=0o600) for name in sorted(self._names)]

    def _argv(self, path: str) -> tuple[list[str], str]:
        if path == USERS:
            return ["--system=users"], "the accounts (@users.sql)"
        database = self._names.get(path) or database_of(path)
        args = list(_DUMP_ARGS)
        if not self.server.tools.is_mariadb("dump") and "--set-gtid-purged" in \
                self.server.tools.help("dump"):
            args.append("--set-gtid-purged=OFF")  # a copy is not a replica: no GTID state
        return [*args, "--", database], f"database {database!r}"

    @contextlib.contextmanager
    def open(self, path: str, entry: Entry) -> Iterator[BinaryIO]:
        args, what = self._argv(path)
        s = self.server
        tool = os.path.basename(s.tools.find("dump"))
        with tempfile.TemporaryFile() as err:
            proc = s.spawn("dump", args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=err)
            with self._lock:
                self._running.add(proc)
            assert proc.stdout is not None
            with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups per MiB
                fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            stream = _DumpStream(proc.stdout)
            try:
                yield stream  # type: ignore[misc]
                if stream.read(1):
                    raise SourceError(f"{self.describe()}: the dump of {what} was not read "
                                      "to its end")
                code = proc.wait()
                if code != 0:
                    detail = s.error_line(err)
                    how = (f"was killed by signal {_signal_name(-code)}" if code < 0
                           else f"exited with status {code}")
                    hint = (" (add ?users=0 to the URL to back up without the accounts)"
                            if path == USERS and code > 0 else "")
                    raise SourceError(f"{self.describe()}: {tool} {how} while dumping {what}"
                                      + (f": {detail}" if detail else "") + hint)
                if TRAILER not in stream.tail:
                    raise SourceError(f"{self.describe()}: the dump of {what} ends without "
                                      f"{tool}'s '-- Dump completed' line: it is incomplete")
            finally:
                if proc.poll() is None:  # the reader stopped early: the dump is not wanted
                    proc.kill()
                proc.wait()
                proc.stdout.close()
                with self._lock:
                    self._running.discard(proc)

    def close(self) -> None:
        with self._lock:
            running = list(self._running)
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _account_tokens(user: str, host: str, is_role: bool) -> list[bytes]:
    """How ``mariadb-dump --system=users`` writes an account or role in its lines."""
    quoted = "'" + (user.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0")
                    .replace("\x1a", "\\Z")) + "'"
    if is_role:
        return [f"CREATE ROLE {quoted}".encode(), f" TO {_ident(user)};".encode(),
                f" TO {_ident(user)} ".encode()]
    qhost = "'" + host.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [f"{_ident(user)}@{_ident(host)}".encode(), f"{quoted}@{qhost}".encode()]


def _without_accounts(chunks: Iterator[bytes], tokens: list[bytes]) -> Iterator[bytes]:
    """The users script without the lines that name an account or role the server has.

    Every statement of ``--system=users`` is one line, and an account is named in it as
    the one created or the grantee, so leaving out those lines leaves it untouched.
    """
    def keep(line: bytes) -> bool:
        return not any(token in line for token in tokens)

    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield b"".join(line + b"\n" for line in data[:cut - 1].split(b"\n") if keep(line))
    if rest and keep(rest):
        yield rest


class MySQLTarget:
    """Loads ``<db>.sql`` dumps (and ``@users.sql``) into a server."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.scheme = server.scheme
        self._chosen: list[str] | None = None
        self._loaded: list[str] = []

    def describe(self) -> str:
        return self.server.describe()

    @staticmethod
    def _kind(path: str) -> str:
        if path == USERS:
            return USERS
        if path.endswith(SUFFIX) and database_of(path):
            return SUFFIX
        raise SourceError(f"{path}: not a MariaDB/MySQL dump (<database>.sql or {USERS})")

    def _objects(self, database: str) -> int | None:
        """How many tables, views, routines and events a database holds; None if missing."""
        rows = self.server.query(
            f"SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
            f"{_equals('SCHEMA_NAME', database)}), "
            f"(SELECT COUNT(*) FROM information_schema.TABLES WHERE "
            f"{_equals('TABLE_SCHEMA', database)}) + "
            f"(SELECT COUNT(*) FROM information_schema.ROUTINES WHERE "
            f"{_equals('ROUTINE_SCHEMA', database)}) + "
            f"(SELECT COUNT(*) FROM information_schema.EVENTS WHERE "
            f"{_equals('EVENT_SCHEMA', database)})")
        exists, count = (int(x) for x in rows[0][:2])
        return count if exists else None

    def _refuse_non_empty(self, databases: list[str]) -> None:
        refuse_non_empty(self.describe(), [d for d in databases if self._objects(d)],
                         "tables, views, routines or events")

    def plan(self, paths: list[str]) -> list[str]:
        """Check the whole selection before anything is loaded; the files to load, in order.

        Accounts come last: a table-level GRANT fails unless its table exists (a view or
        routine whose definer is missing meanwhile only gets a warning).
        """
        kinds = {p: self._kind(p) for p in paths}
        dumps = sorted(p for p, k in kinds.items() if k == SUFFIX)
        has_users = USERS in kinds
        named = self.server.database
        if named is not None:
            refuse_several_dumps(self.describe(), dumps)
            if dumps:
                self._refuse_non_empty([named])
                self._chosen = dumps  # accounts are server-wide: not with one database
            else:
                self._chosen = [USERS] if has_users else []
        else:
            databases = [database_of(p) for p in dumps]
            twice = sorted({d for d in databases if databases.count(d) > 1})
            if twice:
                raise SourceError(f"{self.describe()}: several selected files restore into "
                                  f"database {twice[0]!r}; choose one with --include")
            self._refuse_non_empty(databases)
            self._chosen = dumps + ([USERS] if has_users else [])
        return list(self._chosen)

    def makedirs(self, path: str) -> None:
        pass  # dumps are files; a directory above one selected with --include is harmless

    def symlink(self, path: str, target: str) -> None:
        raise SourceError(f"{path}: a MariaDB/MySQL target loads dumps, not links")

    def write(self, path: str, chunks: Iterator[bytes], *, size: int, mode: int,
              mtime_ns: int) -> None:
        if self._chosen is not None and path not in self._chosen:
            return
        kind = self._kind(path)
        if kind == USERS:
            self._load_users(chunks)
            return
        named = self.server.database
        if named is not None and self._loaded:
            raise SourceError(f"{self.describe()}: the snapshot holds more than one database "
                              f"dump; choose one with --include /{path}")
        self._load_dump(named if named is not None else database_of(path), chunks)
        self._loaded.append(path)

    def _load_dump(self, database: str, chunks: Iterator[bytes]) -> None:
        objects = self._objects(database)
        if objects:
            self._refuse_non_empty([database])
        created = objects is None
        if created:
            self.server.query(f"CREATE DATABASE {_ident(database)}")
        try:
            self._pipe(["--", database], chunks, f"loading into database {database!r}")
        except BaseException as exc:
            if not created:
                if isinstance(exc, SourceError):
                    raise SourceError(f"{exc}; database {database!r} holds a partial "
                                      "restore") from None
                raise
            dropped = False
            with contextlib.suppress(SourceError):
                self.server.query(f"DROP DATABASE {_ident(database)}", timeout=None)
                dropped = True
            if isinstance(exc, SourceError):
                note = ("the partly loaded database was dropped" if dropped
                        else f"database {database!r} holds a partial restore")
                raise SourceError(f"{exc}; {note}") from None
            raise

    def _load_users(self, chunks: Iterator[bytes]) -> None:
        rows = self.server.query("SELECT HEX(User), HEX(Host), is_role FROM mysql.user")
        tokens: list[bytes] = []
        for user, host, is_role in rows:
            tokens += _account_tokens(bytes.fromhex(user).decode(),
                                      bytes.fromhex(host).decode(), is_role == "Y")
        self._pipe([], _without_accounts(chunks, tokens), "loading the accounts")

    def _pipe(self, args: list[str], chunks: Iterator[bytes], what: str) -> None:
        """Feed a script to the client's stdin; raise with its error unless it exits 0."""
        s = self.server
        with tempfile.TemporaryFile() as err:
            proc = s.spawn("client", args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           stderr=err)
            assert proc.stdin is not None
            try:
                try:
                    for chunk in chunks:
                        proc.stdin.write(chunk)
                    proc.stdin.close()
                except BrokenPipeError:  # the client stopped at an error: its status says
                    pass
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            code = proc.wait()
            if code != 0:
                detail = s.error_line(err) or (f"killed by signal {_signal_name(-code)}"
                                               if code < 0 else f"exit status {code}")
                raise SourceError(f"{self.describe()}: {what} failed: {detail}")

    def close(self) -> None:
        pass


def open_source(url: str, credentials: Mapping[str, str]) -> MySQLSource:
    return MySQLSource(_Server(url, credentials, _SOURCE_OPTIONS))


def open_target(url: str, credentials: Mapping[str, str]) -> MySQLTarget:
    return MySQLTarget(_Server(url, credentials, ()))
