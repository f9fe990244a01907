"""``multibackup migrate SRC DST``: copy, sync or check objects between two locations.

Credentials come from the environment as for repositories. When the two sides need
different ones (two S3 accounts), ``MULTIBACKUP_SRC_<VAR>`` and ``MULTIBACKUP_DST_<VAR>``
override ``<VAR>`` for that side only, e.g. ``MULTIBACKUP_DST_AWS_ACCESS_KEY_ID``; a side
with any override of its kind takes its credentials from the overrides alone, so one
account's key is never paired with another's secret.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from multibackup.backends.base import ObjectStore
from multibackup.backends.location import Location, open_store, parse_location
from multibackup.backends.s3_multipart import S3Multipart
from multibackup.cli.output import Printer, human_bytes
from multibackup.engine.journal import Journal
from multibackup.engine.migrate import (
    CHUNK,
    MODES,
    Filters,
    MigrateOptions,
    MigrationReport,
    Migrator,
    PartsTarget,
    parse_since,
    parse_size,
)
from multibackup.engine.progress import Progress
from multibackup.errors import UsageError

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


def open_side(text: str, side: str, args: argparse.Namespace,
              ) -> tuple[ObjectStore, str, S3Multipart | None, PartsTarget | None]:
    """The store of one side (``SRC`` or ``DST``) with that side's overrides applied; its
    identity for the journal (the description plus the endpoint, since the same bucket name
    at two providers describes alike); for S3 the multipart/server-side-copy client; for
    SFTP and local disk the resumable partial-file writer."""
    endpoint = (_side_env(side, "AWS_ENDPOINT_URL") or getattr(args, "s3_endpoint", None))
    region = _side_env(side, "AWS_REGION") or getattr(args, "s3_region", None)
    location: Location = parse_location(text, s3_endpoint=endpoint, s3_region=region,
                                        s3_addressing=getattr(args, "s3_addressing", None))
    azure_endpoint = _side_env(side, "AZURE_STORAGE_ENDPOINT")
    if location.scheme == "azblob" and azure_endpoint:
        location = replace(location, endpoint=azure_endpoint.rstrip("/"))
    names = _CREDENTIAL_VARS.get(location.scheme, {})
    overrides = {key: value for var, key in names.items()
                 if (value := _side_env(side, var)) is not None}
    store = open_store(location, credentials=overrides or None)
    return _side(store, location, overrides or None)


def _side(store: ObjectStore, location: Location, credentials: Mapping[str, str] | None,
          ) -> tuple[ObjectStore, str, S3Multipart | None, PartsTarget | None]:
    identity = store.description
    if location.endpoint:
        identity += f" at {location.endpoint}"
    s3 = S3Multipart(location, credentials) if location.scheme == "s3" else None
    parts: PartsTarget | None = None
    if location.scheme in ("sftp", "fs"):
        # imported here: paramiko is only loaded when SFTP is in use
        from multibackup.backends.partial import LocalPartial, SFTPPartial
        from multibackup.backends.sftp_store import SFTPStore

        parts = (SFTPPartial(store, CHUNK) if isinstance(store, SFTPStore)
                 else LocalPartial(location.path, CHUNK))
    return store, identity, s3, parts


def _options(args: argparse.Namespace, saved: dict[str, Any] | None = None) -> MigrateOptions:
    """The command line's options over a saved migration's (``[migrations.NAME]``)."""
    saved = saved or {}

    def pick(name: str, default: Any = None) -> Any:
        value = getattr(args, name)
        if value is None or value is False:
            value = saved.get(name, default if value is None else value)
        return value

    since, min_size, max_size, bwlimit = (pick(k) for k in ("modified_since", "min_size",
                                                             "max_size", "bwlimit"))
    filters = Filters(tuple(saved.get("include", ())) + tuple(args.include),
                      tuple(saved.get("exclude", ())) + tuple(args.exclude),
                      parse_size(min_size) if min_size else None,
                      parse_size(max_size) if max_size else None,
                      parse_since(since) if since else None)
    return MigrateOptions(mode=pick("mode", "copy"), delete=pick("delete"),
                          max_delete=pick("max_delete", 100), checksum=pick("checksum"),
                          transfers=pick("transfers", 4), dry_run=args.dry_run, filters=filters,
                          server_side=(not args.no_server_side_copy
                                       and saved.get("server_side_copy", True)),
                          bwlimit=parse_size(bwlimit) if bwlimit else None)


def _open_configured(args: argparse.Namespace,
                     ) -> tuple[MigrateOptions, list[tuple[ObjectStore, str, S3Multipart | None,
                                                           PartsTarget | None]]]:
    """``migrate NAME``: the saved migration's options and both ends, opened with the
    credentials their ``[destinations.NAME]`` entries give."""
    from multibackup.config import load_config

    config = load_config(args.config)
    saved = config.migration(args.source)
    options = _options(args, saved.options)
    ends = []
    for name in (saved.source, saved.destination):
        dest = config.destination(name)
        credentials = dest.resolve_credentials() if dest.credentials else None  # read once
        store = open_store(dest.location, credentials=credentials)
        ends.append(_side(store, dest.location, credentials))
    return options, ends


def cmd_migrate(args: argparse.Namespace, out: Printer) -> int:
    if args.destination is None:
        if not args.config and not os.environ.get("MULTIBACKUP_CONFIG"):
            raise UsageError("give SRC and DST, or the name of a [migrations.NAME] entry "
                             "with --config")
        options, ends = _open_configured(args)
        (src, src_id, src_s3, _), (dst, dst_id, dst_s3, dst_parts) = ends
    else:
        options = _options(args)  # bad flags fail before any connection
        src, src_id, src_s3, _ = open_side(args.source, "SRC", args)
        dst, dst_id, dst_s3, dst_parts = open_side(args.destination, "DST", args)
    if src_id == dst_id:
        raise UsageError(f"source and destination are the same location ({src_id})")
    progress = Progress()
    journal = Journal(src_id, dst_id)
    try:
        migrator = Migrator(src, dst, options, journal=journal, progress=progress,
                            src_s3=src_s3, dst_s3=dst_s3, dst_parts=dst_parts)
        with out.progress(progress, options.mode):
            report = migrator.run()
    finally:
        journal.close()
        for store in (src, dst):
            close = getattr(store, "close", None)
            if close is not None:
                close()
    doc = report.to_json()
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
    out.emit(doc)
    _summary(out, report, doc)
    return EXIT_OK if report.ok else EXIT_FAILED


def _summary(out: Printer, report: MigrationReport, doc: dict[str, Any]) -> None:
    for r in report.results:
        if r.status in ("failed", "mismatched", "missing", "differs", "extraneous",
                        "would-copy", "would-delete", "deleted"):
            out.line(f"{r.status:<12} {r.key}" + (f": {r.reason}" if r.reason else ""))
    counts = ", ".join(f"{n} {status}" for status, n in doc["counts"].items()) or "no objects"
    rate = report.bytes_transferred / report.elapsed if report.elapsed else 0.0
    out.line(f"{report.mode}{' (dry run)' if report.dry_run else ''} {report.source} -> "
             f"{report.destination}: {counts}; {human_bytes(report.bytes_transferred)} "
             f"transferred in {report.elapsed:.1f}s ({human_bytes(rate)}/s)")
    for error in report.errors:
        out.warn(f"error: {error}")


def add_migrate_parser(add: Any) -> None:
    """Register ``migrate`` through main's ``add(name, fn, help)``."""
    sp = add("migrate", cmd_migrate, "copy, sync or check objects from one location to another "
                                     "(buckets, containers, SFTP or local folders)")
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
    sp.add_argument("--include", action="append", default=[], metavar="GLOB")
    sp.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    sp.add_argument("--min-size", metavar="SIZE", help="e.g. 100k, 10M")
    sp.add_argument("--max-size", metavar="SIZE")
    sp.add_argument("--modified-since", metavar="DATE|DURATION", help="e.g. 2024-05-01 or 7d")
    sp.add_argument("--dry-run", "-n", action="store_true", help="show what would be done")
    sp.add_argument("--report", metavar="FILE", help="write the JSON report to FILE")
