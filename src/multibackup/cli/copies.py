"""Commands about the copies of a mirrored repository: sync, check of all copies, repair.

Also the report every command on a mirror ends with: which destination failed, that it now
lags behind (recorded for the next sync), and exit code 3.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from multibackup.cli.access import open_repo
from multibackup.cli.output import Printer, human_bytes
from multibackup.engine.check import Checker
from multibackup.engine.mirrored import catch_up, clear_healed
from multibackup.engine.progress import Progress
from multibackup.engine.replicate import Replicator, Survey
from multibackup.errors import MultibackupError, UsageError
from multibackup.repository.lock import remove_stale_locks
from multibackup.repository.repository import Repository
from multibackup.store.lag import LagRecord
from multibackup.store.mirror import MirrorStore

EXIT_OK, EXIT_FATAL, EXIT_PARTIAL = 0, 1, 3


def _mirror_of(repo: Repository, command: str) -> MirrorStore:
    if not isinstance(repo.store, MirrorStore):
        raise UsageError(f"'{command}' needs several destinations: give -r once per destination")
    return repo.store


def _print_survey(out: Printer, survey: Survey, verb: str) -> None:
    for c in survey.copies:
        if not c.reachable:
            out.line(f"{c.description}: unreachable ({c.error})")
            continue
        state = "in sync" if c.in_sync else "NOT in sync"
        extra = []
        if c.copied:
            extra.append(f"{verb} {c.copied} object(s), {human_bytes(c.bytes_copied)}")
        if c.deleted:
            extra.append(f"removed {c.deleted} object(s) deleted elsewhere")
        if c.missing:
            extra.append(f"lacks {len(c.missing)} object(s)")
        if c.damaged:
            extra.append(f"{len(c.damaged)} damaged")
        if c.failed:
            extra.append(f"{len(c.failed)} could not be written")
        if c.to_delete:
            extra.append(f"holds {len(c.to_delete)} object(s) deleted on the other copies "
                         "while it was down: 'multibackup sync' removes them")
        out.line(f"{c.description}: {c.objects} objects, {human_bytes(c.bytes)}; {state}"
                 + (f" ({'; '.join(extra)})" if extra else ""))
        for key in sorted(c.missing)[:20]:
            out.line(f"  missing  {key}")
        for key, why in sorted(c.damaged.items())[:20]:
            out.line(f"  damaged  {key}: {why}")
        for key, why in sorted(c.failed.items())[:20]:
            out.line(f"  failed   {key}: {why}")
    for key, why in sorted(survey.unrecoverable.items()):
        out.problem(f"error: {key}: {why}")


def catch_up_lagging(repo: Repository, out: Printer) -> None:
    """Before a command writes to a mirror: a lagging copy is caught up first
    (:func:`~multibackup.engine.mirrored.catch_up`), and says so."""
    survey = catch_up(repo)
    for copy in survey.copies if survey is not None else []:
        if copy.copied or copy.deleted:
            out.line(f"{copy.description}: caught up first ({copy.copied} object(s) "
                     f"copied, {copy.deleted} deleted)")


def prune_refusal(missing: list[str]) -> str:
    return (f"prune needs every copy of the repository, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} down or behind: bring "
            f"{'it' if len(missing) == 1 else 'them'} back and run 'multibackup sync' first")


def _heal(args: argparse.Namespace, out: Printer, command: str, read_data: bool,
          ) -> tuple[Survey, dict[str, tuple[int, int]]]:
    """Survey every copy, then heal it; returns the survey after healing and what the
    survey found per destination (missing, damaged) before it."""
    repo = open_repo(args, cache=False, bootstrap=True)
    mirror = _mirror_of(repo, command)
    record = LagRecord(repo.config.id)
    with repo, repo.lock(command=command):
        progress = Progress()
        rep = Replicator(mirror, repo.cipher, progress=progress, exclude=record.excluder())
        with out.progress(progress, "verify" if read_data else "compare"):
            survey = rep.survey(read_data=read_data, read_metadata=command != "sync",
                                missed_deletes=record.missed_deletes())
        found = {c.description: (len(c.missing), len(c.damaged)) for c in survey.copies}
        with out.progress(progress, command):
            survey = rep.heal(survey, damaged=True, missed_deletes=record.missed_deletes())
        # a destination that failed in the middle of a command kept that command's lock
        # (it could not be removed there): gone processes' locks go now, on every copy
        for dest in mirror.live:
            try:
                removed = remove_stale_locks(dest.store, repo.cipher)
            except MultibackupError:
                continue
            if removed:
                out.line(f"{dest.description}: removed {len(removed)} stale lock(s)")
    clear_healed(record, survey)
    return survey, found


def print_affected(out: Printer, affected: dict[str, list[str]]) -> None:
    """The paths check found damaged, under each snapshot they belong to."""
    for sid, paths in affected.items():
        out.line(f"snapshot {sid[:8]} is damaged in:")
        for p in paths:
            out.line(f"  {p}")


def cmd_sync(args: argparse.Namespace, out: Printer) -> int:
    """Catch every destination up with the others (copy only what it lacks)."""
    survey, _ = _heal(args, out, "sync", read_data=False)
    out.emit(survey.to_json())
    _print_survey(out, survey, "copied")
    return EXIT_OK if survey.ok else EXIT_PARTIAL


def check_all(args: argparse.Namespace, out: Printer, repo: Repository) -> int:
    """Structure through the mirror, then every copy compared object by object."""
    mirror = _mirror_of(repo, "check --all-destinations")
    record = LagRecord(repo.config.id)
    progress = Progress()
    # Data bytes are verified per copy by the survey, which hashes every object on every
    # destination; the logical check then reads through the mirror (any intact copy
    # serves), blob by blob for the packs no copy holds intact, and names the snapshot
    # paths whose blobs are intact nowhere.
    rep = Replicator(mirror, repo.cipher, progress=progress, exclude=record.excluder())
    with out.progress(progress, "compare"):
        survey = rep.survey(read_data=args.read_data, rebuildable=args.read_data,
                            missed_deletes=record.missed_deletes())
    progress = Progress()
    salvage = [k.rsplit("/", 1)[-1] for k in survey.unrecoverable if k.startswith("data/")]
    sizes: dict[str, set[int]] = {}
    for listing in survey.listings:
        for key, info in (listing or {}).items():
            if key.startswith("data/"):
                sizes.setdefault(key.rsplit("/", 1)[-1], set()).add(info.size)
    checker = Checker(repo, read_data=False, progress=progress, salvage=salvage,
                      pack_sizes=sizes, rebuilt=survey.reassembled)
    with out.progress(progress, "check"):
        r = checker.run()
    r.packs_read = survey.packs_read  # the survey read them, copy by copy
    for w in r.warnings:
        out.warn(f"warning: {w}")
    for e in r.errors:
        out.problem(f"error: {e}")
    doc: dict[str, Any] = {"repository": r.to_json(), "copies": survey.to_json()}
    out.emit(doc)
    if not out.json:
        print_affected(out, r.affected)
        out.line(f"checked {r.snapshots} snapshots, {r.packs} packs, {r.blobs} blobs "
                 f"through {len(mirror.destinations)} destinations"
                 + (f", read {r.packs_read} packs on each copy" if args.read_data else ""))
        _print_survey(out, survey, "copied")
    problems = len(r.errors) + sum(
        len(c.missing) + len(c.damaged) + len(c.to_delete) + (not c.reachable)
        for c in survey.copies)
    problems += len(survey.unrecoverable)
    if problems:
        if not out.json:
            lost = set(survey.unrecoverable) - survey.rebuildable
            healable = sum(len(c.missing) + len(set(c.damaged) - lost) for c in survey.copies)
            healable += len(survey.rebuildable)
            # repair heals what a copy lacks or holds damaged; a copy out of reach or
            # damage in the repository's structure (errors above) it cannot
            hint = ("" if not healable else
                    "; run 'multibackup repair' to heal them from the healthy copies"
                    if not lost and not r.errors and all(c.reachable for c in survey.copies)
                    else "; 'multibackup repair' heals what the copies lack or hold damaged")
            down = [c.description for c in survey.copies if not c.reachable]
            if down:
                hint += f"; not reachable: {', '.join(down)}"
            behind = [c.description for c in survey.copies if c.to_delete]
            if behind:
                hint += f"; 'multibackup sync' removes what was deleted while {', '.join(behind)} {'was' if len(behind) == 1 else 'were'} down"
            print(f"error: check found {problems} problem(s){hint}", file=sys.stderr)
        return EXIT_FATAL
    out.line("no errors were found; all copies are equal")
    return EXIT_OK


def cmd_repair_copies(args: argparse.Namespace, out: Printer) -> int:
    """Rewrite missing or damaged objects on each destination from a verified copy."""
    survey, found = _heal(args, out, "repair", read_data=not getattr(args, "fast", False))
    out.emit({**survey.to_json(), "found": {d: {"missing": m, "damaged": x}
                                            for d, (m, x) in found.items()}})
    for desc, (m, x) in found.items():
        if m or x:
            out.line(f"{desc}: found {m} missing and {x} damaged object(s)")
    if survey.rebuilt:
        out.line(f"rebuilt {len(survey.rebuilt)} object(s) damaged on every destination from "
                 "the parts each copy held intact")
    _print_survey(out, survey, "rewrote")
    fast = getattr(args, "fast", False)
    fuller = ("a full 'multibackup repair' (without --fast) reads every copy and may rebuild "
              "damaged objects from their intact parts")
    if survey.unrecoverable:
        print(f"error: {len(survey.unrecoverable)} object(s) have no intact copy anywhere; "
              "'multibackup check' names the snapshots they affect"
              + (f"; {fuller}" if fast else ""), file=sys.stderr)
        return EXIT_FATAL
    if fast and any(c.failed for c in survey.copies):
        # --fast takes a copy of the right size for healthy: it may be damaged inside
        out.warn(f"note: --fast compares sizes only, and the copies it took for healthy did "
                 f"not verify; {fuller}")
    return EXIT_OK if survey.ok else EXIT_PARTIAL


def finish_mirror(args: argparse.Namespace, out: Printer, code: int, writes: bool) -> int:
    """After any command on a mirror: report failed destinations and record their lag.

    Only a command that writes leaves a failed destination behind; a read that could not
    reach one copy was served by another and is only noted.
    """
    mirror: MirrorStore | None = getattr(args, "mirror", None)
    if mirror is None:
        return code
    mirror.close()
    failed = mirror.failures
    if failed and not mirror.live:
        # nothing served the command and nothing is ahead of anything: the error that
        # ended it says so; only each destination's own reason is added
        for d in failed:
            reason = str(d.failed).removeprefix(f"{d.description}: ")
            out.warn(f"note: destination {d.description}: {reason}")
        return code if code != EXIT_OK else EXIT_FATAL
    if failed and not writes:
        for d in failed:
            out.warn(f"note: destination {d.description} could not be read ({d.failed}); "
                     "the other copies served the command")
        return code
    repo_id = getattr(args, "repo_id", None)
    if failed and repo_id:
        record = LagRecord(repo_id)
        record.note_run(mirror)
        record.save()
    if not failed:
        return code
    for d in failed:
        out.problem(f"warning: destination {d.description} failed and is behind the others: "
                    f"{d.failed}")
    out.warn(f"warning: the command completed on {len(mirror.live)} of "
             f"{len(mirror.destinations)} destinations; run 'multibackup sync' when "
             "the failed ones are back")
    return EXIT_PARTIAL if code == EXIT_OK else code
