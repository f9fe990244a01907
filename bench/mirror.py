"""The mirror scenario's server and report: one backup written to three destinations.

``SSHServer`` runs a real OpenSSH sshd in the foreground on a free loopback port (key auth
only, internal-sftp), the SFTP destination of the scenario. ``ratios`` and ``markdown``
turn the scenario's measurements (kept in the suite's JSON) into its report section.
The rounds themselves are run by ``run.py`` (``run_mirror_round``), next to the others.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

TARGET = 1.3  # mirror-3-vs-1: three destinations cost at most 1.3x the wall of one

#: (label, step, tool) rows of the report table, in order
ROWS = [
    ("multibackup, 1 destination: local dir", "mirror-local", "multibackup"),
    ("multibackup, 1 destination: S3 only", "mirror-s3", "multibackup"),
    ("multibackup, 1 destination: SFTP only", "mirror-sftp", "multibackup"),
    ("multibackup, 3 destinations: local + S3 + SFTP", "mirror-3", "multibackup"),
    ("multibackup, 3 destinations: 3 local dirs (no servers)", "mirror-3-local", "multibackup"),
    ("restic backup, local", "mirror-local", "restic"),
    ("restic copy local -> S3", "mirror-copy-s3", "restic"),
    ("restic copy local -> SFTP", "mirror-copy-sftp", "restic"),
    ("restic backup + copy to S3 + copy to SFTP", "mirror-3", "restic"),
]
SINGLES = ("mirror-local", "mirror-s3", "mirror-sftp")
DEST_NAMES = {"mirror-local": "local", "mirror-s3": "S3", "mirror-sftp": "SFTP"}


class SSHServer:
    """OpenSSH sshd in the foreground on 127.0.0.1:<free port>, key auth, SFTP only."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "sshd"
        self.root = work / "sftp-root"  # what the SFTP destinations write into
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.user = getpass.getuser()
        self.key = self.dir / "client_ed25519"
        self.known_hosts = self.dir / "known_hosts"

    def start(self) -> None:
        sshd = Path("/usr/sbin/sshd")
        if not sshd.exists():
            raise RuntimeError("/usr/sbin/sshd is missing: apt-get install openssh-server "
                               "(bench/run.sh does)")
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)
        (self.dir / "authorized_keys").mkdir(parents=True)
        self.root.mkdir(parents=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        host_key = self.dir / "host_ed25519"
        for key in (host_key, self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        shutil.copy(self.key.with_suffix(".pub"), self.dir / "authorized_keys" / self.user)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = self.dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}/%u", "StrictModes no",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "ForceCommand internal-sftp",
            "MaxStartups 64", "MaxSessions 64", "LogLevel ERROR", ""]))
        log = open(self.dir / "sshd.log", "wb")  # noqa: SIM115 - lives as long as sshd
        self.proc = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT)
        kind, blob = host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not start: {(self.dir / 'sshd.log').read_text()[-500:]}")

    def location(self, name: str) -> str:
        """multibackup's location of the SFTP directory ``name``."""
        return f"sftp://{self.user}@127.0.0.1:{self.port}{self.root / name}"

    def restic_repo(self, name: str) -> str:
        return f"sftp:{self.user}@127.0.0.1:{self.root / name}"

    def restic_command(self) -> str:
        """restic's ``-o sftp.command``: the ssh client with our key and known_hosts only."""
        return (f"ssh -F /dev/null -i {self.key} -o IdentitiesOnly=yes -o BatchMode=yes "
                f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={self.known_hosts} "
                f"-p {self.port} {self.user}@127.0.0.1 -s sftp")

    def env(self) -> dict[str, str]:
        return {"MULTIBACKUP_SFTP_KEY_FILE": str(self.key),
                "MULTIBACKUP_SFTP_KNOWN_HOSTS": str(self.known_hosts)}

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# ---- report ------------------------------------------------------------------------------


def _wall(sc: dict[str, Any], step: str, tool: str) -> float | None:
    v = sc.get(step, {}).get(tool)
    return v["wall_median"] if v and not v["failures"] else None


def ratios(sc: dict[str, Any]) -> dict[str, float | None]:
    """mirror-3-vs-1 (the issue's target), against the slowest single one, and vs restic."""
    three = _wall(sc, "mirror-3", "multibackup")
    singles = {s: _wall(sc, s, "multibackup") for s in SINGLES}
    local = singles["mirror-local"]
    slowest = max((v for v in singles.values() if v is not None), default=None)
    restic3 = _wall(sc, "mirror-3", "restic")

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {"mirror-3-vs-1": div(three, local),
            "mirror-3-vs-slowest-single": div(three, slowest),
            "mirror-3-local-dirs-vs-1": div(_wall(sc, "mirror-3-local", "multibackup"), local),
            "mirror-3-vs-restic-backup-2-copies": div(three, restic3)}


def _cell(v: dict[str, Any] | None, key: str = "wall") -> str:
    if not v:
        return "-"
    if key == "wall":
        lo, hi = v["wall_range"]
        return (f"{v['wall_median']:.2f} [{lo:.2f}-{hi:.2f}]"
                + (f" FAILED x{v['failures']}" if v["failures"] else ""))
    return f"{v[key]:.1f}"


def markdown(doc: dict[str, Any]) -> list[str]:
    """The mirror section of latest.md (empty when the scenario did not run)."""
    sc, r = doc["scenarios"], doc["ratios"]
    info = doc["meta"].get("mirror") or {}
    if not any(step in sc for _, step, _ in ROWS):
        return []
    third = info.get("third", "sftp")
    restic_rounds = info.get("restic_rounds", info.get("rounds", "?"))
    lines = ["", "### Mirror: one backup to three destinations", "",
             f"First full backup of the dataset into a new repository; {info.get('rounds', '?')} "
             f"rounds of multibackup (1 of the single S3 and SFTP destinations), "
             f"{restic_rounds} of restic, runs interleaved. Local = a directory on this disk, "
             "S3 = SeaweedFS `weed mini` on loopback, SFTP = OpenSSH sshd on loopback (key "
             "auth, internal-sftp)"
             + ("" if third == "sftp" else f"; this run used a {third} directory in place of "
                "SFTP") + ". restic's three destinations are its backup to a local repository "
             "followed by `restic copy` of that snapshot to an S3 and an SFTP repository "
             "(initialised with `--copy-chunker-params`), timed together; the backup is "
             "restic's first local backup of the local rounds' round 1 where those ran.", "",
             "| run | wall s, median [range] | client CPU s | server CPU s | peak RSS MiB |",
             "|---|---|---|---|---|"]
    for label, step, tool in ROWS:
        v = sc.get(step, {}).get(tool)
        if third != "sftp":
            label = label.replace("SFTP", "second local dir")
        if v:
            lines.append(f"| {label} | {_cell(v)} | {_cell(v, 'cpu_median')} | "
                         f"{_cell(v, 'server_cpu_median')} | {_cell(v, 'rss_mib_max')} |")
    three = r.get("mirror-3-vs-1")
    verdict = "" if three is None else (" ok" if three <= TARGET else " short")
    singles = {s: _wall(sc, s, "multibackup") for s in SINGLES}
    slowest = max((s for s in singles if singles[s] is not None), key=lambda s: singles[s],
                  default=None)
    lines += ["", "Ratios of wall medians: "
              f"3 destinations / 1 local = **{three if three is not None else '-'}** "
              f"(target <= {TARGET}{verdict}); 3 destinations / slowest single destination"
              f"{' (' + _dest(slowest, third) + ')' if slowest else ''} = "
              f"{_fmt(r.get('mirror-3-vs-slowest-single'))}; 3 local dirs / 1 local dir (the "
              f"fan-out itself, no server CPU) = {_fmt(r.get('mirror-3-local-dirs-vs-1'))}; "
              "multibackup 3 destinations / "
              f"(restic backup + 2 copies) = {_fmt(r.get('mirror-3-vs-restic-backup-2-copies'))}."]
    sizes = info.get("bytes") or {}
    if sizes:
        lines += ["", "Bytes stored by the 3-destination backup (round 1): " + ", ".join(
            f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items()) + "."]
    verify = info.get("verify") or {}
    if verify:
        lines += ["", "Verification (round 1): `check --read-data --no-cache` of each "
                  "destination alone, every blob read from that copy and checked against "
                  "its id: " + "; ".join(f"{k} {v}" for k, v in verify.items()) + "."]
    lines += ["", "The machine has 2 cores, and the servers (weed, sshd with its per-connection "
              "internal-sftp processes) run on them too: every S3 or SFTP write costs server CPU "
              "(the server CPU column) that competes with the client. All destinations are on "
              "the same local disk, so the 3-destination backup also writes about three times "
              "the bytes to it. With real remote destinations the network, not this CPU, "
              "would usually be the limit."]
    return lines


def _dest(step: str, third: str) -> str:
    return "second local dir" if step == "mirror-sftp" and third != "sftp" else DEST_NAMES[step]


def _fmt(x: float | None) -> str:
    return "-" if x is None else str(x)
