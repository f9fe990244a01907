"""PostgreSQL sources and restore targets through the CLI, against real servers.

A pgbench database (200,000 accounts), a database with bytea data, a view, a function,
a sequence and a GRANT (in a name that needs quoting everywhere), and roles with
passwords: backed up with pg_dump/pg_dumpall, restored with pg_restore/psql, compared
row count by row count and checksum by checksum. Dumps that die halfway, wrong
passwords, a stopped server and missing tools fail the run with one line and no snapshot.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI, _free_port
from servers_postgres import PGServer, pg_server, start_pg_server  # noqa: F401 - fixture

SHOP = "Shop's Data"  # quotes and a space: conninfo, identifier and file-name escaping
REPORTING_PASSWORD = "reporting-pw-do-not-leak-41aa"
READER_PASSWORD = "reader-pw-do-not-leak-93fe"


def _fingerprint(server: PGServer, database: str) -> dict[str, object]:
    """Row count and an md5 of every row of every table, plus the view, function and sequence."""
    tables = server.psql("SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) "
                         "FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND "
                         "table_schema NOT IN ('pg_catalog', 'information_schema') "
                         "ORDER BY 1", database).splitlines()
    out: dict[str, object] = {}
    for t in tables:
        out[t] = server.psql(f"SELECT count(*), md5(coalesce(string_agg(x::text, ',' "
                             f"ORDER BY x::text), '')) FROM {t} x", database)
    if "public.files" in out:  # the shop database, under whichever name
        out["view"] = server.psql("SELECT md5(string_agg(v::text, ',' ORDER BY v::text)) "
                                  "FROM big_files v", database)
        out["function"] = server.psql("SELECT total_bytes()", database)
        out["sequence"] = server.psql("SELECT last_value FROM files_id_seq", database)
        out["grant"] = server.psql("SELECT has_table_privilege('reporting', 'files', 'SELECT')",
                                   database)
    return out


@pytest.fixture(scope="module")
def pg(pg_server: PGServer) -> PGServer:  # noqa: F811 - the imported fixture
    """The session server with the test data and roles, created once."""
    s = pg_server
    s.psql("CREATE DATABASE bench")
    subprocess.run([s.tool("pgbench"), "-i", "-s", "2", "-q", "bench"], env=s.env(),
                   check=True, capture_output=True, timeout=120)
    s.psql(f"CREATE ROLE reporting LOGIN PASSWORD '{REPORTING_PASSWORD}'")
    s.psql(f"CREATE ROLE reader LOGIN PASSWORD '{READER_PASSWORD}'")  # reads the shop only
    s.psql(f"CREATE DATABASE \"{SHOP.replace(chr(34), chr(34) * 2)}\"")
    s.psql("""
        CREATE TABLE files (id serial PRIMARY KEY, name text NOT NULL, content bytea,
                            added timestamptz DEFAULT '2024-01-02 03:04:05+00');
        INSERT INTO files (name, content)
            SELECT 'file-' || i, decode(repeat(md5(i::text), 1 + (i % 200)), 'hex')
                || '\\x00ff00'::bytea FROM generate_series(1, 2000) i;
        INSERT INTO files (name, content) VALUES ('empty', ''), ('null', NULL);
        CREATE VIEW big_files AS SELECT id, name FROM files WHERE length(content) > 1500;
        CREATE FUNCTION total_bytes() RETURNS bigint LANGUAGE sql
            AS 'SELECT sum(length(content)) FROM files';
        COMMENT ON TABLE files IS 'uploaded files';
        GRANT SELECT ON files TO reporting;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader;
        GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO reader;
    """, SHOP)
    return s


@pytest.fixture
def env(pg: PGServer) -> dict[str, str]:
    return {"MULTIBACKUP_SOURCE_PASSWORD": pg.password}


def _snapshot_count(cli: CLI) -> int:
    return len(cli("snapshots", "--json").json())


def _no_secret(*texts: str, secrets: tuple[str, ...]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def _error_line(r) -> str:
    """The one error line (a restore adds its count of failed items)."""
    lines = r.err.strip().splitlines()
    if lines and lines[-1] == "error: 1 item(s) could not be restored":
        lines.pop()
    assert len(lines) == 1, r.err
    return lines[0]


def test_one_database_backup_restore_and_refusal(pg: PGServer, cli: CLI, env: dict[str, str],
                                                 tmp_path: Path) -> None:
    cli("init")
    url = pg.url("bench")
    first = cli("backup", url, "--json", env=env)
    _no_secret(first.out, first.err, secrets=(pg.password,))
    summary = first.json()
    assert summary["files_new"] == 2 and summary["total_bytes"] > 10_000_000
    listing = cli("ls", "latest").out.splitlines()
    assert listing == ["/bench.dump", "/globals.sql"]
    assert cli("snapshots", "--json").json()[0]["paths"] == [url]

    # uncompressed custom format: an unchanged database deduplicates against the last run
    second = cli("backup", url, "--json", env=env).json()
    assert second["parent"] == summary["snapshot_id"]
    assert second["data_added_raw"] < summary["total_bytes"] // 5

    r = cli("restore", "latest", "--target", pg.url("bench_copy"), env=env)
    assert "1 files" in r.out  # the dump; roles stay out of a copy of one database
    _no_secret(r.out, r.err, secrets=(pg.password,))
    original = _fingerprint(pg, "bench")
    assert original["public.pgbench_accounts"][:7] == "200000|"  # type: ignore[index]
    assert _fingerprint(pg, "bench_copy") == original

    # never into a database that has tables: refused before anything is written
    r = cli("restore", "latest", "--target", pg.url("bench_copy"), env=env, ok=False)
    assert r.code == 1
    assert "already hold tables" in _error_line(r)

    # the dump is a standard archive: pg_restore reads what `multibackup dump` writes
    archive = tmp_path / "bench.dump"
    with open(archive, "wb") as f:
        subprocess.run([sys.executable, "-m", "multibackup", "dump", "latest", "bench.dump"],
                       env={**cli.env, **env}, stdout=f, check=True, timeout=120)
    toc = subprocess.run([pg.tool("pg_restore"), "--list", str(archive)],
                         capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public pgbench_accounts" in toc

    # globals.sql alone, explicitly chosen, is applied to the server the target names
    r = cli("restore", "latest", "--target", pg.url("bench_copy"), "--include", "/globals.sql",
            env=env, ok=False)
    assert r.code == 1 and 'role "reader" already exists' in _error_line(r)


def test_all_databases_with_globals_onto_a_fresh_server(pg: PGServer, cli: CLI,
                                                        env: dict[str, str]) -> None:
    cli("init")
    r = cli("backup", pg.url(""), env=env)
    _no_secret(r.out, r.err, secrets=(pg.password,))
    names = cli("ls", "latest").out.splitlines()
    assert {"/bench.dump", f"/{SHOP}.dump", "/postgres.dump", "/globals.sql"} <= set(names)
    assert not any("template" in n for n in names)
    globals_sql = cli("dump", "latest", "globals.sql").out
    assert "CREATE ROLE reporting;" in globals_sql and "SCRAM-SHA-256$" in globals_sql

    fresh = start_pg_server()
    try:
        dbs = ["bench", SHOP]
        # several dumps and a target naming one database: a clear refusal, nothing created
        r = cli("restore", "latest", "--target", fresh.url("one"), env=env, ok=False)
        assert r.code == 1 and "choose one with --include" in _error_line(r)
        # owners kept but the roles missing: the load fails and leaves no database behind
        r = cli("restore", "latest", "--include", f"/{SHOP}.dump",
                "--target", fresh.url("shop") + "?owners=keep", env=env, ok=False)
        assert r.code == 1 and re.search(r'role "(reader|reporting)" does not exist',
                                         _error_line(r))
        assert fresh.psql("SELECT datname FROM pg_database ORDER BY 1").split() == [
            "postgres", "template0", "template1"]

        # the whole server: roles first, then every database under its own name
        r = cli("restore", "latest", "--include", "/globals.sql", "--include", "/bench.dump",
                "--include", f"/{SHOP}.dump", "--include", "/postgres.dump",
                "--target", fresh.url(""), env=env)
        assert "4 files" in r.out
        for db in dbs:
            assert _fingerprint(fresh, db) == _fingerprint(pg, db)
        # the role came back with its password: it logs in and reads what it was granted
        login = subprocess.run([fresh.tool("psql"), "-X", "-A", "-t", "-c",
                                "SELECT count(*) FROM files"],
                               env={**fresh.env(SHOP), "PGUSER": "reporting",
                                    "PGPASSWORD": REPORTING_PASSWORD},
                               capture_output=True, text=True)
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == "2002"
        owner = fresh.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'files'", SHOP)
        assert owner == "postgres"
        # a second copy, chosen with --include, into an empty database made beforehand
        fresh.psql('CREATE DATABASE "shop copy"')
        cli("restore", "latest", "--include", f"/{SHOP}.dump", "--target",
            fresh.url("shop copy"), env=env)
        assert _fingerprint(fresh, "shop copy") == _fingerprint(pg, SHOP)
        leftovers = fresh.psql("SELECT count(*) FROM pg_database WHERE datname LIKE "
                               "'multibackup_restore_%'")
        assert leftovers == "0"
    finally:
        fresh.destroy()


def test_non_superuser_backup_leaves_out_role_passwords(pg: PGServer, cli: CLI,
                                                        tmp_path: Path) -> None:
    cli("init")
    reader = {"MULTIBACKUP_SOURCE_PASSWORD": READER_PASSWORD}
    r = cli("backup", pg.url(SHOP, user="reader"), env=reader)
    _no_secret(r.out, r.err, secrets=(READER_PASSWORD,))
    globals_sql = cli("dump", "latest", "globals.sql").out
    assert "CREATE ROLE reporting;" in globals_sql and "PASSWORD" not in globals_sql
    cli("restore", "latest", "--target", pg.url("shop_by_reader"),
        env={"MULTIBACKUP_SOURCE_PASSWORD": pg.password})
    assert _fingerprint(pg, "shop_by_reader") == _fingerprint(pg, SHOP)

    # through the Unix socket in the server's directory, with the postgres:// spelling
    socket_url = f"postgres://reader@/shop_by_reader?host={pg.workdir}&port={pg.port}"
    r = cli("backup", socket_url, "--json", env=reader)
    assert r.json()["files_new"] == 2
    assert cli("snapshots", "--json").json()[-1]["paths"] == [
        f"postgresql://reader@/shop_by_reader?host={pg.workdir}&port={pg.port}"]


def test_bad_inputs_fail_with_one_line_and_no_snapshot(pg: PGServer, cli: CLI,
                                                       env: dict[str, str],
                                                       tmp_path: Path) -> None:
    cli("init")
    url = pg.url("bench")
    wrong = {"MULTIBACKUP_SOURCE_PASSWORD": "wrong-pw-also-secret-77"}
    r = cli("backup", url, env=wrong, ok=False)
    assert r.code == 1 and "password authentication failed" in _error_line(r)
    _no_secret(r.out, r.err, secrets=("wrong-pw-also-secret-77", pg.password))

    r = cli("backup", url, env={"MULTIBACKUP_SOURCE_PASSWORD": "", "PGPASSWORD": ""}, ok=False)
    assert r.code == 1 and "no password supplied" in _error_line(r)

    r = cli("backup", pg.url("no_such_db"), env=env, ok=False)
    assert r.code == 1 and 'database "no_such_db" does not exist' in _error_line(r)

    closed = _free_port()  # nothing listens there
    r = cli("backup", f"postgresql://postgres@127.0.0.1:{closed}/bench", env=env, ok=False)
    assert r.code == 1 and "Connection refused" in _error_line(r)

    empty = tmp_path / "no-tools"
    empty.mkdir()
    r = cli("backup", url, env={**env, "MULTIBACKUP_PG_BINDIR": str(empty)}, ok=False)
    assert r.code == 1 and "pg_dump not found" in _error_line(r)

    # a pg_dump older than the server would write an incomplete dump: refused
    old = tmp_path / "old-tools"
    old.mkdir()
    (old / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    (old / "pg_dump").chmod(0o755)
    (old / "psql").symlink_to(pg.tool("psql"))
    r = cli("backup", url, env={**env, "MULTIBACKUP_PG_BINDIR": str(old)}, ok=False)
    assert r.code == 1 and "pg_dump 9 is older than the server (15)" in _error_line(r)

    r = cli("backup", f"postgresql://postgres:{pg.password}@127.0.0.1:{pg.port}/bench",
            ok=False)
    assert r.code == 2 and pg.password not in r.out + r.err
    r = cli("backup", url + "?sslmod=require", env=env, ok=False)
    assert r.code == 2 and "unknown PostgreSQL URL option 'sslmod'" in _error_line(r)
    assert _snapshot_count(cli) == 0

    # a snapshot of plain files is not loaded into a database
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("hello")
    cli("backup", str(files))
    r = cli("restore", "latest", "--target", pg.url("from_files"), env=env, ok=False)
    assert r.code == 1 and "is not a PostgreSQL dump" in _error_line(r)


# ---- dumps that die halfway --------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _written(pid: int) -> int:
    """Bytes a process has written so far (it must still be running)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


@pytest.fixture
def halfway_dump(pg: PGServer, cli: CLI, env: dict[str, str]) -> Iterator[tuple]:
    """A backup whose pg_dump has written part of the dump and is blocked on the pipe.

    A lock held by another session keeps pg_dump waiting until the CLI is paused; then
    the lock goes, pg_dump writes until the pipe is full and waits there: halfway, for
    certain, however fast the machine.
    """
    cli("init")
    locker = subprocess.Popen([pg.tool("psql"), "-X", "-q"], env=pg.env("bench"),
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert locker.stdin is not None
    locker.stdin.write("BEGIN; LOCK TABLE pgbench_accounts IN ACCESS EXCLUSIVE MODE;\n")
    locker.stdin.flush()
    deadline = time.monotonic() + 10
    while pg.psql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND "
                  "relation = 'pgbench_accounts'::regclass", "bench") != "1":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc = subprocess.Popen([sys.executable, "-m", "multibackup", "backup", pg.url("bench")],
                            env={**cli.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        dumper = None
        deadline = time.monotonic() + 30
        while dumper is None:
            assert time.monotonic() < deadline, "pg_dump did not start"
            for child in _children(proc.pid):
                try:  # the dump itself, not `pg_dump --version` or a psql probe
                    if b"--format=custom" in Path(f"/proc/{child}/cmdline").read_bytes():
                        dumper = child
                except OSError:  # a short-lived one that already ended
                    continue
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGSTOP)
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(10)
        deadline = time.monotonic() + 30
        while _written(dumper) < 32768:  # a pipe holds 64 KiB; the dump is ~20 MB
            assert time.monotonic() < deadline, "pg_dump wrote nothing"
            time.sleep(0.02)
        yield proc, dumper
    finally:
        if locker.poll() is None:
            locker.kill()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.wait(60)


def test_pg_dump_killed_halfway_fails_the_run(pg: PGServer, cli: CLI,
                                              halfway_dump: tuple) -> None:
    proc, dumper = halfway_dump
    # the password is in neither pg_dump's argv nor its environment, only in a private file
    argv = Path(f"/proc/{dumper}/cmdline").read_bytes().split(b"\0")
    environ = dict(v.split(b"=", 1) for v in Path(f"/proc/{dumper}/environ").read_bytes()
                   .split(b"\0") if b"=" in v)
    assert all(pg.password.encode() not in a for a in argv)
    assert b"PGPASSWORD" not in environ
    passfile = environ[b"PGPASSFILE"].decode()
    assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(passfile)).st_mode) == 0o700

    os.kill(dumper, signal.SIGKILL)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [err.strip()]
    assert "bench.dump: pg_dump was killed by signal SIGKILL" in err
    assert pg.password not in out + err
    assert _snapshot_count(cli) == 0
    assert not os.path.exists(passfile)  # the password file went with the run


def test_server_ending_the_session_halfway_fails_the_run(pg: PGServer, cli: CLI,
                                                         halfway_dump: tuple) -> None:
    proc, dumper = halfway_dump
    killed = pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name = 'pg_dump'")
    assert killed == "1"
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "bench.dump: pg_dump failed:" in err
    assert _snapshot_count(cli) == 0
