"""``multibackup`` command line: restic-style subcommands over the engine.

Exit codes: 0 success; 1 fatal error; 2 invalid usage; 3 backup done but some source files
could not be read; 10 repository does not exist; 11 repository locked; 12 wrong password;
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, NoReturn

from multibackup import __version__
from multibackup.cli import heap
from multibackup.cli.access import get_new_password, get_password, get_store, open_repo
from multibackup.cli.copies import (
    catch_up_lagging,
    check_all,
    cmd_repair_copies,
    cmd_sync,
    finish_mirror,
    print_affected,
    prune_refusal,
)
from multibackup.cli.migrate import add_migrate_parser
from multibackup.cli.output import Printer, human_bytes
from multibackup.cli.plans import add_plan_parser
from multibackup.cli.server import add_server_parser
from multibackup.engine.backup import Archiver, find_parent
from multibackup.engine.check import Checker
from multibackup.engine.diff import diff_trees
from multibackup.engine.forget import Policy, apply_policy
from multibackup.engine.mirrored import incomplete_copies
from multibackup.engine.progress import Progress
from multibackup.engine.prune import prune
from multibackup.engine.repair import rebuild_index
from multibackup.engine.restore import Restorer
from multibackup.engine.source_backup import SourceArchiver, find_source_parent
from multibackup.engine.source_restore import TargetRestorer, find_node, iter_content
from multibackup.engine.stats import stats
from multibackup.errors import MultibackupError, UsageError
from multibackup.repository import keys
from multibackup.repository.lock import read_locks, remove_stale_locks
from multibackup.repository.repository import Repository
from multibackup.repository.snapshot import Snapshot
from multibackup.repository.tree import BLOCKDEV, CHARDEV, DIR, FIFO, SOCKET, SYMLINK
from multibackup.sources.fs import Excludes, scan_totals
from multibackup.sources.url import is_url, open_source, open_target

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


# ---- shared helpers ---------------------------------------------------------------------

#: the first letter of ``ls -l`` for each node type
_LS_KIND = {DIR: "d", SYMLINK: "l", FIFO: "p", SOCKET: "s", CHARDEV: "c", BLOCKDEV: "b"}


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    d = s.to_json()
    d["id"] = s.id
    d["short_id"] = s.short_id
    return d


def _filter_snapshots(snaps: list[Snapshot], args: argparse.Namespace) -> list[Snapshot]:
    out = snaps
    if getattr(args, "host", None):
        out = [s for s in out if s.hostname == args.host]
    if getattr(args, "tag", None):
        out = [s for s in out if set(args.tag) & set(s.tags)]
    if getattr(args, "path", None):
        want = sorted(p if is_url(p) else os.path.abspath(p) for p in args.path)
        out = [s for s in out if sorted(s.paths) == want]
    return out


# ---- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, out: Printer) -> int:
    store = get_store(args, create=True)
    repo = Repository.init(store, get_password(args, confirm=True), compression=args.compression,
                           pack_size=args.pack_size * 1024 * 1024)
    args.repo_id = repo.config.id
    out.emit({"message_type": "initialized", "id": repo.config.id, "repository": store.description})
    out.line(f"created multibackup repository {repo.config.id[:10]} at {store.description}")
    out.line("Keep the password safe: without it the data cannot be recovered.")
    return EXIT_OK


def _source_arg(args: argparse.Namespace) -> str | None:
    """The source URL of a ``backup URL`` command, or None for local paths."""
    urls = [p for p in args.paths if is_url(p)]
    if not urls:
        return None
    if len(args.paths) > 1:
        raise UsageError("a source URL is backed up on its own: give one URL, or local paths")
    return urls[0]


def cmd_backup(args: argparse.Namespace, out: Printer) -> int:
    url = _source_arg(args)
    source = open_source(url) if url is not None else None  # a bad URL fails before the repo
    repo = open_repo(args, bootstrap=True)
    hostname = args.host or socket.gethostname()
    with repo, repo.lock(command="backup"):
        catch_up_lagging(repo, out)
        report = repo.load_index()
        if report.recovered_packs:
            out.warn(f"indexed {len(report.recovered_packs)} pack(s) left by an interrupted run")
        for msg in report.damaged_index_files:
            out.warn(f"warning: damaged index file ignored, its packs were re-indexed: {msg}")
        for msg in report.damaged_packs:
            out.warn(f"warning: pack with unreadable header ignored: {msg}")
        parent = None
        if not args.force:
            parent = (repo.find_snapshot(args.parent) if args.parent
                      else find_source_parent(repo, source.describe(), hostname) if source
                      else find_parent(repo, args.paths, hostname))
        progress = Progress()
        archiver: Archiver | SourceArchiver
        if source is not None:
            archiver = SourceArchiver(repo, source, Excludes(tuple(args.exclude)),
                                      workers=args.workers, progress=progress)
            try:
                with out.progress(progress, "backup"):
                    snap = archiver.run(parent=parent, tags=args.tag, hostname=hostname)
            finally:
                source.close()
        else:
            archiver = Archiver(repo, Excludes(tuple(args.exclude)), workers=args.workers,
                                progress=progress)
            snap = _backup_paths(args, out, archiver, progress, parent, hostname)
    return _backup_report(args, out, archiver, snap, parent)


def _backup_paths(args: argparse.Namespace, out: Printer, archiver: Archiver, progress: Progress,
                  parent: Snapshot | None, hostname: str) -> Snapshot:
    if out.interactive:
        def totals(files: int, size: int) -> None:
            progress.total_items, progress.total_bytes = files, size

        threading.Thread(target=scan_totals, daemon=True, name="scan",
                         args=([os.path.abspath(p) for p in args.paths],
                               Excludes(tuple(args.exclude)), totals)).start()
    with out.progress(progress, "backup"):
        return archiver.run(args.paths, parent=parent, tags=args.tag, hostname=hostname)


def _backup_report(args: argparse.Namespace, out: Printer, archiver: Archiver | SourceArchiver,
                   snap: Snapshot, parent: Snapshot | None) -> int:
    s = archiver.summary
    for err in s.errors:
        out.problem(f"error: {err}")
    if out.json:
        doc = {"message_type": "summary", "snapshot_id": snap.id, "parent": snap.parent,
               **s.to_json()}
        mirror = getattr(args, "mirror", None)
        if mirror is not None:
            doc["destinations"] = [d.to_json() for d in mirror.destinations]
        out.emit(doc)
    else:
        if parent:
            out.line(f"using parent snapshot {parent.short_id}")
        out.line(f"Files:       {s.files_new} new, {s.files_changed} changed, "
                 f"{s.files_unchanged} unmodified")
        out.line(f"Dirs:        {s.dirs}")
        out.line(f"Processed:   {s.total_files} files, {human_bytes(s.total_bytes)}; "
                 f"read {human_bytes(s.bytes_read)}")
        out.line(f"Added:       {human_bytes(s.data_added_raw)} "
                 f"({human_bytes(s.data_added)} stored)")
        out.line(f"Duration:    {s.duration:.2f} s")
        out.line(f"snapshot {snap.short_id} saved")
        mirror = getattr(args, "mirror", None)
        if mirror is not None:
            for d in mirror.destinations:
                state = "ok" if d.failed is None else "FAILED"
                out.line(f"  {state:<7}{d.description}: {d.writes} objects written, "
                         f"{human_bytes(d.bytes_written)}")
    if s.errors:
        out.warn(f"warning: {len(s.errors)} source file(s) could not be read; "
                 "the snapshot is saved without them")
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_snapshots(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    snaps = _filter_snapshots(repo.snapshots(), args)
    for msg in repo.snapshot_errors:
        out.warn(f"warning: {msg}")
    if args.latest:
        groups: dict[tuple[str, tuple[str, ...]], list[Snapshot]] = {}
        for s in snaps:
            groups.setdefault((s.hostname, tuple(sorted(s.paths))), []).append(s)
        snaps = sorted((x for g in groups.values() for x in g[-args.latest:]),
                       key=lambda s: s.time)
    if out.json:
        out.emit([snapshot_json(s) for s in snaps])
        return EXIT_OK
    out.result(f"{'ID':<10}{'Time':<21}{'Host':<16}{'Tags':<14}{'Size':>12}  Paths")
    out.result("-" * 90)
    for s in snaps:
        size = human_bytes(s.summary.get("total_bytes", 0))
        paths = s.paths[0] + (f" (+{len(s.paths) - 1})" if len(s.paths) > 1 else "")
        out.result(f"{s.short_id:<10}{s.time:%Y-%m-%d %H:%M:%S}  {s.hostname[:15]:<16}"
                   f"{','.join(s.tags)[:13]:<14}{size:>12}  {paths}")
    out.result("-" * 90)
    out.result(f"{len(snaps)} snapshot(s)")
    return EXIT_OK


def _node_path(path: str) -> str:
    return "/" + path.strip("/") if path.strip("/") else "/"


def cmd_ls(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    with repo:
        repo.load_index(recover=False)
        snap = repo.find_snapshot(args.snapshot)
        base = _node_path(args.path or "/")
        rows = []
        for path, node in repo.walk(snap.tree):
            if base != "/" and path != base and not path.startswith(base + "/"):
                continue
            if not args.recursive and base != "/" and path.count("/") > base.count("/") + 1:
                continue
            if not args.recursive and base == "/" and path.count("/") > 1 and args.path:
                continue
            rows.append((path, node))
    if out.json:
        out.emit({"snapshot": snapshot_json(snap),
                  "nodes": [{"path": p, **{k: v for k, v in n.to_json().items() if k != "content"}}
                            for p, n in rows]})
        return EXIT_OK
    for path, node in rows:
        if args.long:
            kind = _LS_KIND.get(node.type, "-")
            t = datetime.fromtimestamp(node.mtime / 1e9)
            extra = f" -> {node.target}" if node.type == SYMLINK else ""
            # a device node shows its major and minor number where a file shows its size
            size = (f"{os.major(node.rdev)}, {os.minor(node.rdev)}"
                    if node.type in (CHARDEV, BLOCKDEV) else node.size)
            out.result(f"{kind}{oct(node.mode)[2:]:>5} {node.uid:>5} {node.gid:>5} "
                       f"{size:>12} {t:%Y-%m-%d %H:%M:%S} {path}{extra}")
        else:
            out.result(path)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    with repo:
        repo.load_index(recover=False)
        a, b = repo.find_snapshot(args.a), repo.find_snapshot(args.b)
        changes = list(diff_trees(repo, a.tree, b.tree))
    counts = {c: sum(1 for x, _ in changes if x == c) for c in "+-MUT"}
    if out.json:
        out.emit({"from": a.id, "to": b.id, "changes": [{"change": c, "path": p} for c, p in changes],
                  "added": counts["+"], "removed": counts["-"], "modified": counts["M"],
                  "metadata": counts["U"], "type_changed": counts["T"]})
        return EXIT_OK
    out.result(f"comparing snapshot {a.short_id} to {b.short_id}:")
    for c, p in changes:
        out.result(f"{c}    {p}")
    out.result(f"added: {counts['+']}, removed: {counts['-']}, modified: {counts['M']}, "
               f"metadata only: {counts['U']}, type changed: {counts['T']}")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, out: Printer) -> int:
    if is_url(args.target):
        if args.sparse and not args.target.lower().startswith("file:"):
            raise UsageError("--sparse applies to a local target only")
        return _restore_to_url(args, out)
    repo = open_repo(args)
    with repo, repo.lock(command="restore"):
        repo.load_index()
        snap = repo.find_snapshot(args.snapshot, host=args.host)
        progress = Progress()
        restorer = Restorer(repo, snap, args.target, includes=args.include,
                            overwrite=args.overwrite, workers=args.workers, progress=progress,
                            sparse=args.sparse)
        with out.progress(progress, "restore"), heap.blob_sized():
            s = restorer.run()
    for err in s.errors:
        out.problem(f"error: {err}")
    out.emit({"message_type": "summary", "snapshot_id": snap.id, "target": restorer.target,
              **s.to_json()})
    specials = f"{s.specials} named pipes or device nodes, " if s.specials else ""
    out.line(f"restored snapshot {snap.short_id} to {restorer.target}: {s.files} files, "
             f"{s.dirs} dirs, {s.symlinks} symlinks, {s.hardlinks} hard links, {specials}"
             f"{human_bytes(s.bytes)}")
    if s.fallback_reads:  # a mirror's copy is missing or damaged data: say so
        out.warn(f"note: {s.fallback_reads} piece(s) of data were missing, damaged or "
                 "unreadable on the copy read first and came from another copy; "
                 "'multibackup check --all-destinations' names what 'repair' heals")
    if s.errors:
        out.problem(f"error: {len(s.errors)} item(s) could not be restored")
        return EXIT_FATAL
    return EXIT_OK


def _restore_to_url(args: argparse.Namespace, out: Printer) -> int:
    """Restore into a remote host, a bucket or a database server named by a URL."""
    target = open_target(args.target)
    if args.overwrite and hasattr(target, "overwrite"):
        target.overwrite = True  # targets that can replace files do so only when asked
    try:
        repo = open_repo(args)
        with repo, repo.lock(command="restore"):
            repo.load_index()
            snap = repo.find_snapshot(args.snapshot, host=args.host)
            progress = Progress()
            restorer = TargetRestorer(repo, snap, target, includes=args.include,
                                      progress=progress)
            with out.progress(progress, "restore"):
                s = restorer.run()
    finally:
        target.close()
    for err in s.errors:
        out.problem(f"error: {err}")
    out.emit({"message_type": "summary", "snapshot_id": snap.id, "target": target.describe(),
              **s.to_json()})
    out.line(f"restored snapshot {snap.short_id} to {target.describe()}: {s.files} files, "
             f"{s.dirs} dirs, {s.symlinks} symlinks, {human_bytes(s.bytes)}")
    if s.errors:
        out.problem(f"error: {len(s.errors)} item(s) could not be restored")
        return EXIT_FATAL
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, out: Printer) -> int:
    """Write one file of a snapshot to stdout (a database dump into its client, say)."""
    repo = open_repo(args)
    with repo, repo.lock(command="dump"):
        repo.load_index()
        snap = repo.find_snapshot(args.snapshot, host=args.host)
        node = find_node(repo, snap, args.path)
        if node.type != "file":
            raise UsageError(f"{args.path!r} in snapshot {snap.short_id} is not a file")
        sink = sys.stdout.buffer
        with ThreadPoolExecutor(4, thread_name_prefix="dump") as pool:
            for chunk in iter_content(repo, node, pool):
                sink.write(chunk)
        sink.flush()
    return EXIT_OK


def cmd_check(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args, cache=False)  # check must see what the store really holds
    if getattr(args, "mirror", None) is not None:  # a mirror: every copy is checked
        with repo, repo.lock(command="check"):
            return check_all(args, out, repo)
    if args.all_destinations:
        raise UsageError("--all-destinations needs several destinations: give -r once per "
                         "destination")
    with repo, repo.lock(command="check"):
        progress = Progress()
        checker = Checker(repo, read_data=args.read_data, progress=progress)
        with out.progress(progress, "check"), heap.blob_sized():
            r = checker.run()
    for w in r.warnings:
        out.warn(f"warning: {w}")
    for e in r.errors:
        out.problem(f"error: {e}")
    if out.json:
        out.emit(r.to_json())
    else:
        print_affected(out, r.affected)
        out.line(f"checked {r.snapshots} snapshots, {r.packs} packs, {r.blobs} blobs"
                 + (f", read {r.packs_read} packs" if args.read_data else ""))
        out.line("no errors were found" if r.ok else f"{len(r.errors)} error(s) found")
    if not r.ok:
        if not out.json:
            print(f"error: check found {len(r.errors)} problem(s)", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK


def cmd_forget(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    code = EXIT_OK
    with repo, repo.lock(exclusive=args.prune, command="forget"):
        if not args.dry_run:
            catch_up_lagging(repo, out)
        snaps = _filter_snapshots(repo.snapshots(), args)
        removed: list[Snapshot] = []
        doc: list[dict[str, Any]] = []
        if args.snapshot_ids:
            targets = [repo.find_snapshot(i) for i in args.snapshot_ids]
            removed = targets
        else:
            policy = Policy(args.keep_last, args.keep_hourly, args.keep_daily, args.keep_weekly,
                            args.keep_monthly, args.keep_yearly, args.keep_within or "",
                            args.keep_tag or [])
            for (host, paths), d in apply_policy(snaps, policy).items():
                doc.append({"host": host, "paths": list(paths),
                            "keep": [dict(snapshot_json(s), reasons=r) for s, r in d.keep],
                            "remove": [snapshot_json(s) for s in d.remove]})
                out.line(f"snapshots for host {host}, paths {', '.join(paths)}:")
                for s, reasons in d.keep:
                    out.line(f"  keep   {s.short_id}  {s.time:%Y-%m-%d %H:%M:%S}  {', '.join(reasons)}")
                for s in d.remove:
                    out.line(f"  remove {s.short_id}  {s.time:%Y-%m-%d %H:%M:%S}")
                removed.extend(d.remove)
        if not args.dry_run:
            for s in removed:
                repo.remove_snapshot(s.id)
        verb = "would remove" if args.dry_run else "removed"
        out.line(f"{verb} {len(removed)} snapshot(s)")
        result: dict[str, Any] = {"groups": doc, "removed": [s.id for s in removed],
                                  "dry_run": args.dry_run}
        missing = incomplete_copies(repo) if args.prune else []
        if missing:
            out.warn(f"note: prune skipped: {prune_refusal(missing)}")
            result["prune"] = None
            code = EXIT_PARTIAL
        elif args.prune:
            repo.load_index(recover=False)
            rep = _run_prune(repo, args, out)
            result["prune"] = rep
    out.emit(result)
    return code


def _run_prune(repo: Repository, args: argparse.Namespace, out: Printer) -> dict[str, Any]:
    progress = Progress()
    with out.progress(progress, "prune"):
        r = prune(repo, max_unused=args.max_unused / 100, dry_run=args.dry_run, progress=progress)
    verb = "would free" if r.dry_run else "freed"
    out.line(f"{verb} {human_bytes(r.bytes_freed)}: {r.packs_deleted} packs deleted, "
             f"{r.packs_repacked} repacked, {r.unindexed_deleted} unindexed removed, "
             f"{r.blobs_removed} blobs removed")
    return r.to_json()


def cmd_prune(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    with repo, repo.lock(exclusive=True, command="prune"):
        if not args.dry_run:
            catch_up_lagging(repo, out)
        missing = incomplete_copies(repo)
        if missing:
            raise MultibackupError(prune_refusal(missing))
        out.emit(_run_prune(repo, args, out))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    with repo:
        repo.load_index()
        snaps = ([repo.find_snapshot(i) for i in args.snapshot_ids] if args.snapshot_ids
                 else _filter_snapshots(repo.snapshots(), args))
        doc = stats(repo, snaps)
    if out.json:
        out.emit(doc)
        return EXIT_OK
    out.result(f"Snapshots:           {doc['snapshots']}")
    out.result(f"Files (all snaps):   {doc['total_file_count']}")
    out.result(f"Restore size:        {human_bytes(doc['total_size'])}")
    out.result(f"Unique data:         {human_bytes(doc['unique_raw_size'])} in "
               f"{doc['unique_blobs']} blobs")
    out.result(f"Stored (compressed): {human_bytes(doc['unique_stored_size'])}")
    out.result(f"Repository packs:    {human_bytes(doc['repository_pack_size'])}")
    out.result(f"Compression ratio:   {doc['compression_ratio']}x")
    out.result(f"Dedup ratio:         {doc['dedup_ratio']}x")
    return EXIT_OK


def cmd_unlock(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    removed = remove_stale_locks(repo.store, repo.cipher, remove_all=args.remove_all)
    remaining = read_locks(repo.store, repo.cipher)
    out.emit({"removed": removed, "remaining": [lk.describe() for lk in remaining]})
    out.line(f"removed {len(removed)} lock(s)")
    for lk in remaining:
        out.line(f"still held: {lk.describe()} (use --remove-all to remove it)")
    return EXIT_OK


def cmd_key(args: argparse.Namespace, out: Printer) -> int:
    repo = open_repo(args)
    if args.key_command == "list":
        slots = keys.list_slots(repo.store)
        if out.json:
            out.emit([{"id": k.id, "current": k.id == repo.key_id, "created": k.created,
                       "hostname": k.hostname, "username": k.username} for k in slots])
            return EXIT_OK
        out.result(f" {'ID':<10}{'User':<12}{'Host':<20}Created")
        for k in slots:
            mark = "*" if k.id == repo.key_id else " "
            out.result(f"{mark}{k.id[:8]:<10}{k.username[:11]:<12}{k.hostname[:19]:<20}{k.created[:19]}")
        return EXIT_OK
    if args.key_command in ("add", "passwd"):
        slot = keys.new_slot(repo.master, get_new_password(args))
        keys.save_slot(repo.store, slot)
        if args.key_command == "passwd":
            repo.store.delete(keys.PREFIX + repo.key_id)
            out.line(f"password changed; key {repo.key_id[:8]} replaced by {slot.id[:8]}")
        else:
            out.line(f"added key {slot.id[:8]}")
        out.emit({"id": slot.id, "removed": repo.key_id if args.key_command == "passwd" else None})
        return EXIT_OK
    # remove
    matches = [k for k in keys.list_slots(repo.store) if k.id.startswith(args.key_id)]
    if len(matches) != 1:
        raise MultibackupError(f"key id {args.key_id!r} matches {len(matches)} keys")
    if matches[0].id == repo.key_id:
        raise MultibackupError("refusing to remove the key currently in use "
                               "(open the repository with another password to remove it)")
    repo.store.delete(keys.PREFIX + matches[0].id)
    out.emit({"removed": matches[0].id})
    out.line(f"removed key {matches[0].id[:8]}")
    return EXIT_OK


def cmd_repair(args: argparse.Namespace, out: Printer) -> int:
    what = args.repair_command or ("copies" if getattr(args, "mirror", None) or
                                   len(args.repo or []) > 1 else None)
    if what is None:
        raise UsageError("say what to repair: 'repair index' (rebuild the index from the "
                         "packs) or, with several destinations, 'repair copies'")
    if what == "copies":
        return cmd_repair_copies(args, out)
    repo = open_repo(args)
    with repo, repo.lock(exclusive=True, command="repair index"):
        r = rebuild_index(repo)
    for msg in r.unreadable_packs:
        out.warn(f"warning: pack header unreadable, left in place: {msg}")
    out.emit(r.__dict__)
    out.line(f"rebuilt the index from {r.packs} packs ({r.blobs} blobs); "
             f"replaced {r.removed_index_files} index file(s)")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: Printer) -> int:
    from multibackup.demo import run_demo

    return run_demo(args.dir, out)


def cmd_version(args: argparse.Namespace, out: Printer) -> int:
    out.emit({"version": __version__})
    out.result(f"multibackup {__version__}")
    return EXIT_OK


# ---- argument parsing -------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def _global_options() -> argparse.ArgumentParser:
    g = _Parser(add_help=False)
    d = argparse.SUPPRESS
    g.add_argument("-r", "--repo", action="append", default=d,
                   help="repository location (env MULTIBACKUP_REPOSITORY); give it several "
                        "times for one repository mirrored on several destinations")
    g.add_argument("--password-file", default=d, help="read the password from this file")
    g.add_argument("--json", action="store_true", default=d, help="print JSON")
    g.add_argument("-q", "--quiet", action="store_true", default=d, help="print only errors and listings")
    g.add_argument("--s3-endpoint", default=d, help="S3 endpoint URL (env AWS_ENDPOINT_URL)")
    g.add_argument("--s3-region", default=d, help="S3 region (env AWS_REGION)")
    g.add_argument("--s3-addressing", choices=["path", "virtual"], default=d,
                   help="S3 bucket addressing (default: path with a custom endpoint)")
    g.add_argument("--cache-dir", default=d,
                   help="local cache for remote repositories (env MULTIBACKUP_CACHE_DIR)")
    g.add_argument("--no-cache", action="store_true", default=d, help="do not use a local cache")
    g.add_argument("--config", default=d,
                   help="config file with destinations and plans (env MULTIBACKUP_CONFIG)")
    return g


_DEFAULTS = {"repo": None, "password_file": None, "json": False, "quiet": False,
             "s3_endpoint": None, "s3_region": None, "s3_addressing": None,
             "cache_dir": None, "no_cache": False, "config": None}


#: Commands that write: a destination failing during one of them misses writes (it lags).
_WRITERS = {"init", "backup", "forget", "prune", "key", "repair", "sync", "unlock"}


def build_parser() -> argparse.ArgumentParser:
    g = _global_options()
    p = _Parser(prog="multibackup", parents=[g],
                                description="Encrypted, deduplicated backups to several clouds.",
                                epilog="exit codes: 0 ok, 1 error, 2 usage, 3 some files unreadable, "
                                       "10 no repository, 11 locked, 12 wrong password")
    p.add_argument("--version", action="version", version=f"multibackup {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[..., int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[g], help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    sp = add("init", cmd_init, "create a new repository")
    sp.add_argument("--compression", type=int, default=3, help="zstd level 1-22, 0 = off (default 3)")
    sp.add_argument("--pack-size", type=int, default=16, help="target pack size in MiB (default 16)")

    sp = add("backup", cmd_backup, "back up files and directories, or one source URL "
                                   "(sftp:// ftp:// mysql:// postgresql:// sqlite:// redis:// "
                                   "s3:// ...)")
    sp.add_argument("paths", nargs="+", metavar="PATH|URL")
    sp.add_argument("-e", "--exclude", action="append", default=[], metavar="GLOB")
    sp.add_argument("--tag", action="append", default=[], metavar="TAG")
    sp.add_argument("--host", help="hostname to record (default: this host)")
    sp.add_argument("--parent", help="snapshot to compare against (default: latest of same paths)")
    sp.add_argument("-f", "--force", action="store_true", help="read every file, ignore the parent")
    sp.add_argument("--workers", type=int, default=None, help="worker threads (default: CPU count)")

    sp = add("snapshots", cmd_snapshots, "list snapshots")
    sp.add_argument("--host")
    sp.add_argument("--tag", action="append")
    sp.add_argument("--path", action="append")
    sp.add_argument("--latest", type=int, default=0, metavar="N", help="only the last N per group")

    sp = add("ls", cmd_ls, "list files in a snapshot")
    sp.add_argument("snapshot")
    sp.add_argument("path", nargs="?")
    sp.add_argument("-l", "--long", action="store_true")
    sp.add_argument("--recursive", action="store_true", help="list below PATH recursively")

    sp = add("diff", cmd_diff, "show what changed between two snapshots")
    sp.add_argument("a")
    sp.add_argument("b")

    sp = add("restore", cmd_restore, "restore a snapshot")
    sp.add_argument("snapshot")
    sp.add_argument("-t", "--target", required=True,
                    help="a local directory, or a URL (sftp://, ftp://, s3://, mysql://, ...)")
    sp.add_argument("-i", "--include", action="append", metavar="PATH")
    sp.add_argument("--overwrite", action="store_true", help="allow a non-empty target")
    sp.add_argument("--sparse", action="store_true",
                    help="leave runs of zeros as holes, so files such as disk images take "
                         "only the space their data needs (a local target's file system "
                         "must support holes)")
    sp.add_argument("--host", help="with 'latest': the latest snapshot of this host")
    sp.add_argument("--workers", type=int, default=None)

    sp = add("dump", cmd_dump, "write one file of a snapshot to stdout")
    sp.add_argument("snapshot")
    sp.add_argument("path", help="the file's path inside the snapshot")
    sp.add_argument("--host", help="with 'latest': the latest snapshot of this host")

    sp = add("check", cmd_check, "verify the repository")
    sp.add_argument("--read-data", action="store_true", help="also download and verify all data")
    sp.add_argument("--all-destinations", action="store_true",
                    help="compare every copy object by object (implied by several -r)")

    sp = add("sync", cmd_sync, "catch up destinations that missed writes, from the others")

    sp = add("forget", cmd_forget, "remove snapshots by id or by retention policy")
    sp.add_argument("snapshot_ids", nargs="*", metavar="ID")
    for unit in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        sp.add_argument(f"--keep-{unit}", type=int, default=0, metavar="N")
    sp.add_argument("--keep-within", metavar="DURATION", help="e.g. 7d, 2w, 1y2m")
    sp.add_argument("--keep-tag", action="append", metavar="TAG")
    sp.add_argument("--host")
    sp.add_argument("--tag", action="append")
    sp.add_argument("--path", action="append")
    sp.add_argument("--prune", action="store_true", help="prune afterwards")
    sp.add_argument("--dry-run", "-n", action="store_true")
    sp.add_argument("--max-unused", type=float, default=10.0, metavar="PERCENT")

    sp = add("prune", cmd_prune, "delete data no snapshot references")
    sp.add_argument("--dry-run", "-n", action="store_true")
    sp.add_argument("--max-unused", type=float, default=10.0, metavar="PERCENT",
                    help="repack packs with more unused space than this (default 10)")

    sp = add("stats", cmd_stats, "show repository statistics")
    sp.add_argument("snapshot_ids", nargs="*", metavar="ID")
    sp.add_argument("--host")
    sp.add_argument("--tag", action="append")
    sp.add_argument("--path", action="append")

    sp = add("unlock", cmd_unlock, "remove stale locks")
    sp.add_argument("--remove-all", action="store_true", help="remove every lock, stale or not")

    sp = add("key", cmd_key, "manage passwords (key slots)")
    ksub = sp.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    ksub.add_parser("list", parents=[g], help="list keys")
    for name in ("add", "passwd"):
        kp = ksub.add_parser(name, parents=[g],
                             help="add a password" if name == "add" else "change this password")
        kp.add_argument("--new-password-file", help="(env MULTIBACKUP_NEW_PASSWORD)")
    kp = ksub.add_parser("remove", parents=[g], help="remove a key")
    kp.add_argument("key_id")

    sp = add("repair", cmd_repair, "repair the repository")
    rsub = sp.add_subparsers(dest="repair_command", metavar="WHAT")
    rsub.add_parser("index", parents=[g], help="rebuild the index from the pack headers")
    rp = rsub.add_parser("copies", parents=[g],
                         help="rewrite missing or damaged objects on each destination from a "
                              "verified copy (default with several -r)")
    rp.add_argument("--fast", action="store_true",
                    help="compare listings and sizes only, do not hash the data packs")

    sp = add("demo", cmd_demo, "run a self-contained demonstration")
    sp.add_argument("--dir", help="work directory (default: a new temporary directory)")

    add_migrate_parser(add)
    add_server_parser(add)
    add_plan_parser(sub, [g])

    add("version", cmd_version, "print the version")
    return p


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader has gone (poll reports an error
    on its write end), as opposed to a broken connection to a server."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    heap.tune()
    parser = build_parser()
    args = parser.parse_args(argv)
    for k, v in _DEFAULTS.items():
        if not hasattr(args, k):
            setattr(args, k, v)
    if not args.repo:
        args.repo = os.environ.get("MULTIBACKUP_REPOSITORY")
    out = Printer(json_mode=args.json, quiet=args.quiet)
    try:
        code = int(args.func(args, out))
    except MultibackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not _stdout_closed():
            print(f"error: {exc.strerror or exc}", file=sys.stderr)
            code = EXIT_FATAL
        else:
            # the reader of our output went away (``| head``): stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, what a shell reports for cat
    except OSError as exc:
        print(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}",
              file=sys.stderr)
        code = EXIT_FATAL
    except Exception as exc:  # a bug: one line, traceback only on request
        if os.environ.get("MULTIBACKUP_DEBUG"):
            traceback.print_exc()
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = EXIT_FATAL
    return finish_mirror(args, out, code, writes=args.command in _WRITERS)


if __name__ == "__main__":
    raise SystemExit(main())
