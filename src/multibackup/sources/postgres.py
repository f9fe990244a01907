"""PostgreSQL: databases dumped by ``pg_dump``, roles by ``pg_dumpall``, loaded by ``pg_restore``.

URLs (``postgres://`` is the same)::

    postgresql://user@host:5432/dbname    one database
    postgresql://user@host:5432/          every database that accepts connections,
                                          except template0 and template1

Query options are handed to libpq as its environment variables: ``sslmode``,
``sslrootcert``, ``sslcert``, ``sslkey``, ``sslcrl``, ``channel_binding``, ``gssencmode``,
``connect_timeout`` (default 15 s), ``application_name``, ``options``, ``service``,
``target_session_attrs``, ``passfile``, ``user``, ``host`` (overrides the URL's host: a
directory such as ``?host=/run/postgresql`` connects through the Unix socket there) and
``port``. ``password`` and ``sslpassword`` are refused (they would show in ``ps``). A
backup also takes ``globals=no`` (leave out ``globals.sql``); a restore target takes
``owners=keep|drop`` and ``privileges=keep|drop`` (below).

A backup holds one file per database, ``<db>.dump`` (``pg_dump --format=custom
--compress=0``: uncompressed so that unchanged tables deduplicate between snapshots; the
repository compresses), plus ``globals.sql`` (``pg_dumpall --globals-only``: roles,
memberships, tablespaces). A role that may not read ``pg_authid`` (not a superuser) gets
``--no-role-passwords``: its roles come back without passwords. A server-wide backup
needs a role that can connect to every database and read all of it; a database it
cannot dump fails the run (nothing is skipped silently). Each dump is streamed
from the tool's stdout into the repository, never stored whole; the run fails, and
writes no snapshot, when a tool exits non-zero or is killed. Each database is consistent
in itself (pg_dump's snapshot), not with the others.

The password comes from the config (``credentials["password"]``) or
``$MULTIBACKUP_SOURCE_PASSWORD`` and reaches the tools through a 0600 ``PGPASSFILE`` in a
private temporary directory, removed when the run ends; never through argv. Without
either, libpq's own ``~/.pgpass``, ``$PGPASSWORD`` or peer authentication apply.

The client tools: ``$MULTIBACKUP_PG_BINDIR`` if set, else the newest installed version
directory (``/usr/lib/postgresql/<n>/bin`` on Debian, ``/usr/pgsql-<n>/bin`` on RHEL),
else ``pg_dump`` on ``$PATH``. pg_dump must be at least the server's major version, or
the backup stops with a message saying so.

As a restore target:

- ``postgresql://user@host/newdb`` loads one ``<db>.dump`` into ``newdb``. A snapshot
  with several dumps needs ``--include /<db>.dump``: refused before anything is written.
  ``globals.sql`` is not applied (roles are server-wide), unless it is the only file
  selected (``--include /globals.sql``; it then runs in the maintenance database).
  Objects belong to the restoring user (``--no-owner``) unless ``?owners=keep``.
- ``postgresql://user@host/`` applies ``globals.sql`` first, then loads each
  ``<db>.dump`` into the database of the same name, keeping owners.
- ``globals.sql`` runs through psql with ``ON_ERROR_STOP``. Its ``CREATE ROLE`` for the
  restoring user and the bootstrap superuser (which exist on every server) is skipped,
  their ``ALTER ROLE`` applies (attributes and password as in the backup); any other role
  that already exists stops it with ``role "x" already exists``, so existing roles are
  never changed silently: restore globals onto a fresh server. Each file is loaded on its
  own: one that fails is reported (exit status 1) and the others still load.
- A missing database is created (``TEMPLATE template0``, the server's default encoding
  and locale) under a temporary name, loaded with ``pg_restore --exit-on-error`` and
  renamed into place only when complete; a failed load drops it. An existing database
  with no tables (like a fresh ``postgres``) is loaded in one transaction
  (``--single-transaction``). A database that has tables, views or sequences is never
  written to: the whole restore is refused before anything is changed.
- ``?privileges=drop`` leaves out GRANTs (``--no-privileges``), for a server that lacks
  the roles they name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import BinaryIO
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from multibackup.errors import SourceError, UsageError
from multibackup.sources.base import FILE, Entry, refuse_non_empty, refuse_several_dumps
from multibackup.sources.url import PASSWORD_ENV

BINDIR_ENV = "MULTIBACKUP_PG_BINDIR"
GLOBALS = "globals.sql"
DUMP_SUFFIX = ".dump"

# URL query options that are libpq settings, as the environment variables the tools read
_LIBPQ_ENV = {
    "host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "channel_binding": "PGCHANNELBINDING",
    "gssencmode": "PGGSSENCMODE", "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME", "options": "PGOPTIONS", "service": "PGSERVICE",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "passfile": "PGPASSFILE",
}
_SECRET_OPTIONS = ("password", "sslpassword")
_SOURCE_OPTIONS = ("globals",)
_TARGET_OPTIONS = ("owners", "privileges")
_MAINTENANCE_DBS = ("postgres", "template1")  # where server-wide work connects, like pg_dumpall
_TOOL_PREFIX = re.compile(r"^(?:pg_dump|pg_dumpall|pg_restore|psql)(?::[^:]*:\d+)?: (?:error: )?")


def _conninfo_dbname(name: str) -> str:
    """``dbname='...'``: a database name the tools cannot mistake for a connection string."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def dump_name(database: str) -> str:
    """The snapshot file of a database: '/' and '%' escaped so any name is one file name."""
    return database.replace("%", "%25").replace("/", "%2F") + DUMP_SUFFIX


def database_of(path: str) -> str:
    """The database a ``<db>.dump`` file restores into (the inverse of ``dump_name``)."""
    return unquote(path[: -len(DUMP_SUFFIX)])


def _bool_option(name: str, value: str, yes: str, no: str) -> bool:
    if value.lower() in (yes, "yes", "true", "1"):
        return True
    if value.lower() in (no, "no", "false", "0"):
        return False
    raise UsageError(f"invalid PostgreSQL URL option {name}={value!r}: expected {yes} or {no}")


def find_bindir() -> str:
    """The directory of the client tools: the override, the newest installed, or $PATH."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        if not os.access(os.path.join(override, "pg_dump"), os.X_OK):
            raise SourceError(f"pg_dump not found in ${BINDIR_ENV} ({override})")
        return override
    found = []
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin",
                    "/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin"):
        for d in glob.glob(pattern):
            if all(os.access(os.path.join(d, t), os.X_OK) for t in ("pg_dump", "psql")):
                found.append((tuple(int(n) for n in re.findall(r"\d+", d)), d))
    if found:
        return max(found)[1]
    on_path = shutil.which("pg_dump")
    if on_path:
        return os.path.dirname(on_path)
    raise SourceError("pg_dump not found: install the PostgreSQL client tools "
                      f"(e.g. postgresql-client) or set ${BINDIR_ENV}")


def _major(version_num: int) -> int:
    """A server_version_num reduced to its major version (90624 -> 90600, 150018 -> 150000)."""
    return version_num // 10000 * 10000 if version_num >= 100000 else version_num // 100 * 100


class _Server:
    """How to reach one server: the libpq environment, a private password file, the tools.

    Everything secret stays out of argv: the password is written to a 0600 file in a
    0700 temporary directory and named by ``PGPASSFILE``; database names go into argv as
    ``dbname='...'`` connection strings, which libpq never reads as anything else.
    """

    def __init__(self, url: str, credentials: Mapping[str, str], own_options: tuple[str, ...]):
        parts = urlsplit(url)
        self.options: dict[str, str] = {}
        self._env: dict[str, str] = {}
        userinfo, _, hostport = parts.netloc.rpartition("@")
        self.user = unquote(userinfo) if userinfo else ""
        host, port = hostport, ""
        if hostport.startswith("["):  # [IPv6]:port
            host, _, rest = hostport[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif ":" in hostport:
            host, _, port = hostport.rpartition(":")
        if port and not port.isdigit():
            raise UsageError(f"invalid PostgreSQL URL {url!r}: bad port {port!r}")
        if host:
            self._env["PGHOST"] = unquote(host)
        if port:
            self._env["PGPORT"] = port
        if self.user:
            self._env["PGUSER"] = self.user
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if "/" in path:
            raise UsageError(f"invalid PostgreSQL URL {url!r}: expected postgresql://user@host"
                             ":port/dbname (a '/' in a database name is written %2F)")
        self.dbname: str | None = unquote(path) or None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _SECRET_OPTIONS:
                raise UsageError(f"PostgreSQL URL carries a {key}, which would show in the "
                                 f"process list: give it in the config file or ${PASSWORD_ENV}")
            if key in _LIBPQ_ENV:
                self._env[_LIBPQ_ENV[key]] = value
            elif key in own_options:
                self.options[key] = value
            else:
                accepted = ", ".join(sorted([*_LIBPQ_ENV, *own_options]))
                raise UsageError(f"unknown PostgreSQL URL option {key!r} (accepted: {accepted})")
        password = credentials.get("password") or os.environ.get(PASSWORD_ENV) or ""
        if "\n" in password or "\r" in password:
            raise UsageError("the PostgreSQL password contains a line break, which a libpq "
                             "password file cannot hold")
        self.password = password
        query = "&".join(f"{k}={quote(v, safe='/')}"
                         for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
        self.url = (f"postgresql://{parts.netloc}/{quote(self.dbname or '', safe='')}"
                    + (f"?{query}" if query else ""))
        self._bindir: str | None = None
        self._tmpdir: str | None = None
        self._full_env: dict[str, str] | None = None

    # ---- environment and tools ----------------------------------------------------------

    def env(self) -> dict[str, str]:
        if self._full_env is None:
            env = dict(os.environ)
            env.pop("PGDATABASE", None)  # every command names its database itself
            env.update(self._env)
            env.setdefault("PGCONNECT_TIMEOUT", "15")  # an unreachable host fails, not hangs
            if self.password:
                env.pop("PGPASSWORD", None)  # it would win over the password file
                env["PGPASSFILE"] = self._passfile()
            self._full_env = env
        return self._full_env

    def _passfile(self) -> str:
        self._tmpdir = tempfile.mkdtemp(prefix="multibackup-pg-")  # mode 0700
        weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        path = os.path.join(self._tmpdir, "pgpass")
        escaped = self.password.replace("\\", "\\\\").replace(":", "\\:")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"*:*:*:*:{escaped}\n")
        return path

    def tool(self, name: str) -> str:
        if self._bindir is None:
            self._bindir = find_bindir()
        path = os.path.join(self._bindir, name)
        if not os.access(path, os.X_OK):
            raise SourceError(f"{name} not found in {self._bindir}: install the PostgreSQL "
                              f"client tools or set ${BINDIR_ENV}")
        return path

    def tool_version(self, name: str) -> int:
        """A tool's version as a server_version_num (``pg_dump (PostgreSQL) 15.18`` -> 150018)."""
        out = self.run([self.tool(name), "--version"], name)
        m = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", out)
        if not m:
            raise SourceError(f"{name}: cannot read its version from {out.strip()!r}")
        major, minor, patch = (int(g or 0) for g in m.groups())
        return major * 10000 + minor if major >= 10 else major * 10000 + minor * 100 + patch

    # ---- running the tools --------------------------------------------------------------

    def error_line(self, text: str, fallback: str = "") -> str:
        """The tool's first error line, without its program prefix or any secret."""
        lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
        line = next((x for x in lines if re.search(r"\b(error|fatal|panic):", x, re.I)),
                    lines[0] if lines else fallback)
        line = _TOOL_PREFIX.sub("", line)
        if self.password:
            line = line.replace(self.password, "***")
        if "no password supplied" in line:
            line += f" (give the password in the config file or ${PASSWORD_ENV})"
        return line

    def run(self, argv: list[str], what: str) -> str:
        try:
            p = subprocess.run(argv, env=self.env(), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=3600)
        except OSError as exc:
            raise SourceError(f"{self.url}: cannot run {argv[0]}: {exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise SourceError(f"{self.url}: {what} did not finish within an hour") from None
        if p.returncode != 0:
            msg = self.error_line(p.stderr.decode(errors="replace"), f"exit status {p.returncode}")
            raise SourceError(f"{self.url}: {what}: {msg}")
        return p.stdout.decode(errors="replace")

    def psql(self, database: str, *sql: str) -> list[str]:
        """Rows of unaligned, tuples-only output ('|' between columns)."""
        argv = [self.tool("psql"), "-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                f"--dbname={_conninfo_dbname(database)}"]
        for statement in sql:
            argv += ["-c", statement]
        return [line for line in self.run(argv, "psql").splitlines() if line]

    def maintenance_psql(self, *sql: str) -> tuple[str, list[str]]:
        """Run SQL in the server's maintenance database (postgres, else template1)."""
        for db in _MAINTENANCE_DBS:
            try:
                return db, self.psql(db, *sql)
            except SourceError as exc:
                if f'database "{db}" does not exist' not in str(exc) or db == _MAINTENANCE_DBS[-1]:
                    raise
        raise AssertionError("unreachable")

    def check(self, code: int, stderr: str, tool: str) -> None:
        """Raise ``SourceError`` for a tool's non-zero exit status or death by a signal."""
        if code == 0:
            return
        msg = self.error_line(stderr)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            raise SourceError(f"{tool} was killed by signal {name}" + (f": {msg}" if msg else ""))
        raise SourceError(f"{tool} failed: {msg or f'exit status {code}'}")

    def close(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


@contextlib.contextmanager
def _temp_stderr() -> Iterator[BinaryIO]:
    with tempfile.TemporaryFile() as f:
        yield f  # type: ignore[misc]


def _read_back(f: BinaryIO) -> str:
    f.seek(0)
    return f.read(65536).decode(errors="replace")


def _without_lines(chunks: Iterator[bytes], drop: set[bytes]) -> Iterator[bytes]:
    """The stream without the lines in ``drop`` (a small script: lines are short)."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield b"".join(line for line in data[:cut].splitlines(keepends=True)
                           if line.rstrip(b"\r\n") not in drop)
    if rest and rest not in drop:
        yield rest


class PostgresSource:
    """The dumps of one database or of every database of a server, plus its globals."""

    scheme = "postgresql"
    complete_only = True
    parallel = 2  # two dumps at once: the server and the repository both keep busy

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.with_globals = _bool_option("globals", server.options.get("globals", "yes"),
                                         "yes", "no")
        self._role_passwords = True
        self._listed = False

    def describe(self) -> str:
        return self.server.url

    def argv(self, name: str) -> list[str]:
        """The command that produces one entry (no secret: tests check exactly this)."""
        s = self.server
        if name == GLOBALS:
            argv = [s.tool("pg_dumpall"), "--globals-only", "--no-password"]
            if s.dbname is not None and "=" not in s.dbname and "://" not in s.dbname:
                argv.append(f"--database={s.dbname}")  # a database this role can connect to
            if not self._role_passwords:
                argv.append("--no-role-passwords")
            return argv
        return [s.tool("pg_dump"), "--format=custom", "--compress=0", "--no-password",
                f"--dbname={_conninfo_dbname(database_of(name))}"]

    def list_dir(self, path: str) -> list[Entry]:
        if path:
            return []
        s = self.server
        probe = ("SELECT current_setting('server_version_num'), "
                 "has_table_privilege('pg_catalog.pg_authid', 'SELECT')")
        if s.dbname is not None:
            rows = s.psql(s.dbname, probe)
            names = [s.dbname]
        else:
            _, rows = s.maintenance_psql(
                probe, "SELECT encode(convert_to(datname::text, 'UTF8'), 'hex') FROM pg_database"
                " WHERE datallowconn AND datname NOT IN ('template0', 'template1')"
                " ORDER BY datname")
            names = [bytes.fromhex(r).decode() for r in rows[1:]]
        version, can_read_authid = rows[0].split("|")
        server_major = _major(int(version))
        tool = s.tool_version("pg_dump")
        if _major(tool) < server_major:
            raise SourceError(f"{self.describe()}: pg_dump {_major(tool) // 10000} is older than "
                              f"the server ({server_major // 10000}); install the newer client "
                              f"tools or point ${BINDIR_ENV} at them")
        self._role_passwords = can_read_authid == "t"
        self._listed = True
        now = time.time_ns()  # a dump is as of now; its size is known once it is read
        entries = [Entry(dump_name(n), FILE, mtime_ns=now, mode=0o600) for n in names]
        if self.with_globals:
            entries.append(Entry(GLOBALS, FILE, mtime_ns=now, mode=0o600))
        return sorted(entries, key=lambda e: e.name)

    @contextlib.contextmanager
    def open(self, path: str, entry: Entry) -> Iterator[BinaryIO]:
        if not self._listed or not (path == GLOBALS or path.endswith(DUMP_SUFFIX)):
            raise SourceError(f"{self.describe()}: no such entry {path!r}")
        argv = self.argv(path)
        tool = os.path.basename(argv[0])
        with _temp_stderr() as err:
            try:
                proc = subprocess.Popen(argv, env=self.server.env(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=err, bufsize=0)
            except OSError as exc:
                raise SourceError(f"{self.describe()}: cannot run {argv[0]}: "
                                  f"{exc.strerror or exc}") from None
            assert proc.stdout is not None
            finished = False
            try:
                yield proc.stdout  # type: ignore[misc]
                finished = True
            finally:
                if not finished and proc.poll() is None:
                    proc.kill()  # the reader gave up: stop the dump, the run fails anyway
                proc.stdout.close()  # a dump not read to its end dies of SIGPIPE: an error
                code = proc.wait()
            try:
                self.server.check(code, _read_back(err), tool)
            except SourceError as exc:
                raise SourceError(f"{self.describe()}: {path}: {exc}") from None

    def close(self) -> None:
        self.server.close()


class PostgresTarget:
    """Loads ``<db>.dump`` files into databases and ``globals.sql`` into the server."""

    scheme = "postgresql"

    def __init__(self, server: _Server) -> None:
        self.server = server
        named = server.dbname is not None
        self.keep_owners = _bool_option("owners", server.options.get(
            "owners", "drop" if named else "keep"), "keep", "drop")
        self.keep_privileges = _bool_option("privileges", server.options.get(
            "privileges", "keep"), "keep", "drop")
        self._chosen: list[str] | None = None  # set by plan(): the files to load, in order
        self._loaded: list[str] = []

    def describe(self) -> str:
        return self.server.url

    # ---- checks before anything is written ----------------------------------------------

    def _kind(self, path: str) -> str:
        if path == GLOBALS:
            return GLOBALS
        if "/" not in path and path.endswith(DUMP_SUFFIX) and len(path) > len(DUMP_SUFFIX):
            return DUMP_SUFFIX
        raise SourceError(f"{self.describe()}: {path!r} is not a PostgreSQL dump of this "
                          f"program (<db>{DUMP_SUFFIX} or {GLOBALS}); restore it to a directory")

    def _relations(self, database: str) -> int | None:
        """How many tables, views and sequences a database has; None if it does not exist."""
        _, rows = self.server.maintenance_psql(
            f"SELECT count(*) FROM pg_database WHERE datname = {_literal(database)}")
        if rows != ["1"]:
            return None
        rows = self.server.psql(database, (
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"))
        return int(rows[0])

    def _refuse_non_empty(self, databases: list[str]) -> None:
        refuse_non_empty(self.describe(), [d for d in databases if self._relations(d)],
                         "tables")

    def plan(self, paths: list[str]) -> list[str]:
        """Check the whole selection before anything is written; the files to load, in order.

        Called by the restorer with every selected file path. Roles come first, since the
        databases' GRANTs and owners name them.
        """
        kinds = {p: self._kind(p) for p in paths}
        dumps = sorted(p for p, k in kinds.items() if k == DUMP_SUFFIX)
        has_globals = GLOBALS in kinds
        if self.server.dbname is not None:
            refuse_several_dumps(self.describe(), dumps)
            if dumps:
                self._refuse_non_empty([self.server.dbname])
                self._chosen = dumps  # roles are server-wide: not loaded into one database
            else:
                self._chosen = [GLOBALS] if has_globals else []
        else:
            self._refuse_non_empty([database_of(p) for p in dumps])
            self._chosen = ([GLOBALS] if has_globals else []) + dumps
        return list(self._chosen)

    # ---- writing --------------------------------------------------------------------------

    def makedirs(self, path: str) -> None:
        if path:
            self._kind(path + "/")  # raises: a database dump has no directories

    def symlink(self, path: str, target: str) -> None:
        self._kind(path + "/")

    def write(self, path: str, chunks: Iterator[bytes], *, size: int, mode: int,
              mtime_ns: int) -> None:
        kind = self._kind(path)
        named = self.server.dbname
        if kind == GLOBALS:
            if named is not None and (self._chosen is None or GLOBALS not in self._chosen):
                return  # not asked for: roles do not go with a copy of one database
            db, rows = self.server.maintenance_psql(
                "SELECT encode(convert_to(rolname::text, 'UTF8'), 'hex') FROM pg_roles "
                "WHERE oid = 10 OR rolname = current_user")
            existing = set()
            for name in (bytes.fromhex(r).decode() for r in rows):
                existing |= {f"CREATE ROLE {name};".encode(), f"CREATE ROLE {_ident(name)};".encode()}
            self._load(self._psql_argv(db), _without_lines(chunks, existing), "psql", path)
            return
        if named is not None and self._loaded:
            raise SourceError(f"{self.describe()}: the snapshot holds more than one database "
                              f"dump; choose one with --include /{path}")
        database = named if named is not None else database_of(path)
        self._restore_dump(database, chunks, path)
        self._loaded.append(path)

    def _psql_argv(self, database: str) -> list[str]:
        return [self.server.tool("psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1",
                f"--dbname={_conninfo_dbname(database)}"]

    def _restore_argv(self, database: str, single_transaction: bool) -> list[str]:
        argv = [self.server.tool("pg_restore"), "--no-password",
                "--single-transaction" if single_transaction else "--exit-on-error",
                f"--dbname={_conninfo_dbname(database)}"]
        if not self.keep_owners:
            argv.append("--no-owner")
        if not self.keep_privileges:
            argv.append("--no-privileges")
        return argv

    def _restore_dump(self, database: str, chunks: Iterator[bytes], path: str) -> None:
        relations = self._relations(database)
        if relations:
            self._refuse_non_empty([database])
        if relations is not None:  # exists, empty: one transaction, all or nothing
            self._load(self._restore_argv(database, True), chunks, "pg_restore", path)
            return
        s = self.server
        temp = f"multibackup_restore_{secrets.token_hex(6)}"
        s.maintenance_psql(f"CREATE DATABASE {_ident(temp)} TEMPLATE template0")
        try:
            self._load(self._restore_argv(temp, False), chunks, "pg_restore", path)
            s.maintenance_psql(f"ALTER DATABASE {_ident(temp)} RENAME TO {_ident(database)}")
        except BaseException:
            with contextlib.suppress(SourceError):
                s.maintenance_psql(f"DROP DATABASE IF EXISTS {_ident(temp)}")
            raise

    def _load(self, argv: list[str], chunks: Iterator[bytes], tool: str, path: str) -> None:
        """Feed a file to a tool's stdin, chunk by chunk, and check how the tool ended."""
        with _temp_stderr() as err:
            try:
                proc = subprocess.Popen(argv, env=self.server.env(), stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=err)
            except OSError as exc:
                raise SourceError(f"{self.describe()}: cannot run {argv[0]}: "
                                  f"{exc.strerror or exc}") from None
            assert proc.stdin is not None
            fed = stopped_early = False
            try:
                try:
                    for chunk in chunks:
                        proc.stdin.write(chunk)
                    proc.stdin.close()
                except BrokenPipeError:
                    stopped_early = True  # the tool gave up: its exit status says why
                fed = True
            finally:
                if not fed:
                    proc.kill()
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                code = proc.wait()
            try:
                self.server.check(code, _read_back(err), tool)
                if stopped_early:
                    raise SourceError(f"{tool} stopped reading its input")
            except SourceError as exc:  # the restorer names the file
                raise SourceError(f"{self.describe()}: {exc}") from None

    def close(self) -> None:
        self.server.close()


def open_source(url: str, credentials: Mapping[str, str]) -> PostgresSource:
    return PostgresSource(_Server(url, credentials, _SOURCE_OPTIONS))


def open_target(url: str, credentials: Mapping[str, str]) -> PostgresTarget:
    return PostgresTarget(_Server(url, credentials, _TARGET_OPTIONS))
