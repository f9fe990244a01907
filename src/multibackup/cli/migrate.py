"""``multibackup migrate SRC DST``: copy, sync or check objects between two locations.

Credentials come from the environment as for repositories. When the two sides need
different ones (two S3 accounts), ``MULTIBACKUP_SRC_<VAR>`` and ``MULTIBACKUP_DST_<VAR>``
override ``<VAR>`` for that side only, e.g. ``MULTIBACKUP_DST_AWS_ACCESS_KEY_ID``; a side
with any override of its kind takes its credentials from the overrides alone, so one
account's key is never paired with another's secret.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from multibackup.backends.location import Location, open_store, parse_location
from multibackup.cli.output import Printer, human_bytes, shown
from multibackup.engine.progress import Progress
from multibackup.errors import MultibackupError, UsageError

if TYPE_CHECKING:  # the engine and config are imported when a migration runs, not at start
    from multibackup.engine.migrate import MigrationReport
    from multibackup.plans.migration import End

#: the engine's modes (``multibackup.engine.migrate.MODES``, which checks them again)
MODES = ("copy", "sync", "check")

EXIT_OK, EXIT_FAILED = 0, 1

#: environment variable -> credential key, per store kind (what open_store reads by default)
_CREDENTIAL_VARS: dict[str, dict[str, str]] = {
    "s3": {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key",
           "AWS_SESSION_TOKEN": "session_token"},
    "azblob": {"AZURE_STORAGE_ACCOUNT": "account_name", "AZURE_STORAGE_KEY": "account_key",
               "AZURE_STORAGE_SAS_TOKEN": "sas_token"},
    "gcs": {"GOOGLE_APPLICATION_CREDENTIALS": "credential_path",
            "MULTIBACKUP_GCS_CREDENTIAL": "credential"},
    "webdav": {"MULTIBACKUP_WEBDAV_USER": "username", "MULTIBACKUP_WEBDAV_PASSWORD": "password"},
    "sftp": {"MULTIBACKUP_SFTP_PASSWORD": "password", "MULTIBACKUP_SFTP_KEY_FILE": "key_file",
             "MULTIBACKUP_SFTP_KEY_PASSPHRASE": "key_passphrase",
             "MULTIBACKUP_SFTP_KNOWN_HOSTS": "known_hosts",
             "MULTIBACKUP_SFTP_HOST_KEY_POLICY": "host_key_policy"},
}


def _side_env(side: str, name: str) -> str | None:
    return os.environ.get(f"MULTIBACKUP_{side}_{name}")


def side_location(text: str, side: str, args: argparse.Namespace) -> Location | None:
    """Where one side of ``migrate SRC DST`` is, with that side's endpoint and region
    overrides (None for an FTP server); parsing only, nothing is opened."""
    if text.lower().startswith(("ftp://", "ftps://")):
        return None
    endpoint = (_side_env(side, "AWS_ENDPOINT_URL") or getattr(args, "s3_endpoint", None))
    region = _side_env(side, "AWS_REGION") or getattr(args, "s3_region", None)
    location: Location = parse_location(text, s3_endpoint=endpoint, s3_region=region,
                                        s3_addressing=getattr(args, "s3_addressing", None),
                                        what=side, other_forms=", ftp://[user@]host/path")
    azure_endpoint = _side_env(side, "AZURE_STORAGE_ENDPOINT")
    if location.scheme == "azblob" and azure_endpoint:
        location = replace(location, endpoint=azure_endpoint.rstrip("/"))
    return location


def open_side(text: str, side: str, args: argparse.Namespace, writes: bool = True) -> End:
    """The End of one side (``SRC`` or ``DST``) of ``migrate SRC DST``, with that side's
    overrides applied (see :class:`multibackup.plans.migration.End`). The source, and a
    destination the run will not write (``writes``), are opened read-only."""
    location = side_location(text, side, args)
    if location is None:
        from multibackup.plans.migration import open_ftp_end

        password = _side_env(side, "FTP_PASSWORD") or os.environ.get("MULTIBACKUP_FTP_PASSWORD")
        ca_file = _side_env(side, "FTPS_CA_FILE")
        credentials = {k: v for k, v in (("password", password), ("ca_file", ca_file)) if v}
        return open_ftp_end(text, credentials, create=side == "DST" and writes,
                            password_from=f"$MULTIBACKUP_{side}_FTP_PASSWORD or "
                                          "$MULTIBACKUP_FTP_PASSWORD")
    names = _CREDENTIAL_VARS.get(location.scheme, {})
    overrides = {key: value for var, key in names.items()
                 if (value := _side_env(side, var)) is not None}
    from multibackup.plans.migration import check_source_exists, end_for

    if side == "SRC":
        check_source_exists(location)
    store = open_store(location, credentials=overrides or None,
                       read_only=side == "SRC" or not writes)
    return end_for(store, location, overrides or None)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's options; None (or False) where not given."""
    return {**{k: getattr(args, k) for k in ("mode", "delete", "max_delete", "checksum",
                                             "transfers", "modified_since", "min_size",
                                             "max_size", "bwlimit", "include", "exclude")},
            "server_side_copy": False if args.no_server_side_copy else None}


class _ReportFile:
    """``--report FILE``, written beside its place and renamed onto it when complete.

    Made before anything is opened or moves: a report that cannot be written is an
    error at once, not after a whole migration (and a sync's deletes) ran unrecorded;
    and a run that fails early leaves an earlier report as it was."""

    def __init__(self, path: str) -> None:
        # a symlink's target is written (the link stays); a device or pipe (/dev/stdout,
        # a FIFO) is written into, never replaced by a file
        if os.path.isdir(path):
            raise MultibackupError(f"cannot write the report {path}: it is a directory")
        self.fh: Any = None
        self.path = path
        if os.path.exists(path) and not os.path.isfile(path):
            if not os.access(path, os.W_OK):
                raise MultibackupError(f"cannot write the report {path}: not writable")
            return
        self.path = os.path.realpath(path)
        try:
            self.fh = tempfile.NamedTemporaryFile(  # noqa: SIM115
                "w", encoding="utf-8", delete=False, suffix=".tmp",
                dir=os.path.dirname(self.path), prefix=f".{os.path.basename(self.path)}.")
        except OSError as exc:
            raise MultibackupError(f"cannot write the report {path}: "
                                   f"{exc.strerror or exc}") from None

    def finish(self, report: MigrationReport) -> None:
        # written object by object: a report of millions of objects is never held whole
        if self.fh is None:
            with open(self.path, "w", encoding="utf-8") as fh:
                report.write_json(fh)
            return
        with self.fh:
            report.write_json(self.fh)
        os.replace(self.fh.name, self.path)

    def discard(self) -> None:
        if self.fh is None:
            return
        self.fh.close()
        with contextlib.suppress(OSError):
            os.unlink(self.fh.name)


def cmd_migrate(args: argparse.Namespace, out: Printer) -> int:
    from multibackup.plans.migration import check_overlap, migrate, open_saved, options_for

    if args.destination is not None:
        options = options_for(None, _overrides(args), dry_run=args.dry_run)  # bad flags
        if args.delete and options.mode != "sync":
            raise UsageError("--delete applies to --mode sync only (copy and check never "
                             "delete)")
        for text, side in ((args.source, "SRC"), (args.destination, "DST")):
            if not text.strip():
                raise UsageError(f"{side} is empty: give a path or a URL such as "
                                 "s3://bucket/prefix")
        # before either end is opened (opening a local destination creates it)
        check_overlap(side_location(args.source, "SRC", args) or args.source,
                      side_location(args.destination, "DST", args) or args.destination)
    elif not args.config and not os.environ.get("MULTIBACKUP_CONFIG"):
        raise UsageError("give SRC and DST, or the name of a [migrations.NAME] entry "
                         "with --config")
    report_file = _ReportFile(args.report) if args.report else None
    try:
        if args.destination is None:
            from multibackup.config import load_config

            options, src, dst = open_saved(load_config(args.config), args.source,
                                           _overrides(args), dry_run=args.dry_run)
        else:
            src = open_side(args.source, "SRC", args)  # fail before any connection
            try:
                dst = open_side(args.destination, "DST", args, writes=options.writes)
            except BaseException:
                src.close()
                raise
        progress = Progress()
        with out.progress(progress, options.mode):
            report = migrate(src, dst, options, progress)
    except BaseException:
        if report_file is not None:
            report_file.discard()
        raise
    try:
        if report_file is not None:
            report_file.finish(report)
        if out.json:
            report.write_json(sys.stdout)
            sys.stdout.flush()
        _summary(out, report)
        return EXIT_OK if report.ok else EXIT_FAILED
    finally:
        report.close()


def _summary(out: Printer, report: MigrationReport) -> None:
    for r in report.results_of(("failed", "mismatched", "missing", "differs", "extraneous",
                                "not-copied", "would-copy", "would-delete", "deleted")):
        out.line(f"{r.status:<12} {shown(r.key)}" + (f": {shown(r.reason)}" if r.reason else ""))
    counts = ", ".join(f"{n} {status}" for status, n in report.counts().items()) or "no objects"
    rate = report.bytes_transferred / report.elapsed if report.elapsed else 0.0
    out.line(f"{report.mode}{' (dry run)' if report.dry_run else ''} {report.source} -> "
             f"{report.destination}: {counts}; {human_bytes(report.bytes_transferred)} "
             f"transferred in {report.elapsed:.1f}s ({human_bytes(rate)}/s)")
    for error in report.errors:
        out.problem(f"error: {error}")
    for note in report.notes:
        out.warn(f"note: {note}")


def add_migrate_parser(add: Any) -> None:
    """Register ``migrate`` through main's ``add(name, fn, help)``."""
    sp = add("migrate", cmd_migrate, "copy, sync or check objects from one location to another "
                                     "(buckets, containers, SFTP, FTP or local folders)")
    sp.add_argument("source", metavar="SRC|NAME",
                    help="a location, or with --config the name of a [migrations.NAME] entry")
    sp.add_argument("destination", metavar="DST", nargs="?")
    sp.add_argument("--mode", choices=MODES, default=None,
                    help="copy new and changed objects (default); sync: also delete what the "
                         "source lacks (needs --delete); check: compare and report only")
    sp.add_argument("--delete", action="store_true", help="sync: allow deleting at DST")
    sp.add_argument("--max-delete", type=int, default=None, metavar="N",
                    help="sync: delete nothing if more than N objects would go (default 100)")
    sp.add_argument("--checksum", action="store_true",
                    help="compare contents by hash even when size and ETag/mtime agree")
    sp.add_argument("--transfers", type=int, default=None, metavar="N",
                    help="objects copied in parallel (default 4)")
    sp.add_argument("--no-server-side-copy", action="store_true",
                    help="stream through this machine even between buckets of one S3 "
                         "endpoint and account")
    sp.add_argument("--bwlimit", metavar="SIZE",
                    help="read at most SIZE bytes per second from SRC, e.g. 10M")
    sp.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="only keys that match (repeatable): a path glob like 'img/*.png', "
                         "a name glob like '*.log' (at any depth), or a folder 'logs/'")
    sp.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="leave out keys that match (repeatable; same patterns as "
                         "--include, applied after it)")
    sp.add_argument("--min-size", metavar="SIZE", help="e.g. 100k, 10M")
    sp.add_argument("--max-size", metavar="SIZE")
    sp.add_argument("--modified-since", metavar="DATE|DURATION", help="e.g. 2024-05-01 or 7d")
    sp.add_argument("--dry-run", "-n", action="store_true", help="show what would be done")
    sp.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
