"""SQLite sources through the CLI: consistent while written to, restorable, never half-saved."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import CLI


def _make_db(path: Path, rows: int = 50_000) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, total INTEGER)")
    con.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER)")
    con.executemany("INSERT INTO orders(customer, total) VALUES (?, ?)",
                    ((f"customer-{i}", i * 7 % 1000) for i in range(rows)))
    con.commit()
    con.close()


def _digest(path: Path) -> dict[str, str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            h = hashlib.sha256()
            for row in con.execute(f"SELECT * FROM {table} ORDER BY id"):
                h.update(repr(row).encode())
            out[table] = h.hexdigest()
        return out
    finally:
        con.close()


def test_sqlite_backup_restore_and_dump(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _make_db(db)
    cli = CLI(str(tmp_path / "repo"))
    cli("init")
    url = f"sqlite://{db}"
    first = cli("backup", url, "--json").json()
    assert first["files_new"] == 1 and first["total_bytes"] == db.stat().st_size

    snaps = cli("snapshots", "--json").json()
    assert snaps[0]["paths"] == [url]
    # a second run finds the first as its parent and stores nothing new
    second = cli("backup", url, "--json").json()
    assert second["parent"] == first["snapshot_id"] and second["data_added"] == 0

    out = tmp_path / "restored" / "app.db"
    r = cli("restore", "latest", "--target", f"sqlite://{out}")
    assert "1 files" in r.out
    assert _digest(out) == _digest(db)
    # a restore never overwrites a database that is there
    again = cli("restore", "latest", "--target", f"sqlite://{out}", ok=False)
    assert again.code == 1 and "already exists" in again.err

    # to a plain directory, the database is a file named as at the source
    cli("restore", "latest", "--target", str(tmp_path / "dir"))
    assert _digest(tmp_path / "dir" / "app.db") == _digest(db)
    # dump streams it to stdout, byte for byte what restore wrote
    dumped = tmp_path / "dumped.db"
    with open(dumped, "wb") as f:
        subprocess.run([sys.executable, "-m", "multibackup", "dump", "latest", "app.db"],
                       env=cli.env, stdout=f, check=True)
    assert dumped.read_bytes() == (tmp_path / "dir" / "app.db").read_bytes()


def test_sqlite_copy_is_consistent_while_an_application_writes(tmp_path: Path) -> None:
    """Every transaction moves 1 from one row to a new row: the sum must never change."""
    db = tmp_path / "bank.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER)")
    con.executemany("INSERT INTO ledger(amount) VALUES (?)", ((100,) for _ in range(20_000)))
    con.commit()
    con.close()
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        w = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            with w:
                w.execute("UPDATE ledger SET amount = amount - 1 WHERE id = "
                          "(SELECT id FROM ledger WHERE amount > 0 LIMIT 1)")
                w.execute("INSERT INTO ledger(amount) VALUES (1)")
            writes += 1
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        cli = CLI(str(tmp_path / "repo"))
        cli("init")
        cli("backup", f"sqlite://{db}")
    finally:
        stop.set()
        t.join()
    assert writes > 0
    out = tmp_path / "restored.db"
    cli("restore", "latest", "--target", f"sqlite://{out}")
    con = sqlite3.connect(out)
    total, n = con.execute("SELECT SUM(amount), COUNT(*) FROM ledger").fetchone()
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    assert total == 20_000 * 100 and n > 20_000


def test_sqlite_bad_input_fails_without_a_snapshot(tmp_path: Path) -> None:
    cli = CLI(str(tmp_path / "repo"))
    cli("init")
    missing = cli("backup", f"sqlite://{tmp_path / 'nope.db'}", ok=False)
    assert missing.code == 1 and "No such file" in missing.err
    assert len(missing.err.strip().splitlines()) == 1
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    bad = cli("backup", f"sqlite://{garbage}", ok=False)
    assert bad.code == 1 and "not a database" in bad.err
    relative = cli("backup", "sqlite://app.db", ok=False)
    assert relative.code == 2 and "sqlite:///absolute/path.db" in relative.err
    assert cli("snapshots", "--json").json() == []
    # a URL with a password is refused before anything connects
    secret = cli("backup", "mysql://root:hunter2-secret@127.0.0.1/shop", ok=False)
    assert secret.code == 2 and "hunter2-secret" not in secret.err + secret.out
