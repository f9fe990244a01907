"""The README's main job: a self-contained tour that needs no server and no setup.

It creates a sample website-like folder and backs it up into one repository mirrored on
three destinations (local directories standing in for a disk and two clouds). One
destination is down during the second, incremental backup and is caught up afterwards;
then one copy loses an object and another has one damaged, and the demo shows check
finding both, a restore reading around them (verified byte for byte), repair healing them,
and each destination passing check on its own.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile

from multibackup.backends import ObjectStore, open_store, parse_location
from multibackup.cli.output import Printer, human_bytes
from multibackup.engine.backup import Archiver, find_parent
from multibackup.engine.check import Checker
from multibackup.engine.mirrored import open_repository
from multibackup.engine.replicate import Replicator
from multibackup.engine.restore import Restorer
from multibackup.errors import StoreError
from multibackup.repository.repository import Repository
from multibackup.store.mirror import MirrorStore, UnavailableStore

PASSWORD = "demo-password"


def _make_site(root: str, rng: random.Random) -> None:
    words = ["backup", "cloud", "mirror", "restore", "snapshot", "bucket", "region", "key"]
    for d in ("html", "css", "js", "img", "db"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(50, 2000)))
        with open(os.path.join(root, "html", f"page{i:03}.html"), "w") as f:
            f.write(f"<html><body><h1>Page {i}</h1><p>{text}</p></body></html>\n")
    for i in range(20):
        with open(os.path.join(root, "img", f"photo{i:02}.jpg"), "wb") as f:
            f.write(rng.randbytes(rng.randint(10_000, 300_000)))
    with open(os.path.join(root, "db", "dump.sql"), "w") as f:
        for i in range(60_000):
            f.write(f"INSERT INTO orders VALUES ({i}, 'customer{i % 977}', {rng.randint(1, 9999)});\n")
    os.symlink("html/page000.html", os.path.join(root, "index.html"))


def _digest(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            else:
                with open(p, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def _store(path: str) -> ObjectStore:
    return open_store(parse_location(path))


def _flip_byte(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x40]))


def run_demo(work: str | None, out: Printer) -> int:
    work = work or tempfile.mkdtemp(prefix="multibackup-demo-")
    site = os.path.join(work, "site")
    # Three destinations; on a real system these are a disk, a cloud bucket and an SFTP box.
    names = ["disk", "cloud-a", "cloud-b"]
    paths = [os.path.join(work, n) for n in names]
    target = os.path.join(work, "restore")
    rng = random.Random(2026)
    out.line(f"demo work directory: {work}")
    os.makedirs(site, exist_ok=True)
    _make_site(site, rng)
    mirror = MirrorStore([_store(p) for p in paths])
    Repository.init(mirror, PASSWORD).close()
    out.line(f"1. created one encrypted repository on three destinations: {', '.join(names)}")
    with open_repository(mirror, PASSWORD) as repo:
        repo.load_index()
        a = Archiver(repo)
        snap1 = a.run([site])
        s = a.summary
        out.line(f"2. first backup {snap1.short_id}: {s.files_new} new files, "
                 f"{human_bytes(s.total_bytes)} read once, {human_bytes(s.data_added)} stored "
                 f"(compressed and encrypted) on each destination, in {s.duration:.2f} s")
    with open(os.path.join(site, "html", "page007.html"), "a") as f:
        f.write("<p>an edit</p>\n")
    with open(os.path.join(site, "html", "new.html"), "w") as f:
        f.write("<html>new page</html>\n")
    os.remove(os.path.join(site, "img", "photo03.jpg"))
    with open(os.path.join(site, "db", "dump.sql"), "a") as f:
        f.write("INSERT INTO orders VALUES (60000, 'late', 1);\n")

    # cloud-b is unreachable during the second backup
    down = MirrorStore([_store(paths[0]), _store(paths[1]),
                        UnavailableStore(paths[2], StoreError(f"{paths[2]}: cannot reach the "
                                                              "server (demo outage)"))])
    with open_repository(down, PASSWORD) as repo:
        repo.load_index()
        a = Archiver(repo)
        snap2 = a.run([site], parent=find_parent(repo, [site], snap1.hostname))
        s = a.summary
        ok = [n for n, d in zip(names, down.destinations, strict=True) if d.failed is None]
        out.line(f"3. second backup {snap2.short_id} while cloud-b was down: {s.files_changed} "
                 f"changed, {s.files_new} new files, {human_bytes(s.data_added)} stored; "
                 f"completed on {' and '.join(ok)}, cloud-b lags behind")
    with open_repository(mirror, PASSWORD) as repo:
        rep = Replicator(mirror, repo.cipher)
        survey = rep.heal(rep.survey())
        copied = survey.copies[2].copied
        out.line(f"4. sync: copied the {copied} objects cloud-b missed; all copies equal: "
                 f"{rep.survey().ok}")

    # damage: a pack disappears from the disk, another one rots on cloud-a
    packs = sorted(os.path.relpath(os.path.join(d, f), paths[0])
                   for d, _, fs in os.walk(os.path.join(paths[0], "data")) for f in fs)
    os.remove(os.path.join(paths[0], packs[0]))
    _flip_byte(os.path.join(paths[1], packs[-1]))
    with open_repository(mirror, PASSWORD) as repo:
        rep = Replicator(mirror, repo.cipher)
        survey = rep.survey(read_data=True)
        found = {n: len(c.missing) + len(c.damaged)
                 for n, c in zip(names, survey.copies, strict=True)}
        out.line(f"5. check of all copies: disk lacks {found['disk']} object, cloud-a holds "
                 f"{found['cloud-a']} damaged object, cloud-b is intact")
        repo.load_index()
        r = Restorer(repo, snap2, target).run()
        restored = os.path.join(target, site.lstrip("/"))
        same = _digest(site) == _digest(restored)
        out.line(f"6. restored {r.files} files ({human_bytes(r.bytes)}) anyway, reading around "
                 f"the damage: " + ("every file is byte-identical to the source" if same
                                    else "VERIFICATION FAILED: restored files differ"))
        survey = rep.heal(survey)
        healed = rep.survey(read_data=True).ok
        out.line(f"7. repair: rewrote the missing and the damaged object from verified "
                 f"copies; all copies equal again: {healed}")
    checks = []
    for p in paths:
        with Repository.open(_store(p), PASSWORD) as repo:
            checks.append(Checker(repo, read_data=True).run().ok)
    out.line("8. each destination alone is a complete repository: check --read-data "
             + ("passes on all three" if all(checks) else f"FAILED: {dict(zip(names, checks, strict=True))}"))
    ok = same and healed and all(checks)
    out.emit({"work": work, "snapshots": [snap1.id, snap2.id], "verified": same,
              "healed": healed, "check_ok": all(checks)})
    out.line(f"try it yourself: MULTIBACKUP_PASSWORD={PASSWORD} multibackup "
             + " ".join(f"-r {p}" for p in paths) + " check --read-data")
    return 0 if ok else 1
