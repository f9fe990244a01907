"""The benchmark suite: multibackup side by side with restic, borg and rclone.

Every tool gets the same data, the same machine and the same run. Each scenario is
repeated (tools interleaved, so a noisy moment hits everyone) and reported as the median
with its range; the headline is the ratio multibackup / restic against the targets of
the benchmark issue. Results go to bench/results/latest.{json,md}.

The mirror scenario (``--skip-mirror`` to leave it out, ``--only-mirror`` to run it alone)
times one multibackup backup written to three destinations (local dir, SeaweedFS S3, an
OpenSSH SFTP server) against one destination, and against restic backup + 2x restic copy.

The database-stream scenario (``--skip-dbstream``, ``--only-dbstream``) streams PostgreSQL
dumps of three sizes into a repository, against pg_dump piped into restic: memory must
stay flat.

The migration scenario (``--skip-migrate``, ``--only-migrate``) copies and syncs objects
between two buckets of one SeaweedFS server with ``multibackup migrate``, against rclone.

Usage: python bench/run.py [--rounds N] [--borg-rounds N] [--skip-s3] [--only TOOL,...]
       [--mirror-rounds N] [--skip-mirror | --only-mirror]
       [--skip-dbstream | --only-dbstream] [--db-scale SMALL,LARGE]
       [--skip-migrate | --only-migrate] [--results DIR]
(bench/run.sh installs the peers first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dataset  # noqa: E402
import dbstream  # noqa: E402
import migrate  # noqa: E402
import mirror  # noqa: E402

WORK = HERE / "work"
RESULTS = HERE / "results"
PASSWORD = "bench-password-1"
S3_KEY, S3_SECRET = "benchkey", "benchsecret"
VENV_BIN = Path(sys.executable).parent

TARGETS = {  # multibackup / restic, from the benchmark issue
    "backup-full": 0.6, "backup-nochange": 0.5, "backup-mutated": 0.8, "restore": 0.7,
    "check-read-data": 0.8, "repo-size": 1.0, "peak-rss": 1.0,
    "mirror-3-vs-1": mirror.TARGET,  # multibackup 3 destinations / multibackup 1 (local)
    **migrate.TARGETS,  # multibackup migrate / rclone, wall
}
SCENARIOS = ["backup-full", "backup-nochange", "backup-mutated", "restore", "check-read-data",
             "s3-backup-full"]


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mib: float
    rc: int
    repo_bytes: int = 0
    added_bytes: int = 0
    server_cpu: float = 0.0
    note: str = ""


@dataclass
class Results:
    runs: dict[str, dict[str, list[Measure]]] = field(default_factory=dict)

    def add(self, tool: str, step: str, m: Measure) -> None:
        self.runs.setdefault(step, {}).setdefault(tool, []).append(m)


def measure(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
            server_pid: int | list[int] | None = None) -> Measure:
    """Run a command under /usr/bin/time: wall, user+sys CPU and peak RSS.

    Not os.wait4 on our own child: Linux carries a process's peak RSS across fork and
    exec, so a child of this (large) process would report our memory, not its own.
    ``server_pid``: one server process or several, whose CPU over the run is recorded.
    """
    pids = [server_pid] if isinstance(server_pid, int) else list(server_pid or [])
    full_env = dict(os.environ)
    full_env.update(env or {})
    subprocess.run(["sync"], check=False)
    srv0 = sum(_proc_cpu(p) for p in pids)
    stats = Path(f"/tmp/bench-time-{os.getpid()}")
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-q", "-f", "%U %S %M", "-o", str(stats), *cmd],
                          cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - start
    user, sys_, rss_kib = stats.read_text().split()[-3:]
    if pids:
        time.sleep(0.3)  # lets a server reap its per-connection children (sshd)
    m = Measure(wall, float(user) + float(sys_), int(rss_kib) / 1024, proc.returncode,
                server_cpu=sum(_proc_cpu(p) for p in pids) - srv0)
    if proc.returncode != 0:
        m.note = proc.stdout.decode(errors="replace")[-600:]
        print(f"    ! {' '.join(cmd[:3])} exited {proc.returncode}: {m.note[-300:]}", flush=True)
    return m


def _proc_cpu(pid: int) -> float:
    """User + system CPU of a process and of its children it has reaped (sshd's sessions)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


# ---- tools -------------------------------------------------------------------------------


class Tool:
    name = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.repo = work / f"repo-{self.name}"

    def env(self) -> dict[str, str]:
        return {}

    def fresh(self, rnd: int) -> None:
        """A new repository per round; old ones stay until the end (see ``cleanup``)."""
        self.repo = self.work / f"repo-{self.name}-{rnd}"
        shutil.rmtree(self.repo, ignore_errors=True)

    def init(self) -> list[str]:
        raise NotImplementedError

    def backup(self) -> list[str]:
        raise NotImplementedError

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        raise NotImplementedError

    def check(self) -> list[str]:
        raise NotImplementedError

    def repo_bytes(self) -> int:
        return dir_bytes(self.repo)


class Multibackup(Tool):
    name = "multibackup"

    def env(self) -> dict[str, str]:
        return {"MULTIBACKUP_PASSWORD": PASSWORD, "MULTIBACKUP_REPOSITORY": str(self.repo),
                "MULTIBACKUP_CACHE_DIR": str(self.work / "cache-multibackup")}

    def _bin(self) -> list[str]:
        return [str(VENV_BIN / "multibackup")]

    def init(self) -> list[str]:
        return [*self._bin(), "init", "-q"]

    def backup(self) -> list[str]:
        return [*self._bin(), "backup", "-q", "."]

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        return [*self._bin(), "restore", "-q", "latest", "--target", str(target)], None

    def check(self) -> list[str]:
        return [*self._bin(), "check", "-q", "--read-data"]


class Restic(Tool):
    name = "restic"

    def env(self) -> dict[str, str]:
        return {"RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(self.repo),
                "RESTIC_CACHE_DIR": str(self.work / "cache-restic")}

    def init(self) -> list[str]:
        return ["restic", "init", "-q"]

    def backup(self) -> list[str]:
        return ["restic", "backup", "-q", "."]

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        return ["restic", "restore", "-q", "latest", "--target", str(target)], None

    def check(self) -> list[str]:
        return ["restic", "check", "-q", "--read-data"]


class Borg(Tool):
    name = "borg"
    _n = 0

    def env(self) -> dict[str, str]:
        return {"BORG_PASSPHRASE": PASSWORD, "BORG_REPO": str(self.repo),
                "BORG_BASE_DIR": str(self.work / "borg-base"),
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def init(self) -> list[str]:
        return ["borg", "init", "--encryption", "repokey-blake2"]

    def backup(self) -> list[str]:
        self._n += 1
        return ["borg", "create", "--compression", "lz4", f"::s{self._n}", "."]

    def restore(self, target: Path) -> tuple[list[str], Path | None]:
        return ["borg", "extract", f"::s{self._n}"], target

    def check(self) -> list[str]:
        return ["borg", "check", "--verify-data"]


# ---- S3 server ---------------------------------------------------------------------------


class S3Server:
    def __init__(self, work: Path) -> None:
        self.work = work / "s3"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "data").mkdir(parents=True)
        (self.work / "log").mkdir()
        (self.work / "s3.json").write_text(json.dumps({"identities": [{
            "name": "bench", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = [_free_port() for _ in range(9)]
        self.port = ports[0]
        names = ["master.port", "master.port.grpc", "filer.port", "filer.port.grpc",
                 "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc"]
        weed = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed") or "weed"
        cmd = [weed, f"-logdir={self.work / 'log'}", "mini", f"-dir={self.work / 'data'}",
               "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
               f"-s3.config={self.work / 's3.json'}", f"-s3.port={self.port}", "-webdav=false",
               "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
               *[f"-{n}={p}" for n, p in zip(names, ports[1:], strict=True)]]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                self.client().list_buckets()
                return
            except Exception:
                time.sleep(0.5)
        raise RuntimeError("SeaweedFS did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name="us-east-1")

    def bucket_bytes(self, bucket: str, prefix: str = "") -> int:
        total = 0
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                         Prefix=prefix)
        for page in pages:
            total += sum(o["Size"] for o in page.get("Contents", []))
        return total

    def stop(self) -> None:
        """Stop the server; its data is thrown away, so it is killed if it takes its time
        (weed mini can take 20 s over SIGTERM, which the suite would pay twice)."""
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the suite ---------------------------------------------------------------------------


class Data:
    """The pristine dataset (generated once, cached), its mutation (made once, cached,
    hard-linked where unchanged) and the one working copy every round backs up.

    The working copy is made once with hard links and kept pristine: a round mutates it
    and reverts it by relinking the ~1,200 files the mutation touches, so no round pays
    for a copy of 38,000 files, nor the run for deleting one per round. It stays for the
    next run, which checks that it is still pristine.
    """

    def __init__(self, work: Path) -> None:
        self.pristine = work / "pristine"
        self.mutated = work / "mutated"
        self.path = work / "data"
        self.stamp = work / f"pristine.{dataset.VERSION}.ok"
        if not self.stamp.exists():
            shutil.rmtree(self.pristine, ignore_errors=True)
            print("generating the dataset (about 1 GiB) ...", flush=True)
            dataset.generate(self.pristine)
            self.stamp.write_text(dataset.digest(self.pristine))
        made = work / f"mutated.{dataset.VERSION}.json"
        doc = json.loads(made.read_text()) if made.exists() else {}
        if doc.get("pristine") != self.stamp.read_text():
            shutil.rmtree(self.mutated, ignore_errors=True)
            subprocess.run(["cp", "-al", str(self.pristine), str(self.mutated)], check=True)
            dataset.mutate(self.mutated)
            doc = {"pristine": self.stamp.read_text(),
                   "diff": dataset.changes(self.pristine, self.mutated)}
            made.write_text(json.dumps(doc))
        self.diff: dict[str, list[str]] = doc["diff"]
        self.is_mutated = False
        if self.path.exists() and dataset.digest(self.path) != self.stamp.read_text():
            shutil.rmtree(self.path)  # an interrupted run's, possibly mutated: made anew

    def ready(self) -> Path:
        """The working copy, pristine (made with hard links if missing)."""
        if self.is_mutated:
            self.revert()
        if not self.path.exists():
            subprocess.run(["cp", "-al", str(self.pristine), str(self.path)], check=True)
        return self.path

    def warm(self) -> None:
        """Read every file of the pristine and the mutated tree once, so that the page
        cache holds the data before the first timed round. Without it the first tool of
        round 1 (multibackup) read the tree from disk after hours idle: 8.4 s for its first
        backup at 06:08 on 3 December, with 8.6 CPU-seconds, against 4.1-5.1 s in its
        other rounds; every later run of every tool found it cached."""
        for root in (self.pristine, self.mutated):
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    with contextlib.suppress(OSError), \
                            open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                        while f.read(1 << 20):
                            pass

    def mutate(self) -> None:
        dataset.switch(self.path, self.mutated, self.diff, forward=True)
        self.is_mutated = True

    def revert(self) -> None:
        dataset.switch(self.path, self.pristine, self.diff, forward=False)
        self.is_mutated = False


def run_local_round(tool: Tool, ds: Data, work: Path, res: Results, rnd: int) -> None:
    data = ds.ready()
    tool.fresh(rnd)
    env = tool.env()
    res.add(tool.name, "init", measure(tool.init(), env=env))
    m = measure(tool.backup(), cwd=data, env=env)
    m.repo_bytes = tool.repo_bytes()
    res.add(tool.name, "backup-full", m)
    size_full = m.repo_bytes
    m = measure(tool.backup(), cwd=data, env=env)
    m.repo_bytes = tool.repo_bytes()
    res.add(tool.name, "backup-nochange", m)
    ds.mutate()
    m = measure(tool.backup(), cwd=data, env=env)
    m.repo_bytes = tool.repo_bytes()
    m.added_bytes = m.repo_bytes - size_full
    res.add(tool.name, "backup-mutated", m)
    target = work / f"restore-{tool.name}-{rnd}"
    target.mkdir()
    cmd, cwd = tool.restore(target)
    m = measure(cmd, cwd=cwd, env=env)
    res.add(tool.name, "restore", m)
    if rnd == 0:
        m.note = "verified" if _same_tree(data, _restored_root(tool, target, data)) else "MISMATCH"
        print(f"    restore of {tool.name} compared with the source: {m.note}", flush=True)
    res.add(tool.name, "check-read-data", measure(tool.check(), env=env))
    if rnd == 0 and tool.name == "restic":  # the disk's own speed, for reading restore times
        baseline = work / "copy-baseline"
        shutil.rmtree(baseline, ignore_errors=True)
        res.add("cp -a", "restore", measure(["cp", "-a", str(data), str(baseline)]))
    ds.revert()


def cleanup(work: Path) -> bool:
    """Remove what a run leaves (restores, repositories, copies); True if there was any.

    Nothing is deleted while a run measures: on an ext4 file system without a journal
    (this VM's), a new inode is never one freed in the last 60 seconds (5 minutes while
    its table block is unwritten), and the allocator steps over each such inode one by
    one. Creating the 38,004 files of a restore then took 16 CPU-seconds of kernel time
    instead of 1.1 right after 76,000 files were deleted. So every round gets its own
    restore target and repository, and all are removed here, at the end (the one
    working copy of the data, see ``Data``, is kept pristine between rounds).
    """
    found = False
    for p in work.iterdir():
        if p.name.startswith(("restore-", "repo-", "copy-baseline", "cache-", "data-", "s3",
                              "mirror-", "sshd", "sftp-root")):
            shutil.rmtree(p, ignore_errors=True)
            found = True
    return found


def settle_after_cleanup() -> None:
    """After deleting what an interrupted run left, wait out the 60 seconds during which
    ext4 without a journal steps over the freed inodes (see ``cleanup``): the first
    round's restores would pay for them."""
    os.sync()
    print("waiting 65 s after removing an earlier run's files (see bench/run.py cleanup)",
          flush=True)
    time.sleep(65)


def _restored_root(tool: Tool, target: Path, data: Path) -> Path:
    if isinstance(tool, Multibackup):
        return target / str(data).lstrip("/")
    return target


def _same_tree(a: Path, b: Path) -> bool:
    return dataset.digest(a) == dataset.digest(b)


def run_s3_round(tool_name: str, ds: Data, work: Path, s3: S3Server, res: Results,
                 rnd: int) -> None:
    data = ds.ready()
    bucket = f"bench-{tool_name}-{rnd}-{int(time.time())}"
    s3.client().create_bucket(Bucket=bucket)
    aws = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
           "AWS_REGION": "us-east-1"}
    pid = s3.proc.pid if s3.proc else None
    if tool_name == "multibackup":
        env = {**aws, "MULTIBACKUP_PASSWORD": PASSWORD, "AWS_ENDPOINT_URL": s3.endpoint,
               "MULTIBACKUP_REPOSITORY": f"s3://{bucket}/repo",
               "MULTIBACKUP_CACHE_DIR": str(work / f"cache-s3-{rnd}")}
        mb = str(VENV_BIN / "multibackup")
        measure([mb, "init", "-q"], env=env)
        m = measure([mb, "backup", "-q", "."], cwd=data, env=env, server_pid=pid)
    elif tool_name == "restic":
        env = {**aws, "RESTIC_PASSWORD": PASSWORD,
               "RESTIC_REPOSITORY": f"s3:{s3.endpoint}/{bucket}/repo",
               "RESTIC_CACHE_DIR": str(work / f"cache-restic-s3-{rnd}")}
        measure(["restic", "init", "-q"], env=env)
        m = measure(["restic", "backup", "-q", "."], cwd=data, env=env, server_pid=pid)
    else:  # rclone copy: no encryption or dedup, a transfer baseline
        conf = work / "rclone.conf"
        conf.write_text(f"[s3]\ntype = s3\nprovider = Other\nendpoint = {s3.endpoint}\n"
                        f"access_key_id = {S3_KEY}\nsecret_access_key = {S3_SECRET}\n")
        rclone = shutil.which("rclone", path=str(VENV_BIN)) or "rclone"
        m = measure([rclone, "--config", str(conf), "copy", "--transfers", "8", str(data),
                     f"s3:{bucket}/copy"], server_pid=pid)
    m.repo_bytes = s3.bucket_bytes(bucket)
    res.add(tool_name, "s3-backup-full", m)


def run_mirror_round(ds: Data, work: Path, s3: S3Server, ssh: mirror.SSHServer | None,
                     res: Results, rnd: int, only: set[str], third: str,
                     restic_rounds: int) -> dict[str, Any]:
    """First backups: multibackup to 1 local / all 3 destinations at once / 3 local dirs at
    once (the fan-out without server CPU), and in round 0 also to 1 S3 / 1 SFTP alone and
    restic backup (local) + copy to S3 + copy to SFTP. Round 0 also verifies the
    3-destination repository: check --read-data of each destination alone.

    ``third`` is "sftp", or "local" (a second directory) where SFTP is not available.
    Each run gets a new repository, cache and (S3) bucket: a new SeaweedFS bucket is a new
    collection whose volumes are allocated on its first write, a cost every run pays alike.
    """
    data = ds.ready()
    base = work / f"mirror-{rnd}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    stamp = int(time.time())
    pids = [p.pid for p in (s3.proc, ssh.proc if ssh else None) if p]
    aws = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
           "AWS_REGION": "us-east-1"}
    sftp_env = ssh.env() if ssh else {}
    mb = str(VENV_BIN / "multibackup")
    info: dict[str, Any] = {}

    def s3_location(name: str) -> str:
        bucket = f"bench-mirror-{rnd}-{name}-{stamp}"
        s3.client().create_bucket(Bucket=bucket)
        return f"s3:{s3.endpoint}/{bucket}/repo"

    def third_location(name: str) -> str:
        if third == "sftp" and ssh:
            return ssh.location(f"{rnd}-{name}")
        return str(base / f"second-{name}")

    def third_path(name: str) -> Path:
        return ssh.root / f"{rnd}-{name}" if third == "sftp" and ssh else base / f"second-{name}"

    def mb_env(name: str) -> dict[str, str]:
        return {**aws, **sftp_env, "MULTIBACKUP_PASSWORD": PASSWORD,
                "MULTIBACKUP_CACHE_DIR": str(base / f"cache-{name}")}

    def repo_args(locations: list[str]) -> list[str]:
        return [arg for loc in locations for arg in ("-r", loc)]

    mb3: list[str] = []

    def multibackup(step: str, name: str, locations: list[str]) -> None:
        env = mb_env(name)
        m = measure([mb, *repo_args(locations), "init", "-q"], env=env)
        if m.rc == 0:
            m = measure([mb, *repo_args(locations), "backup", "-q", "."], cwd=data, env=env,
                        server_pid=pids)
        res.add("multibackup", step, m)

    def mb_local() -> None:
        multibackup("mirror-local", "local", [str(base / "mb-local")])

    def mb_s3() -> None:
        multibackup("mirror-s3", "s3", [s3_location("mb-s3")])

    def mb_sftp() -> None:
        multibackup("mirror-sftp", "sftp", [third_location("mb-sftp")])

    def mb_three() -> None:
        mb3[:] = [str(base / "mb3-local"), s3_location("mb3"), third_location("mb3")]
        multibackup("mirror-3", "three", mb3)

    def mb_three_local() -> None:
        multibackup("mirror-3-local", "three-local",
                    [str(base / f"mb3-local-dir{i}") for i in (1, 2, 3)])

    def restic() -> None:
        """restic's way to three destinations: a backup to a local repository, then
        ``restic copy`` of that snapshot to an S3 and an SFTP repository. The backup is the
        local rounds' first (the same first backup of the same data into a new local
        repository), when they ran: measuring it again would cost the suite half a minute."""
        pw = base / "restic-password"
        pw.write_text(PASSWORD)
        env = {**aws, "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(base / "cache-restic")}
        opts = ["-o", f"sftp.command={ssh.restic_command()}"] if third == "sftp" and ssh else []
        s3_repo = s3_location("restic")
        third_repo = (ssh.restic_repo(f"{rnd}-restic") if third == "sftp" and ssh
                      else str(base / "second-restic"))
        src, snapshot = work / "repo-restic-0", []
        first = res.runs.get("backup-full", {}).get("restic", [])
        if first and first[0].rc == 0 and (src / "config").exists():
            listed = subprocess.run(["restic", "-r", str(src), "snapshots", "--json"], env={
                **os.environ, **env}, capture_output=True, text=True)
            shots = json.loads(listed.stdout or "[]") if listed.returncode == 0 else []
            snapshot = [min(shots, key=lambda x: x["time"])["id"]] if shots else []
        if not snapshot:
            src = base / "restic-local"
        from_src = ["--from-repo", str(src), "--from-password-file", str(pw)]
        ok = bool(snapshot) or measure(["restic", "-r", str(src), "init", "-q"], env=env).rc == 0
        for repo in (s3_repo, third_repo):
            ok = ok and measure(["restic", "-r", repo, *opts, "init", "-q", *from_src,
                                 "--copy-chunker-params"], env=env).rc == 0
        if not ok:
            res.add("restic", "mirror-3", Measure(0, 0, 0, 1, note="init failed"))
            return
        runs = [first[0] if snapshot else
                measure(["restic", "-r", str(src), "backup", "-q", "."], cwd=data, env=env,
                        server_pid=pids)]
        for repo in (s3_repo, third_repo):
            runs.append(measure(["restic", "-r", repo, *opts, "copy", "-q", *from_src,
                                 *snapshot], env=env, server_pid=pids))
        for step, m in zip(("mirror-local", "mirror-copy-s3", "mirror-copy-sftp"), runs,
                           strict=True):
            res.add("restic", step, m)
        res.add("restic", "mirror-3", Measure(
            sum(m.wall for m in runs), sum(m.cpu for m in runs), max(m.rss_mib for m in runs),
            next((m.rc for m in runs if m.rc), 0), server_cpu=sum(m.server_cpu for m in runs)))

    jobs = []
    if "multibackup" in only:
        jobs += [("multibackup, local", mb_local), ("multibackup, 3 destinations", mb_three),
                 ("multibackup, 3 local dirs", mb_three_local)]
        if rnd == 0:  # where the floor is, not the target's ratio: measured once
            jobs[1:1] = [("multibackup, S3", mb_s3),
                         ("multibackup, SFTP" if third == "sftp"
                          else "multibackup, second local dir", mb_sftp)]
    if "restic" in only and rnd < restic_rounds:
        jobs.append(("restic backup + 2 copies", restic))
    shift = (rnd * 3) % len(jobs) if jobs else 0
    for label, job in jobs[shift:] + jobs[:shift]:
        print(f"  mirror round {rnd + 1}: {label}", flush=True)
        job()
    if rnd == 0 and mb3:
        info["bytes"] = {"local": dir_bytes(Path(mb3[0])),
                         "S3": s3.bucket_bytes(mb3[1].split("/")[-2], "repo/"),
                         third.upper() if third == "sftp" else "second local":
                             dir_bytes(third_path("mb3"))}
        info["verify"] = _verify_mirror(mb3, mb_env("verify"), third)
    return info


def _verify_mirror(locations: list[str], env: dict[str, str], third: str) -> dict[str, str]:
    """``check --read-data`` of each destination alone, without a cache: every blob of
    every snapshot read from that copy and verified against its id, so each copy is shown
    to be a whole repository on its own. Restores are verified byte for byte in the local
    rounds; one more here would cost about 20 s (38,000 files written, then deleted)."""
    mb = str(VENV_BIN / "multibackup")
    out = {}
    for name, loc in zip(("local", "S3", "SFTP" if third == "sftp" else "second local"),
                         locations, strict=True):
        m = measure([mb, "-r", loc, "--no-cache", "check", "-q", "--read-data"], env=env)
        out[name] = f"{'verified' if m.rc == 0 else f'FAILED (exit {m.rc})'}, {m.wall:.1f} s"
        print(f"    check --read-data of {name} alone: exit {m.rc}", flush=True)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarize(res: Results, meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    doc: dict[str, Any] = {"meta": meta, "scenarios": {}, "ratios": {}}
    for step, tools in res.runs.items():
        doc["scenarios"][step] = {
            t: {"wall_median": median([m.wall for m in ms]),
                "wall_range": [min(m.wall for m in ms), max(m.wall for m in ms)],
                "cpu_median": median([m.cpu for m in ms]),
                "rss_mib_max": max(m.rss_mib for m in ms),
                "repo_bytes": median([m.repo_bytes for m in ms]),
                "added_bytes": median([m.added_bytes for m in ms]),
                "server_cpu_median": median([m.server_cpu for m in ms]),
                "failures": sum(1 for m in ms if m.rc != 0),
                "runs": [m.__dict__ for m in ms]}
            for t, ms in tools.items()}
    sc = doc["scenarios"]

    def ratio(step: str, key: str, peer: str = "restic") -> float | None:
        a, b = sc.get(step, {}).get("multibackup"), sc.get(step, {}).get(peer)
        if not a or not b or not b[key]:
            return None
        return round(a[key] / b[key], 3)

    r = doc["ratios"]
    for step in SCENARIOS:
        r[step] = ratio(step, "wall_median")
    r["repo-size"] = ratio("backup-full", "repo_bytes")
    r["added-after-mutation"] = ratio("backup-mutated", "added_bytes")
    rss = [ratio(s, "rss_mib_max") for s in SCENARIOS if ratio(s, "rss_mib_max") is not None]
    r["peak-rss"] = max(rss) if rss else None
    r.update(mirror.ratios(sc))
    r.update({k: v for k, v in dbstream.ratios(sc).items() if v is not None})
    r.update({k: v for k, v in migrate.ratios(sc).items() if v is not None})
    return doc, markdown(doc)


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    sc, r, meta = doc["scenarios"], doc["ratios"], doc["meta"]
    tools = ["multibackup", "restic", "borg", "rclone", "cp -a"]
    main = any(step in sc for step in SCENARIOS)
    lines = [f"Machine: {meta['machine']}; {meta['date']}; dataset {meta['dataset']} "
             f"({meta['dataset_bytes'] / 2**30:.2f} GiB, {meta['dataset_files']} files); "
             + (f"{meta['rounds']} rounds (borg {meta['borg_rounds']}), median wall seconds "
                "[range]." if main else "only the scenarios below.")]
    if main:
        lines += _main_tables(sc, r, tools)
    lines += mirror.markdown(doc)
    lines += dbstream.markdown(doc)
    lines += migrate.markdown(doc)
    if any(v is not None for v in r.values()):
        lines += ["", "Ratios (multibackup / restic unless named; lower is better): " + ", ".join(
            f"{k} {v}" + (f" (target <= {TARGETS[k]})" if k in TARGETS else "")
            for k, v in r.items() if v is not None) + "."]
    return "\n".join(lines) + "\n"


def _main_tables(sc: dict[str, Any], r: dict[str, Any], tools: list[str]) -> list[str]:
    lines = ["", "| scenario | " + " | ".join(tools) + " | multibackup / restic | target |",
             "|---|" + "---|" * (len(tools) + 2)]
    for step in SCENARIOS:
        if step not in sc:
            continue
        cells = []
        for t in tools:
            v = sc[step].get(t)
            cells.append("-" if not v else
                         f"{_fmt(v['wall_median'])} [{_fmt(v['wall_range'][0])}-"
                         f"{_fmt(v['wall_range'][1])}]" + (" FAILED" if v["failures"] else ""))
        target = TARGETS.get(step)
        ratio = r.get(step)
        verdict = "" if ratio is None or target is None else (" ok" if ratio <= target else " short")
        lines.append(f"| {step} | " + " | ".join(cells) +
                     f" | {ratio if ratio is not None else '-'} | "
                     f"{'<= ' + str(target) if target else '-'}{verdict} |")
    lines += ["", "| scenario | CPU s (mb / restic) | peak RSS MiB (mb / restic / borg) | "
              "repository MiB (mb / restic / borg) |", "|---|---|---|---|"]
    for step in SCENARIOS:
        if step not in sc:
            continue
        g = sc[step]

        def get(t: str, k: str, scale: float = 1.0, g: dict[str, Any] = g) -> str:
            return f"{g[t][k] / scale:.1f}" if t in g and g[t][k] else "-"

        lines.append(f"| {step} | {get('multibackup', 'cpu_median')} / {get('restic', 'cpu_median')}"
                     f" | {get('multibackup', 'rss_mib_max')} / {get('restic', 'rss_mib_max')} / "
                     f"{get('borg', 'rss_mib_max')} | {get('multibackup', 'repo_bytes', 2**20)} / "
                     f"{get('restic', 'repo_bytes', 2**20)} / {get('borg', 'repo_bytes', 2**20)} |")
    mut = sc.get("backup-mutated", {})
    if mut:
        added = ", ".join(f"{t} +{mut[t]['added_bytes'] / 2**20:.1f} MiB" for t in tools if t in mut)
        lines += ["", f"Repository growth from the ~5% mutation: {added}."]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--borg-rounds", type=int, default=1)
    ap.add_argument("--s3-rounds", type=int, default=2)
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--s3-rclone", action="store_true",
                    help="also time rclone copying the dataset's files to S3 (a transfer "
                         "baseline, no backup; 1.5 minutes of the suite's 20)")
    ap.add_argument("--mirror-rounds", type=int, default=2)
    ap.add_argument("--mirror-restic-rounds", type=int, default=1,
                    help="rounds of restic backup + 2 copies in the mirror scenario (the first "
                         "N of --mirror-rounds)")
    ap.add_argument("--skip-mirror", action="store_true",
                    help="leave out the mirror scenario (one backup to three destinations)")
    ap.add_argument("--only-mirror", action="store_true",
                    help="run the mirror scenario alone (results go to bench/work/"
                         "results-mirror unless --results is given)")
    ap.add_argument("--mirror-third", choices=("sftp", "local"), default="sftp",
                    help="third destination of the mirror scenario: SFTP (default), or a "
                         "second local directory where SFTP is not available")
    ap.add_argument("--skip-dbstream", action="store_true",
                    help="leave out the database-stream scenario (PostgreSQL dumps)")
    ap.add_argument("--only-dbstream", action="store_true",
                    help="run the database-stream scenario alone (results go to bench/work/"
                         "results-dbstream unless --results is given)")
    ap.add_argument("--db-scale", default="2,20,50",
                    help="pgbench scales of the small, medium and large database (default "
                         "2,20,50: about 20 MiB, 200 MiB and 500 MiB of dump; a larger one "
                         "shows the same flat memory and costs minutes of the suite's 20)")
    ap.add_argument("--db-rounds", type=int, default=1)
    ap.add_argument("--skip-migrate", action="store_true",
                    help="leave out the migration scenario (multibackup migrate vs rclone)")
    ap.add_argument("--only-migrate", action="store_true",
                    help="run the migration scenario alone (results go to bench/work/"
                         "results-migrate unless --results is given)")
    ap.add_argument("--migrate-rounds", type=int, default=3)
    ap.add_argument("--migrate-transfers", type=int, default=8)
    ap.add_argument("--only", default="multibackup,restic,borg,rclone")
    ap.add_argument("--work", default=str(WORK))
    ap.add_argument("--results", default=None,
                    help="directory for latest.{json,md} (default bench/results); the README "
                         "table is updated only for the default")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite latest.md and the README from latest.json, run nothing")
    args = ap.parse_args()
    if args.only_mirror and args.skip_mirror:
        ap.error("--only-mirror and --skip-mirror exclude each other")
    if args.only_dbstream and (args.skip_dbstream or args.only_mirror):
        ap.error("--only-dbstream excludes --skip-dbstream and --only-mirror")
    if args.only_dbstream:
        args.skip_mirror = args.skip_s3 = True
    if args.only_migrate and (args.skip_migrate or args.only_mirror or args.only_dbstream):
        ap.error("--only-migrate excludes --skip-migrate, --only-mirror and --only-dbstream")
    if args.only_migrate:
        args.skip_mirror = args.skip_s3 = args.skip_dbstream = True
    if args.only_mirror or args.only_dbstream:
        args.skip_migrate = True
    work = Path(args.work)
    results = Path(args.results) if args.results else (
        work / "results-mirror" if args.only_mirror else
        work / "results-dbstream" if args.only_dbstream else
        work / "results-migrate" if args.only_migrate else RESULTS)
    readme = results.resolve() == RESULTS.resolve()
    if args.report_only:
        md = markdown(json.loads((results / "latest.json").read_text()))
        (results / "latest.md").write_text(md)
        if readme:
            update_readme(md)
        print(md)
        return 0
    only = set(args.only.split(","))
    work.mkdir(parents=True, exist_ok=True)
    ds = Data(work)
    if cleanup(work):
        settle_after_cleanup()
    res = Results()
    started = time.monotonic()
    local_tools: list[Tool] = [t(work) for t in (Multibackup, Restic, Borg)
                               if t.name in only and not (args.only_mirror or args.only_dbstream
                                                          or args.only_migrate)]
    if local_tools:
        ds.warm()
    for rnd in range(args.rounds if local_tools else 0):
        order = local_tools[rnd % len(local_tools):] + local_tools[:rnd % len(local_tools)]
        for tool in order:
            if isinstance(tool, Borg) and rnd >= args.borg_rounds:
                continue
            print(f"round {rnd + 1}/{args.rounds}: {tool.name} (local)", flush=True)
            run_local_round(tool, ds, work, res, rnd)
    s3_rounds = 0 if args.skip_s3 or args.only_mirror else args.s3_rounds
    mirror_rounds = 0 if args.skip_mirror else args.mirror_rounds
    mirror_info: dict[str, Any] = {}
    if s3_rounds or mirror_rounds:
        s3 = S3Server(work)
        s3.start()
        try:
            for rnd in range(s3_rounds):
                for name in ("multibackup", "restic", "rclone"):
                    if name in only and (name != "rclone" or (rnd == 0 and args.s3_rclone)):
                        print(f"round {rnd + 1}/{s3_rounds}: {name} (S3)", flush=True)
                        run_s3_round(name, ds, work, s3, res, rnd)
            if mirror_rounds:
                mirror_info = run_mirror(args, ds, work, s3, res, only)
        finally:
            s3.stop()
    db_info: dict[str, Any] = {}
    if not args.skip_dbstream and not args.only_mirror:
        scales = dict(zip(("small", "medium", "large"),
                          (int(x) for x in args.db_scale.split(",")), strict=True))
        db_info = dbstream.run_dbstream(work, measure, res.add, dir_bytes, VENV_BIN, PASSWORD, scales,
                                        args.db_rounds)
    migrate_info: dict[str, Any] = {}
    if not args.skip_migrate:
        s3 = S3Server(work)
        s3.start()
        try:
            migrate_info = migrate.run_migrate(work, s3, measure, res.add, VENV_BIN, S3_KEY,
                                               S3_SECRET, args.migrate_rounds,
                                               args.migrate_transfers)
        finally:
            s3.stop()
    cleanup(work)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
                       f"{_cpu_model()}, {_mem_gib()} GiB, Python {platform.python_version()}",
            "dataset": ds.stamp.read_text().strip(), "dataset_bytes": dir_bytes(ds.pristine),
            "dataset_files": sum(len(f) for _, _, f in os.walk(ds.pristine)),
            "rounds": args.rounds, "borg_rounds": args.borg_rounds,
            "versions": _versions(), "suite_seconds": round(time.monotonic() - started, 1)}
    if mirror_rounds:
        meta["mirror"] = mirror_info
    if db_info:
        meta["dbstream"] = db_info
    if migrate_info:
        meta["migrate"] = migrate_info
    doc, md = summarize(res, meta)
    results.mkdir(parents=True, exist_ok=True)
    (results / "latest.json").write_text(json.dumps(doc, indent=1, default=str))
    (results / "latest.md").write_text(md)
    if readme:
        update_readme(md)
    print(md)
    print(f"results in {results}", flush=True)
    return 0


def run_mirror(args: argparse.Namespace, ds: Data, work: Path, s3: S3Server,
               res: Results, only: set[str]) -> dict[str, Any]:
    """The mirror scenario's rounds, with its own sshd; returns what the report needs."""
    started = time.monotonic()
    ssh = mirror.SSHServer(work) if args.mirror_third == "sftp" else None
    info: dict[str, Any] = {"rounds": args.mirror_rounds, "third": args.mirror_third,
                            "restic_rounds": min(args.mirror_rounds, args.mirror_restic_rounds)}
    try:
        if ssh:
            ssh.start()
        for rnd in range(args.mirror_rounds):
            print(f"round {rnd + 1}/{args.mirror_rounds}: mirror (1 vs 3 destinations)",
                  flush=True)
            info.update(run_mirror_round(ds, work, s3, ssh, res, rnd, only,
                                         args.mirror_third, args.mirror_restic_rounds))
    finally:
        if ssh:
            ssh.stop()
    info["seconds"] = round(time.monotonic() - started, 1)
    return info


def update_readme(md: str) -> None:
    """Put the latest table between the README's bench markers, if it has them."""
    readme = HERE.parent / "README.md"
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    text = readme.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        readme.write_text(f"{head}{start}\n{md}{end}{tail}")


def _cpu_model() -> str:
    """The CPU's name and family/model numbers, and whether it has AVX-512: ratios move
    from one machine to another (BLAKE3, multibackup's hash, has an AVX-512 path;
    restic's SHA-256 uses the SHA instructions on either)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first CPU is enough
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    flags = fields.get("flags", "").split()
    avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f" ({fields.get('model name', '?')}, family {fields.get('cpu family', '?')} "
            f"model {fields.get('model', '?')}, {avx})")


def _mem_gib() -> int:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        return round(kb / 2**20)
    except (OSError, ValueError, IndexError):
        return 0


def _versions() -> dict[str, str]:
    out = {}
    for name, cmd in {"restic": ["restic", "version"], "borg": ["borg", "--version"],
                      "rclone": [str(VENV_BIN / "rclone"), "version"],
                      "multibackup": [str(VENV_BIN / "multibackup"), "version"]}.items():
        try:
            out[name] = subprocess.run(cmd, capture_output=True, text=True,
                                       timeout=30).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out[name] = "not installed"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
