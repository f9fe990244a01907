"""Deterministic benchmark data: a website-like tree, large random files, an SQL dump.

``generate(root)`` writes about 1 GiB that is the same, byte for byte and mtime for mtime,
on every machine; ``mutate(root)`` changes about 5% of it the same way every time. Files
are always replaced through a new inode (write, then rename), so a pristine copy made
with hard links (``cp -al``) is never changed by a mutation of the copy.

The mutation is made once, into a hard-linked copy kept beside the pristine tree;
``changes`` lists what it differs in, and ``switch`` turns a working copy from one state
into the other by relinking only those files: a benchmark round then costs neither a
new copy of 38,000 files nor their deletion (both slow on this VM's disk).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import sys
from pathlib import Path

SEED = 20261130
VERSION = "1"
BASE_MTIME = 1_750_000_000
SMALL_FILES = 38_000
DIRS = 1_500
BIG_FILES = 3
BIG_SIZE = 100 * 1024 * 1024
DUMP_SIZE = 150 * 1024 * 1024

_KEYWORDS = ["def", "class", "return", "import", "from", "if", "else", "for", "while", "try",
             "except", "with", "as", "lambda", "yield", "async", "await", "function", "const",
             "let", "var", "public", "static", "void", "int", "string", "<div", "</div>",
             "<span", "</span>", "<p>", "</p>", "{", "}", "(", ")", "=", "==", "+=", ";", ":",
             ",", ".", "self", "this", "None", "null", "true", "false"]


def _identifiers(rng: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(n):
        parts = ["".join(rng.choices(letters, k=rng.randint(2, 8))) for _ in range(rng.randint(1, 3))]
        out.append("_".join(parts))
    return out


def _line_pool(rng: random.Random, n: int) -> list[str]:
    idents = _identifiers(rng, 4000)
    tokens = _KEYWORDS * 20 + idents
    pool = []
    for _ in range(n):
        indent = "    " * rng.choice((0, 0, 1, 1, 1, 2, 2, 3))
        words = rng.choices(tokens, k=rng.randint(2, 14))
        if rng.random() < 0.1:
            words.append(f'"{rng.choice(idents)} {rng.randint(0, 99999)}"')
        pool.append(indent + " ".join(words) + "\n")
    return pool


def _write(path: Path, data: bytes, mtime: int) -> None:
    """Write through a new inode, then set a fixed mtime."""
    tmp = path.with_name(path.name + ".tmp~")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    os.utime(path, (mtime, mtime))


def _text(rng: random.Random, pool: list[str], size: int) -> bytes:
    out = []
    total = 0
    while total < size:
        line = rng.choice(pool)
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def _site_dirs(rng: random.Random, root: Path) -> list[Path]:
    names = _identifiers(rng, 600)
    dirs = [root]
    while len(dirs) < DIRS:
        parent = rng.choice(dirs[: max(1, len(dirs))])
        if len(parent.relative_to(root).parts) >= 6:
            continue
        d = parent / rng.choice(names)
        if d not in dirs:
            dirs.append(d)
    return dirs


_TEXT_EXT = ["py", "js", "html", "css", "json", "md", "php", "txt"]
_BIN_EXT = ["png", "jpg", "woff2", "pyc", "so"]


def generate(root: Path) -> None:
    rng = random.Random(SEED)
    pool = _line_pool(rng, 60_000)
    site = root / "site"
    dirs = _site_dirs(rng, site)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    texts: list[Path] = []
    for i in range(SMALL_FILES):
        d = rng.choice(dirs)
        size = min(4 * 1024 * 1024, int(rng.lognormvariate(math.log(6000), 1.3)))
        r = rng.random()
        if r < 0.2:
            path = d / f"asset{i}.{rng.choice(_BIN_EXT)}"
            data = rng.randbytes(size)
        elif r < 0.32 and texts:
            src = rng.choice(texts)  # a near-duplicate: another version of an earlier file
            path = d / f"v{i}_{src.name}"
            data = src.read_bytes()
            pos = rng.randint(0, len(data))
            data = data[:pos] + rng.choice(pool).encode() + data[pos:]
        else:
            path = d / f"page{i}.{rng.choice(_TEXT_EXT)}"
            data = _text(rng, pool, size)
            texts.append(path)
        _write(path, data, BASE_MTIME + i)
    large = root / "large"
    large.mkdir(exist_ok=True)
    for k in range(BIG_FILES):
        _write(large / f"big_{k + 1:02}.bin", random.Random(SEED + 1000 + k).randbytes(BIG_SIZE),
               BASE_MTIME)
    (root / "db").mkdir(exist_ok=True)
    _write(root / "db" / "dump.sql", _dump(random.Random(SEED + 7), DUMP_SIZE), BASE_MTIME)
    for d in sorted(dirs, key=lambda p: -len(p.parts)):
        os.utime(d, (BASE_MTIME, BASE_MTIME))


def _dump(rng: random.Random, size: int, start: int = 0) -> bytes:
    names = _identifiers(rng, 2000)
    out = []
    total = 0
    i = start
    out.append(b"-- MariaDB dump\nCREATE TABLE `orders` (id INT PRIMARY KEY, customer VARCHAR(64),"
               b" email VARCHAR(128), amount DECIMAL(10,2), created DATETIME, note TEXT);\n")
    while total < size:
        rows = []
        for _ in range(50):
            i += 1
            name = rng.choice(names)
            rows.append(f"({i},'{name}','{name}@example.com',{rng.randint(100, 999999) / 100:.2f},"
                        f"'2026-{rng.randint(1, 12):02}-{rng.randint(1, 28):02} "
                        f"{rng.randint(0, 23):02}:{rng.randint(0, 59):02}:00','{rng.choice(names)}')")
        line = ("INSERT INTO `orders` VALUES " + ",".join(rows) + ";\n").encode()
        out.append(line)
        total += len(line)
    return b"".join(out)[:size]


def mutate(root: Path) -> None:
    """About 5%: edits, appends, a mid-file insert, deletions and additions."""
    rng = random.Random(SEED + 2)
    pool = _line_pool(random.Random(SEED), 2000)
    when = BASE_MTIME + 86_400
    small = sorted(p for p in (root / "site").rglob("page*") if p.is_file())
    for p in rng.sample(small, k=len(small) * 4 // 100):
        data = p.read_bytes()
        pos = rng.randint(0, len(data))
        _write(p, data[:pos] + rng.choice(pool).encode() + data[pos:], when)
    dump = root / "db" / "dump.sql"
    _write(dump, dump.read_bytes() + _dump(rng, 8 * 1024 * 1024, start=10**7), when)
    big = root / "large" / "big_02.bin"
    data = big.read_bytes()
    at = 50 * 1024 * 1024
    _write(big, data[:at] + rng.randbytes(1024 * 1024) + data[at:], when)
    everything = sorted(p for p in (root / "site").rglob("*") if p.is_file())
    for p in rng.sample(everything, k=50):
        p.unlink()
    dirs = sorted({p.parent for p in everything if p.parent.exists()})
    for i in range(120):
        _write(rng.choice(dirs) / f"new{i}.html", _text(rng, pool, rng.randint(500, 40_000)), when)
    _write(root / "large" / "new_upload.bin", rng.randbytes(16 * 1024 * 1024), when)


def _inodes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = os.lstat(p).st_ino
    return out


def changes(pristine: Path, mutated: Path) -> dict[str, list[str]]:
    """What a mutated hard-linked copy differs in: files ``changed`` (a new inode),
    ``added`` and ``removed``, as paths relative to the roots."""
    a, b = _inodes(pristine), _inodes(mutated)
    return {"changed": sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
            "added": sorted(b.keys() - a.keys()), "removed": sorted(a.keys() - b.keys())}


def switch(data: Path, to: Path, diff: dict[str, list[str]], forward: bool) -> None:
    """Make ``data`` equal to the tree ``to`` (the mutated tree when ``forward``, else the
    pristine one) by relinking the files of ``diff`` (from :func:`changes`)."""
    bring = diff["changed"] + diff["added" if forward else "removed"]
    drop = diff["removed" if forward else "added"]
    for rel in bring:
        tmp = data / (rel + ".tmp~")
        os.link(to / rel, tmp)
        os.replace(tmp, data / rel)
    for rel in drop:
        (data / rel).unlink()


def digest(root: Path) -> str:
    """Hash of every path, size and mtime: proves two generated trees are the same."""
    h = hashlib.blake2b(digest_size=8)
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


if __name__ == "__main__":
    target = Path(sys.argv[2])
    if sys.argv[1] == "generate":
        generate(target)
    elif sys.argv[1] == "mutate":
        mutate(target)
    print(digest(target))
