"""MariaDB sources and restore targets through the CLI, against a real server.

A shop database of about 100,000 rows (InnoDB and MyISAM tables, binary data, text with
quotes, backslashes and emoji, a trigger, a function, a procedure, an event and a view) is
backed up with mariadb-dump and loaded back with the mariadb client into a new name, and
compared table by table (row counts and CHECKSUM TABLE) and object by object. A server
backup brings back databases under their names and the accounts with their passwords and
grants, leaving existing accounts alone. Wrong passwords, a stopped server, a missing
database or tool and a dump that dies halfway fail the run with one line and no snapshot.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLI, _free_port
from servers_mariadb import (  # noqa: F401 - the fixture
    BACKUP_PASSWORD,
    MariaDBServer,
    mariadb_server,
    sql_literal,
)

ODD = "odd/name ü"  # a '/' and a space: file-name, URL and identifier escaping
APP_PASSWORD = "app-pw-do-not-leak-5d1c"


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _rows(values: list[str], table: str, batch: int = 2000) -> list[str]:
    return [f"INSERT INTO {table} VALUES " + ",".join(values[i:i + batch]) + ";"
            for i in range(0, len(values), batch)]


def _shop_sql() -> str:
    """The shop: 20,000 customers, 60,000 orders, 20,000 blobs, 1,000 MyISAM rows."""
    rng = random.Random(5)
    notes = ["", "plain", "it's \"quoted\"", "back\\slash", "line\nbreak\ttab", "emoji 😀 ü",
             "x" * 300]
    out = ["""
        CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL,
            email VARCHAR(100), created DATETIME NOT NULL) ENGINE=InnoDB;
        CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NOT NULL,
            total DECIMAL(10,2) NOT NULL, note TEXT,
            FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB;
        CREATE TABLE blobs (id INT PRIMARY KEY, data BLOB) ENGINE=InnoDB;
        CREATE TABLE legacy (id INT PRIMARY KEY, label CHAR(20)) ENGINE=MyISAM;
        CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT,
            action VARCHAR(20)) ENGINE=InnoDB;
    """]
    out += _rows([f"({i},{sql_literal(f'Customer {i} O' + chr(39) + 'Brien')},"
                  f"{'NULL' if i % 10 == 0 else sql_literal(f'c{i}@example.com')},"
                  f"'2024-01-01 00:00:00' + INTERVAL {i} MINUTE)" for i in range(1, 20_001)],
                 "customers")
    out += _rows([f"({i},{rng.randint(1, 20_000)},{rng.randint(0, 10**6) / 100:.2f},"
                  f"{'NULL' if i % 17 == 0 else sql_literal(rng.choice(notes))})"
                  for i in range(1, 60_001)], "orders")
    out += _rows([f"({i},X'{rng.randbytes(rng.randint(0, 120)).hex()}')"
                  for i in range(1, 20_001)], "blobs")
    out += _rows([f"({i},'label {i % 7}')" for i in range(1, 1_001)], "legacy")
    out.append("""
        CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
            INSERT INTO audit (order_id, action) VALUES (NEW.id, 'insert');
        CREATE FUNCTION order_count(cid INT) RETURNS INT READS SQL DATA
            RETURN (SELECT COUNT(*) FROM orders WHERE customer_id = cid);
        CREATE PROCEDURE top_customers(IN n INT)
            SELECT customer_id, SUM(total) AS s FROM orders GROUP BY customer_id
            ORDER BY s DESC LIMIT n;
        CREATE EVENT purge_audit ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit WHERE id < 0;
        CREATE VIEW customer_totals AS SELECT c.id, c.name, SUM(o.total) AS total
            FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name;
        INSERT INTO orders VALUES (60001, 1, 9.99, 'after the trigger');
    """)
    return "\n".join(out)


def fingerprint(server: MariaDBServer, db: str) -> dict[str, object]:
    """Row counts and CHECKSUM TABLE of every table, and the names of the other objects."""
    lit = sql_literal(db)
    tables = server.root_sql(f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                             f"TABLE_SCHEMA = {lit} AND TABLE_TYPE = 'BASE TABLE' "
                             f"ORDER BY 1").split()
    out: dict[str, object] = {}
    if tables:
        qualified = ", ".join(f"{ident(db)}.{ident(t)}" for t in tables)
        for line in server.root_sql(f"CHECKSUM TABLE {qualified}").splitlines():
            name, checksum = line.split("\t")
            out[f"checksum {name.rsplit('.', 1)[1]}"] = checksum
        counts = " UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM {ident(db)}.{ident(t)}"
                                    for t in tables)
        for line in server.root_sql(counts).splitlines():
            name, count = line.split("\t")
            out[f"rows {name}"] = int(count)
    for kind, query in (
            ("routines", f"SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
                         f"WHERE ROUTINE_SCHEMA = {lit}"),
            ("triggers", f"SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM "
                         f"information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {lit}"),
            ("events", f"SELECT EVENT_NAME FROM information_schema.EVENTS "
                       f"WHERE EVENT_SCHEMA = {lit}"),
            ("views", f"SELECT TABLE_NAME FROM information_schema.VIEWS "
                      f"WHERE TABLE_SCHEMA = {lit}")):
        out[kind] = sorted(server.root_sql(query).splitlines())
    return out


@pytest.fixture(scope="module")
def maria(mariadb_server: MariaDBServer) -> MariaDBServer:  # noqa: F811 - the imported fixture
    """The session server with the shop database, made once."""
    s = mariadb_server
    s.root_sql("CREATE DATABASE shop")
    s.root_sql(_shop_sql(), "shop")
    return s


@pytest.fixture
def env(maria: MariaDBServer) -> dict[str, str]:
    return maria.env()


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert BACKUP_PASSWORD not in text and APP_PASSWORD not in text


def test_one_database_backup_restore_into_a_new_name(maria: MariaDBServer, cli: CLI,
                                                     env: dict[str, str]) -> None:
    cli("init")
    before = fingerprint(maria, "shop")
    assert before["rows orders"] == 60_001 and before["rows audit"] == 1
    assert sum(v for k, v in before.items() if k.startswith("rows ")) > 100_000  # type: ignore[misc]
    assert before["routines"] == ["FUNCTION\torder_count", "PROCEDURE\ttop_customers"]
    assert before["triggers"] == ["orders_audit\torders"]

    r = cli("backup", maria.url("shop"), "--json", env=env)
    _no_secret(r.out, r.err)
    summary = r.json()
    assert summary["files_new"] == 1 and summary["total_bytes"] > 5_000_000
    assert cli("ls", "latest").out.split() == ["/shop.sql"]
    snaps = cli("snapshots", "--json").json()
    assert snaps[0]["paths"] == [maria.url("shop")]

    r = cli("restore", "latest", "--target", maria.url("shop_copy"), env=env)
    _no_secret(r.out, r.err)
    assert fingerprint(maria, "shop_copy") == before
    # the copy works on its own: the view reads its tables, the trigger and function run
    view = maria.root_sql("SHOW CREATE VIEW customer_totals", "shop_copy")
    assert "`shop`" not in view
    assert (maria.root_sql("SELECT COUNT(*), SUM(total) FROM customer_totals", "shop_copy")
            == maria.root_sql("SELECT COUNT(*), SUM(total) FROM customer_totals", "shop"))
    maria.root_sql("INSERT INTO orders VALUES (70000, 2, 1.00, 'new')", "shop_copy")
    assert maria.root_sql("SELECT COUNT(*) FROM audit", "shop_copy").strip() == "2"
    assert (maria.root_sql("SELECT order_count(3)", "shop_copy")
            == maria.root_sql("SELECT order_count(3)", "shop"))

    # a database that holds tables is never loaded into; an empty one is
    r = cli("restore", "latest", "--target", maria.url("shop_copy"), env=env, ok=False)
    assert r.code != 0 and "shop_copy already hold" in r.err
    assert maria.root_sql("SELECT COUNT(*) FROM orders", "shop_copy").strip() == "60002"
    maria.root_sql("CREATE DATABASE shop_empty")
    cli("restore", "latest", "--target", maria.url("shop_empty"), env=env)
    assert fingerprint(maria, "shop_empty") == before

    # the dump itself, as a user would pipe it into a client
    dumped = cli("dump", "latest", "/shop.sql").out
    assert dumped.rstrip().splitlines()[-1].startswith("-- Dump completed")
    assert "CREATE DATABASE" not in dumped and "\nUSE " not in dumped
    maria.root_sql("DROP DATABASE shop_copy; DROP DATABASE shop_empty")


def test_server_backup_with_accounts(maria: MariaDBServer, cli: CLI,
                                     env: dict[str, str]) -> None:
    cli("init")
    maria.root_sql(f"""
        CREATE DATABASE blog;
        CREATE TABLE blog.posts (id INT PRIMARY KEY, title VARCHAR(50), body MEDIUMTEXT);
        INSERT INTO blog.posts VALUES (1, 'hello', REPEAT('text ', 1000)), (2, 'bye', NULL);
        CREATE DATABASE {ident(ODD)};
        CREATE TABLE {ident(ODD)}.t (id INT PRIMARY KEY, v VARBINARY(10));
        INSERT INTO {ident(ODD)}.t VALUES (1, X'00FF27'), (2, '');
        CREATE USER app@'%' IDENTIFIED BY {sql_literal(APP_PASSWORD)};
        CREATE ROLE blog_reader;
        GRANT SELECT ON blog.* TO blog_reader;
        GRANT blog_reader TO app@'%';
        GRANT INSERT ON blog.posts TO app@'%';
        CREATE USER keeper@'10.0.0.%' IDENTIFIED BY 'old-keeper-pw';
    """)
    blog, odd = fingerprint(maria, "blog"), fingerprint(maria, ODD)
    app_hash = maria.root_sql("SELECT authentication_string FROM mysql.user WHERE User='app'")
    app_grants = maria.root_sql("SHOW GRANTS FOR app@'%'")

    r = cli("backup", maria.url() + "?parallel=2", env=env)  # two dumps at once
    _no_secret(r.out, r.err)
    assert cli("snapshots", "--json").json()[0]["paths"] == [maria.url()]
    listing = cli("ls", "latest").out.splitlines()
    assert {"/@users.sql", "/blog.sql", "/odd%2Fname ü.sql", "/shop.sql"} <= set(listing)
    assert not {"/mysql.sql", "/sys.sql", "/information_schema.sql",
                "/performance_schema.sql"} & set(listing)
    assert "CREATE USER `app`@`%`" in cli("dump", "latest", "/@users.sql").out

    # several databases into one named database: refused before anything is written
    r = cli("restore", "latest", "--target", maria.url("one"), env=env, ok=False)
    assert r.code != 0 and "--include /" in r.err and "target names one database" in r.err
    assert "one" not in maria.root_sql("SHOW DATABASES").split()
    # the whole server onto itself: shop holds tables, so nothing at all is loaded
    maria.root_sql("DROP DATABASE blog")
    r = cli("restore", "latest", "--target", maria.url(), env=env, ok=False)
    assert r.code != 0 and "shop already hold" in r.err
    assert "blog" not in maria.root_sql("SHOW DATABASES").split()

    # lose two databases and an account, change another's password, then restore them
    maria.root_sql(f"DROP DATABASE {ident(ODD)}; DROP USER app@'%'; DROP ROLE blog_reader;"
                   "ALTER USER keeper@'10.0.0.%' IDENTIFIED BY 'new-keeper-pw';")
    keeper_hash = maria.root_sql("SELECT authentication_string FROM mysql.user "
                                 "WHERE User='keeper'")
    r = cli("restore", "latest", "--target", maria.url(), "--include", "/@users.sql",
            "--include", "/blog.sql", "--include", "/odd%2Fname ü.sql", env=env)
    _no_secret(r.out, r.err)
    assert fingerprint(maria, "blog") == blog and fingerprint(maria, ODD) == odd
    assert maria.root_sql("SELECT authentication_string FROM mysql.user "
                          "WHERE User='app'") == app_hash
    assert maria.root_sql("SHOW GRANTS FOR app@'%'") == app_grants
    # an account that existed keeps its current password; the restoring account still works
    assert maria.root_sql("SELECT authentication_string FROM mysql.user "
                          "WHERE User='keeper'") == keeper_hash
    # app logs in with its old password and reads through its role
    login = subprocess.run(
        [maria.client, "--no-defaults", "-uapp", "-h127.0.0.1", f"-P{maria.port}", "-N",
         "-e", "SET ROLE blog_reader; SELECT COUNT(*) FROM blog.posts"],
        env={**os.environ, "MYSQL_PWD": APP_PASSWORD}, capture_output=True, text=True)
    assert login.returncode == 0 and login.stdout.strip() == "2", login.stderr

    # one database of the server snapshot into another name
    cli("restore", "latest", "--target", maria.url("blog2"), "--include", "/blog.sql", env=env)
    assert fingerprint(maria, "blog2") == blog
    maria.root_sql(f"DROP DATABASE blog; DROP DATABASE blog2; DROP DATABASE {ident(ODD)};"
                   "DROP USER app@'%'; DROP ROLE blog_reader; DROP USER keeper@'10.0.0.%'")


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_inputs_fail_with_one_line_and_no_snapshot(maria: MariaDBServer, cli: CLI,
                                                       env: dict[str, str],
                                                       tmp_path: Path) -> None:
    cli("init")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    wrong = "wrong-pw-do-not-leak-0b7e"
    cases = [
        (maria.url("shop"), {"MULTIBACKUP_SOURCE_PASSWORD": wrong}, 1, "Access denied"),
        (maria.url("no_such_db"), env, 1, "database 'no_such_db' does not exist"),
        (f"mysql://backup@127.0.0.1:{_free_port()}/shop", env, 1, "Can't connect"),
        (maria.url("shop"), {**env, "PATH": str(empty)}, 1, "mariadb-dump (or mysqldump) not found"),
        (f"mysql://backup:{wrong}@127.0.0.1:{maria.port}/shop", env, 2, "carries a password"),
        (maria.url("shop") + "?colour=blue", env, 2, "unknown MySQL URL option 'colour'"),
    ]
    for url, case_env, code, expected in cases:
        r = cli("backup", url, env=case_env, ok=False)
        assert r.code == code, (url, r.err)
        assert expected in _one_error_line(r.err), (url, r.err)
        assert wrong not in r.out + r.err and BACKUP_PASSWORD not in r.out + r.err
    assert cli("snapshots", "--json").json() == []


def _descendant(pid: int, name: str) -> int | None:
    """A process called ``name`` below ``pid``."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            names[int(entry)] = stat[stat.index("(") + 1: stat.rindex(")")]
    for child, comm in names.items():
        p = child
        while p in parents and p > 1:
            p = parents[p]
            if p == pid and comm == name:
                return child
    return None


def test_dump_killed_halfway_fails_the_run(maria: MariaDBServer, cli: CLI,
                                           env: dict[str, str]) -> None:
    """mariadb-dump waits on a locked table after streaming the others, and is killed."""
    cli("init")
    locker = maria.root_client("shop")
    assert locker.stdin is not None and locker.stdout is not None
    locker.stdin.write(b"LOCK TABLES orders WRITE; SELECT 'locked';\n")
    locker.stdin.flush()
    assert locker.stdout.readline().strip() == b"locked"
    cli.env.update(env)
    proc = cli.popen("backup", maria.url("shop"))
    try:
        deadline = time.monotonic() + 60
        dumper = None
        while time.monotonic() < deadline:
            dumper = dumper or _descendant(proc.pid, "mariadb-dump")
            waiting = maria.root_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                     "WHERE USER = 'backup' AND STATE LIKE "
                                     "'Waiting for table metadata lock'").strip()
            if dumper and waiting == "1":
                break
            time.sleep(0.05)
        assert dumper, "mariadb-dump did not start"
        # the password is neither in its argv nor in its environment
        argv = Path(f"/proc/{dumper}/cmdline").read_bytes().split(b"\0")
        assert argv[1].startswith(b"--defaults-file=/dev/fd/")
        environ = Path(f"/proc/{dumper}/environ").read_bytes()
        assert BACKUP_PASSWORD.encode() not in b"".join(argv) + environ
        os.kill(dumper, signal.SIGKILL)
    finally:
        locker.stdin.write(b"UNLOCK TABLES;\n")
        locker.stdin.close()
        locker.wait(30)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    line = _one_error_line(err)
    assert "mariadb-dump was killed by signal SIGKILL while dumping database 'shop'" in line
    assert BACKUP_PASSWORD not in out + err
    assert cli("snapshots", "--json").json() == []


def test_truncated_or_failing_dump_fails_the_run(maria: MariaDBServer, cli: CLI,
                                                 env: dict[str, str], tmp_path: Path) -> None:
    """A dump tool that stops early but exits 0, or writes it all but exits non-zero."""
    cli("init")
    real = shutil.which("mariadb-dump")
    assert real
    for name, script, expected in (
            ("truncated", f'"{real}" "$@" | head -c 300000\n', "ends without mariadb-dump's "
                                                                "'-- Dump completed' line"),
            ("failing", f'"{real}" "$@"\nexit 3\n', "exited with status 3")):
        bindir = tmp_path / name
        bindir.mkdir()
        wrapper = bindir / "mariadb-dump"
        wrapper.write_text("#!/bin/sh\n" + script)
        wrapper.chmod(0o755)
        r = cli("backup", maria.url("shop"), env={**env, "PATH": f"{bindir}:{os.environ['PATH']}"},
                ok=False)
        assert r.code == 1 and expected in _one_error_line(r.err), r.err
    assert cli("snapshots", "--json").json() == []


def test_failed_load_drops_the_database_it_created(maria: MariaDBServer, cli: CLI,
                                                   env: dict[str, str], tmp_path: Path) -> None:
    cli("init")
    data = tmp_path / "sql"
    data.mkdir()
    (data / "bad.sql").write_text("CREATE TABLE t (id INT);\nINSERT INTO t VALUES (1);\n"
                                  "THIS IS NOT SQL;\n")
    (data / "notes.txt").write_text("not a dump\n")
    cli("backup", str(data))
    bad = next(p for p in cli("ls", "latest").out.splitlines() if p.endswith("/bad.sql"))
    # a file that is no dump is refused before anything happens
    r = cli("restore", "latest", "--target", maria.url("fails"), env=env, ok=False)
    assert r.code == 1 and "notes.txt: not a MariaDB/MySQL dump" in _one_error_line(r.err)
    r = cli("restore", "latest", "--target", maria.url("fails"), "--include", bad, env=env,
            ok=False)
    line = _one_error_line(r.err.replace("error: 1 item(s) could not be restored", "").strip())
    assert r.code == 1 and "ERROR 1064" in line and "at line 3" in line
    assert "the partly loaded database was dropped" in line
    assert "fails" not in maria.root_sql("SHOW DATABASES").split()


def test_socket_own_option_file_and_tls_option(maria: MariaDBServer, cli: CLI,
                                               env: dict[str, str], tmp_path: Path) -> None:
    """``?socket=`` connects through the Unix socket; ``?option-file=`` is read (here it
    alone holds the password); ``?ssl-verify=1`` insists on TLS, which this server lacks."""
    cli("init")
    own = tmp_path / "my.cnf"
    quoted = BACKUP_PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    own.write_text(f'[client]\npassword="{quoted}"\n')
    own.chmod(0o600)
    cli.env.pop("MULTIBACKUP_SOURCE_PASSWORD", None)
    url = f"mysql://backup@localhost/shop?socket={maria.socket}&option-file={own}"
    r = cli("backup", url, "--json")
    assert r.json()["files_new"] == 1
    assert cli("snapshots", "--json").json()[0]["paths"] == [
        f"mysql://backup@localhost/shop?socket={maria.socket}"]
    r = cli("backup", maria.url("shop") + "?ssl-verify=1", env=env, ok=False)
    assert r.code == 1 and "TLS/SSL error" in _one_error_line(r.err), r.err


def test_least_privileged_account_with_an_awkward_password(maria: MariaDBServer, cli: CLI,
                                                            tmp_path: Path) -> None:
    """The documented grants are enough for a complete dump (routines included), and a
    password with a tab, a line break, quotes, '#', ';' and a trailing space gets through
    the option file intact."""
    password = "t\tab\nnl 'sq' \"dq\" \\bs #hash ;semi "
    maria.root_sql(f"CREATE USER reader@'%' IDENTIFIED BY {sql_literal(password)};"
                   "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* TO reader@'%'")
    try:
        cli("init")
        url = f"mysql://reader@127.0.0.1:{maria.port}/"
        r = cli("backup", url, env={"MULTIBACKUP_SOURCE_PASSWORD": password})
        assert password not in r.out + r.err
        dump = cli("dump", "latest", "/shop.sql").out
        for name in ("FUNCTION `order_count`", "PROCEDURE `top_customers`",
                     "TRIGGER orders_audit", "EVENT `purge_audit`", "VIEW `customer_totals`"):
            assert name.lower() in dump.lower(), name
        assert "CREATE USER `reader`@`%`" in cli("dump", "latest", "/@users.sql").out
    finally:
        maria.root_sql("DROP USER reader@'%'")
