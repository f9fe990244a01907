"""The README's main job: a self-contained tour that needs no server and no setup.

It creates a sample website-like folder, backs it up into a local repository, changes it,
backs it up again (incrementally), restores the latest snapshot and verifies every byte.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile

from multibackup.backends import open_store, parse_location
from multibackup.cli.output import Printer, human_bytes
from multibackup.engine.backup import Archiver, find_parent
from multibackup.engine.check import Checker
from multibackup.engine.restore import Restorer
from multibackup.repository.repository import Repository

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


def run_demo(work: str | None, out: Printer) -> int:
    work = work or tempfile.mkdtemp(prefix="multibackup-demo-")
    site = os.path.join(work, "site")
    repo_path = os.path.join(work, "repo")
    target = os.path.join(work, "restore")
    rng = random.Random(2026)
    out.line(f"demo work directory: {work}")
    os.makedirs(site, exist_ok=True)
    _make_site(site, rng)
    store = open_store(parse_location(repo_path))
    Repository.init(store, PASSWORD).close()
    out.line(f"1. created an encrypted repository at {repo_path}")
    with Repository.open(store, PASSWORD) as repo:
        repo.load_index()
        a = Archiver(repo)
        snap1 = a.run([site])
        s = a.summary
        out.line(f"2. first backup {snap1.short_id}: {s.files_new} new files, "
                 f"{human_bytes(s.total_bytes)} read, {human_bytes(s.data_added)} stored "
                 f"(compressed and encrypted) in {s.duration:.2f} s")
    with open(os.path.join(site, "html", "page007.html"), "a") as f:
        f.write("<p>an edit</p>\n")
    with open(os.path.join(site, "html", "new.html"), "w") as f:
        f.write("<html>new page</html>\n")
    os.remove(os.path.join(site, "img", "photo03.jpg"))
    with open(os.path.join(site, "db", "dump.sql"), "a") as f:
        f.write("INSERT INTO orders VALUES (60000, 'late', 1);\n")
    with Repository.open(store, PASSWORD) as repo:
        repo.load_index()
        a = Archiver(repo)
        snap2 = a.run([site], parent=find_parent(repo, [site], snap1.hostname))
        s = a.summary
        out.line(f"3. second backup {snap2.short_id}: {s.files_new} new, {s.files_changed} changed, "
                 f"{s.files_unchanged} unchanged files; only {human_bytes(s.data_added)} stored")
    with Repository.open(store, PASSWORD) as repo:
        repo.load_index()
        r = Restorer(repo, snap2, target).run()
        out.line(f"4. restored {r.files} files ({human_bytes(r.bytes)}) to {target}")
        restored = os.path.join(target, site.lstrip("/"))
        same = _digest(site) == _digest(restored)
        out.line("5. verified: every restored file is byte-identical to the source" if same
                 else "5. VERIFICATION FAILED: restored files differ from the source")
        report = Checker(repo, read_data=True).run()
        out.line(f"6. check --read-data: {'no errors' if report.ok else report.errors}")
    out.emit({"work": work, "snapshots": [snap1.id, snap2.id], "verified": same,
              "check_ok": report.ok})
    out.line(f"try it yourself: MULTIBACKUP_PASSWORD={PASSWORD} multibackup -r {repo_path} snapshots")
    return 0 if same and report.ok else 1
