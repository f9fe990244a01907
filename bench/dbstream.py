"""The database-stream scenario: a PostgreSQL dump streamed into the repository.

A real PostgreSQL server (Debian's, started here on a free loopback port as the
``postgres`` user) holds three databases: small (about 20 MB of dump), medium (about
200 MB) and large (about 500 MB by default). Each is half pgbench tables (which compress about 100x)
and half a table of random hex text (which compresses about 2x, so the repository really
fills packs). Measured for each: ``multibackup backup postgresql://...`` into a
new local repository, against ``pg_dump ... | restic backup --stdin`` with the same
pg_dump options, then a second backup after some pgbench transactions (what dedup saves
on a dump). The point of the scenario is that memory stays flat: peak RSS must stop growing
with the dump's size. A small dump never fills a pack, so the open pack buffers (16 MiB
each) show between small and medium; from medium to large nothing may grow
(``db-rss-large-vs-medium`` about 1.0; ``db-rss-large-vs-small`` is reported as well).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PG_USER = "bench"
PG_PASSWORD = "bench-db-password"
# the pg_dump options multibackup's PostgreSQL source uses, so restic streams the same bytes
PG_DUMP_OPTIONS = ["--format=custom", "--compress=0"]

ROWS = [("small", "db-small"), ("medium", "db-medium"), ("large", "db-large")]


def pg_bin() -> Path:
    """The newest installed PostgreSQL server's bin directory."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql "
                           "(bench/run.sh does)")
    return found[-1].parent


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> with password auth."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "pg"
        self.bin = pg_bin()
        self.port = 0
        self.runas: list[str] = []

    def _run(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.runas, *cmd], check=True, text=True,
                              capture_output=True, **kw)

    def start(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:  # postgres refuses to run as root
            shutil.chown(self.dir, "postgres")
            self.runas = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        pwfile = self.dir / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.runas:
            shutil.chown(pwfile, "postgres")
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", PG_USER,
                  f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off -c max_wal_size=4GB", "-w", "start")

    def env(self) -> dict[str, str]:
        pgpass = self.dir / "pgpass"
        if not pgpass.exists():
            pgpass.write_text(f"127.0.0.1:{self.port}:*:{PG_USER}:{PG_PASSWORD}\n")
            pgpass.chmod(0o600)
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": PG_USER,
                "PGPASSFILE": str(pgpass)}

    def client(self, *cmd: str) -> None:
        subprocess.run([str(self.bin / cmd[0]), *cmd[1:]], check=True, capture_output=True,
                       env={**os.environ, **self.env()})

    def url(self, db: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        subprocess.run([*self.runas, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"),
                        "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_dbstream(work: Path, measure: Callable[..., Any], add: Callable[[str, str, Any], None],
                 dir_bytes: Callable[[Path], int], venv_bin: Path, password: str,
                 scales: dict[str, int], rounds: int) -> dict[str, Any]:
    """All rounds of the scenario; ``add(tool, step, measure)`` records each figure and
    ``dir_bytes`` (the suite's) sizes a repository."""
    pg = PostgresServer(work)
    info: dict[str, Any] = {f"{name}_scale": scale for name, scale in scales.items()}
    info["pg_dump_options"] = " ".join(PG_DUMP_OPTIONS)
    pg.start()
    try:
        t0 = time.monotonic()
        for name, scale in scales.items():
            pg.client("createdb", name)
            pg.client("pgbench", "-i", "-q", "-s", str(max(1, scale // 2)), "--unlogged-tables",
                      name)
            pg.client("psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", name, "-c", (
                "CREATE UNLOGGED TABLE docs AS SELECT g AS id, (SELECT string_agg("
                "md5(random()::text || g || i), '') FROM generate_series(1, 32) i) AS body "
                f"FROM generate_series(1, {scale * 5000}) g"))
        info["setup_seconds"] = round(time.monotonic() - t0, 1)
        pg_env = pg.env()
        mb_env = {"MULTIBACKUP_PASSWORD": password,
                  "MULTIBACKUP_SOURCE_PASSWORD": PG_PASSWORD,
                  "MULTIBACKUP_CACHE_DIR": str(work / "db-cache")}
        restic_env = {"RESTIC_PASSWORD": password, **pg_env}
        pg_dump = str(pg.bin / "pg_dump")
        for rnd in range(rounds):
            for name, step in ROWS:
                repo = work / f"db-mb-{name}"
                rrepo = work / f"db-restic-{name}"
                for p in (repo, rrepo):
                    shutil.rmtree(p, ignore_errors=True)
                mb = [str(venv_bin / "multibackup"), "-q", "-r", str(repo)]
                subprocess.run([*mb, "init"], check=True, env={**os.environ, **mb_env},
                               capture_output=True)
                subprocess.run(["restic", "init", "-q", "-r", str(rrepo)], check=True,
                               env={**os.environ, **restic_env}, capture_output=True)
                print(f"round {rnd + 1}/{rounds}: database stream, {name}", flush=True)
                m = measure([*mb, "backup", pg.url(name)], env=mb_env)
                m.repo_bytes = dir_bytes(repo)
                add("multibackup", step, m)
                pipe = (f"{pg_dump} {' '.join(PG_DUMP_OPTIONS)} {name} | restic -q -r {rrepo} "
                        f"backup --stdin --stdin-filename {name}.dump")
                m = measure(["/bin/bash", "-o", "pipefail", "-c", pipe], env=restic_env)
                m.repo_bytes = dir_bytes(rrepo)
                add("restic", step, m)
                if rnd == 0:  # a second backup after some writes: what dedup saves
                    pg.client("pgbench", "-n", "-t", "2000", "-c", "2", name)
                    before = dir_bytes(repo)
                    m = measure([*mb, "backup", pg.url(name)], env=mb_env)
                    m.added_bytes = dir_bytes(repo) - before
                    add("multibackup", step + "-again", m)
                    before = dir_bytes(rrepo)
                    m = measure(["/bin/bash", "-o", "pipefail", "-c", pipe], env=restic_env)
                    m.added_bytes = dir_bytes(rrepo) - before
                    add("restic", step + "-again", m)
                dump_bytes = subprocess.run(
                    ["/bin/sh", "-c", f"{pg_dump} {' '.join(PG_DUMP_OPTIONS)} {name} | wc -c"],
                    env={**os.environ, **pg_env}, capture_output=True, text=True, check=True)
                info[f"{name}_dump_bytes"] = int(dump_bytes.stdout.strip() or 0)
                for p in (repo, rrepo):
                    shutil.rmtree(p, ignore_errors=True)
    finally:
        pg.stop()
    info["user"] = getpass.getuser()
    return info


def ratios(sc: dict[str, Any]) -> dict[str, float | None]:
    def get(step: str, tool: str, key: str) -> float | None:
        v = sc.get(step, {}).get(tool)
        return v.get(key) if v else None

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "db-rss-large-vs-medium": div(get("db-large", "multibackup", "rss_mib_max"),
                                      get("db-medium", "multibackup", "rss_mib_max")),
        "db-rss-large-vs-small": div(get("db-large", "multibackup", "rss_mib_max"),
                                     get("db-small", "multibackup", "rss_mib_max")),
        "db-large-wall-vs-restic": div(get("db-large", "multibackup", "wall_median"),
                                       get("db-large", "restic", "wall_median")),
        "db-large-rss-vs-restic": div(get("db-large", "multibackup", "rss_mib_max"),
                                      get("db-large", "restic", "rss_mib_max")),
    }


def markdown(doc: dict[str, Any]) -> list[str]:
    """The database-stream section of latest.md (empty when the scenario did not run)."""
    sc, r = doc["scenarios"], doc["ratios"]
    info = doc["meta"].get("dbstream") or {}
    if "db-large" not in sc:
        return []
    mib = 1024 * 1024
    lines = ["", "### Database stream: PostgreSQL dump into a new repository", "",
             "Databases of pgbench tables plus random hex text, scale " + ", ".join(
                 f"{info.get(name + '_scale')} ({info.get(name + '_dump_bytes', 0) / mib:.0f} "
                 "MiB of dump)" for name, _ in ROWS if name + "_scale" in info) + ", "
             f"dumped with `pg_dump {info.get('pg_dump_options', '')}`; multibackup runs "
             "its PostgreSQL source, restic gets the same pg_dump piped into "
             "`restic backup --stdin`. Peak RSS is the backup tool's (pg_dump is small in both). "
             "multibackup repositories use 16 MiB packs, restic's its default.",
             "", "| run | multibackup wall s | restic wall s | multibackup peak RSS MiB | "
             "restic peak RSS MiB | repo MiB (added) mb / restic |", "|---|---|---|---|---|---|"]
    for name, step in ROWS:
        for suffix, label in (("", "first backup"), ("-again", "after 2000 pgbench transactions")):
            m, rs = sc.get(step + suffix, {}).get("multibackup"), sc.get(step + suffix, {}).get("restic")
            if not m or not rs:
                continue
            def wall(v: dict[str, Any]) -> str:
                return f"{v['wall_median']:.2f}" + (" FAILED" if v["failures"] else "")

            lines.append(
                f"| {name}, {label} | {wall(m)} | {wall(rs)} | "
                f"{m['rss_mib_max']:.0f} | {rs['rss_mib_max']:.0f} | "
                + (f"{m['repo_bytes'] / mib:.0f} / {rs['repo_bytes'] / mib:.0f} |" if not suffix
                   else f"+{m['added_bytes'] / mib:.1f} / +{rs['added_bytes'] / mib:.1f} |"))
    lines += ["", f"Peak RSS, large dump / medium dump: {r.get('db-rss-large-vs-medium')} "
              f"(flat memory means about 1.0); large / small: {r.get('db-rss-large-vs-small')} "
              "(the small dump never fills a 16 MiB pack); "
              f"large dump vs restic: wall {r.get('db-large-wall-vs-restic')}, "
              f"peak RSS {r.get('db-large-rss-vs-restic')}."]
    return lines
