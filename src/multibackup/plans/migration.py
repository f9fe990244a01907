"""One run of a saved migration (``[migrations.NAME]``), shared by the CLI and the server.

``multibackup migrate --config FILE NAME`` and the server's migrate jobs both take the
saved entry's options (the command line may override them one by one), open both ends with
the credentials their ``[destinations.NAME]`` entries give, and copy with a journal so an
interrupted run resumes. The ad-hoc ``migrate SRC DST`` form opens its ends itself and
goes through :func:`migrate` like the rest. An end is a ``[destinations.NAME]`` entry or
an FTP/FTPS ``[sources.NAME]`` entry.
"""

from __future__ import annotations

import os
import posixpath
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from multibackup.backends.base import ObjectStore
from multibackup.backends.location import Location, open_store
from multibackup.backends.s3_multipart import S3Multipart
from multibackup.backends.s3_objects import S3Objects
from multibackup.config.model import Config, Destination, Source
from multibackup.engine.journal import Journal
from multibackup.engine.migrate import (
    CHUNK,
    Filters,
    MigrateOptions,
    MigrationReport,
    Migrator,
    PartsTarget,
    Side,
    parse_since,
    parse_size,
)
from multibackup.engine.progress import Progress
from multibackup.errors import MultibackupError, UsageError


@dataclass
class End(Side):
    """One opened side of a migration, with ``identity``, which keys the journal (the
    description plus the endpoint, since the same bucket name at two providers describes
    alike)."""

    identity: str = ""
    #: where it is, for the overlap check (None: an FTP end)
    location: Location | None = None

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def end_for(store: ObjectStore, location: Location,
            credentials: Mapping[str, str] | None) -> End:
    """The End of an opened store at ``location`` (opened with ``credentials``)."""
    identity = store.description
    if location.endpoint:
        identity += f" at {location.endpoint}"
    s3 = objects = None
    if location.scheme == "s3":
        s3, objects = S3Multipart(location, credentials), S3Objects(location, credentials)
    parts: PartsTarget | None = None
    if location.scheme == "azblob":
        from multibackup.backends.azure_blocks import AzureBlocks

        parts = AzureBlocks(location, credentials)
    elif location.scheme == "gcs":
        from multibackup.backends.gcs_resumable import GcsResumable

        parts = GcsResumable(location, CHUNK, credentials)
    elif location.scheme == "webdav":
        from multibackup.backends.webdav_store import WebDAVPartial, WebDAVStore

        if isinstance(store, WebDAVStore):  # used where the server takes ranged PUTs
            parts = WebDAVPartial(store, CHUNK)
    elif location.scheme in ("sftp", "fs"):
        # imported here: paramiko is only loaded when SFTP is in use
        from multibackup.backends.partial import LocalPartial, SFTPPartial
        from multibackup.backends.sftp_store import SFTPStore

        parts = (SFTPPartial(store, CHUNK) if isinstance(store, SFTPStore)
                 else LocalPartial(location.path, CHUNK))
    return End(store, s3=s3, objects=objects, parts=parts, identity=identity,
               location=location)


def check_source_exists(location: Location) -> None:
    """A local source directory must exist: opening it would create it, and an empty
    source would make a sync delete everything at the destination."""
    if location.scheme == "fs" and not os.path.isdir(location.path):
        what = "is not a directory" if os.path.exists(location.path) else "does not exist"
        raise MultibackupError(f"source {location.path} {what}")


def _within(inner: str, outer: str) -> bool:
    inner, outer = inner.strip("/"), outer.strip("/")
    return not outer or inner == outer or inner.startswith(outer + "/")


def _addresses(host: str) -> frozenset[str]:
    """A server's name and addresses: ``localhost`` and ``127.0.0.1`` are one server."""
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        found = set()
    return frozenset(found | {host.lower()})


def _url_server(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"//{url}")
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, default_port)
    return (parts.hostname or "").lower(), port


def _place(end: Location | str) -> tuple[str, str, str, int, str, str]:
    """(kind, container, host, port, user, path) of a migration end, path normalised as
    a server resolves it (``a//b/../c`` is ``a/c``). ``user`` matters for FTP only, whose
    paths start at each login's own directory."""
    if isinstance(end, str):  # an FTP/FTPS URL
        host, port = _url_server(end, 21)
        parts = urlsplit(end)
        return "ftp", "", host, port, parts.username or "", _normal(unquote(parts.path))
    if end.scheme == "sftp":
        host, port = end.endpoint.lower(), int(end.options.get("port") or 22)
    else:
        host, port = _url_server(end.endpoint, 443) if end.endpoint else ("", 0)
    return end.scheme, end.bucket, host, port, "", _normal(end.path)


def _normal(path: str) -> str:
    return posixpath.normpath("/" + path).strip("/")


def check_overlap(a: Location | str | None, b: Location | str | None) -> None:
    """Refuse a source ``a`` and destination ``b`` that are one place, or where one lies
    inside the other: a sync would delete the source as extraneous, a copy would nest
    itself deeper every run. Locations (or FTP URLs) only: called before either end is
    opened. Two names of one server, and paths spelt differently, are one place."""
    if a is None or b is None:
        return
    if isinstance(a, Location) and isinstance(b, Location) and a.scheme == b.scheme == "fs":
        pa, pb = os.path.realpath(a.path), os.path.realpath(b.path)
    elif isinstance(a, Location) and a.scheme in ("fs", "memory") or \
            isinstance(b, Location) and b.scheme in ("fs", "memory"):
        return
    else:
        ka, kb = _place(a), _place(b)
        if ka[:2] != kb[:2] or ka[3:5] != kb[3:5]:
            return  # another service, bucket, port or FTP login
        if ka[2] != kb[2] and not (_addresses(ka[2]) & _addresses(kb[2])):
            return
        pa, pb = ka[5], kb[5]
    if pa.strip("/") == pb.strip("/"):
        raise UsageError(f"source and destination are the same location ({_describe(a)})")
    if _within(pa, pb) or _within(pb, pa):
        inner, outer = (a, b) if _within(pa, pb) else (b, a)
        raise UsageError(f"source and destination overlap: {_describe(inner)} lies "
                         f"within {_describe(outer)}")


def _describe(end: Location | str) -> str:
    """An end as the user wrote it, without a password an FTP URL may hold."""
    if isinstance(end, Location):
        return end.describe()
    parts = urlsplit(end)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname}{port}{parts.path}"


def open_ftp_end(url: str, credentials: Mapping[str, str] | None, *,
                 create: bool = False, password_from: str | None = None) -> End:
    """An ``ftp://`` or ``ftps://`` directory as a migration end, logged in and listed
    (``create``: a destination, whose directory is made if need be)."""
    from multibackup.backends.ftp_store import FTPPartial, open_ftp_store

    store = open_ftp_store(url, credentials, create=create, password_from=password_from)
    return End(store, parts=FTPPartial(store, CHUNK),  # type: ignore[arg-type]
               identity=store.description)


def open_end(entry: Destination | Source, *, source: bool, writes: bool = True) -> End:
    """A named destination, or an FTP/FTPS source entry, as a migration end, with its
    configured credentials. ``source``: the end read from, which must exist and is only
    read; a destination the run will not write (check, dry run) is opened read-only too,
    and is not made if missing."""
    credentials = entry.resolve_credentials() if entry.credentials else None  # read once
    if isinstance(entry, Source):
        return open_ftp_end(entry.url, credentials, create=not source and writes)
    if source:
        check_source_exists(entry.location)
    store = open_store(entry.location, credentials=credentials,
                       read_only=source or not writes)
    return end_for(store, entry.location, credentials)


def options_for(saved: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None,
                *, dry_run: bool = False) -> MigrateOptions:
    """Migrate options: ``overrides`` (the command line's, None/False meaning not given)
    over a saved migration's options; include/exclude patterns add up."""
    saved = saved or {}
    given = overrides or {}

    def pick(name: str, default: Any = None) -> Any:
        value = given.get(name)
        if value is None or value is False:
            value = saved.get(name, default if value is None else value)
        return value

    since, min_size, max_size, bwlimit = (pick(k) for k in ("modified_since", "min_size",
                                                             "max_size", "bwlimit"))
    filters = Filters(tuple(saved.get("include", ())) + tuple(given.get("include") or ()),
                      tuple(saved.get("exclude", ())) + tuple(given.get("exclude") or ()),
                      parse_size(min_size) if min_size else None,
                      parse_size(max_size) if max_size else None,
                      parse_since(since) if since else None)
    return MigrateOptions(mode=pick("mode", "copy"), delete=pick("delete"),
                          max_delete=pick("max_delete", 100), checksum=pick("checksum"),
                          transfers=pick("transfers", 4), dry_run=dry_run, filters=filters,
                          server_side=(given.get("server_side_copy") is not False
                                       and saved.get("server_side_copy", True)),
                          bwlimit=parse_size(bwlimit) if bwlimit else None)


def open_saved(config: Config, name: str, overrides: Mapping[str, Any] | None = None, *,
               dry_run: bool = False) -> tuple[MigrateOptions, End, End]:
    """A saved migration's options (bad ones fail before any connection) and both ends."""
    saved = config.migration(name)
    options = options_for(saved.options, overrides, dry_run=dry_run)
    src_entry, dst_entry = (config.migration_end(saved.source),
                            config.migration_end(saved.destination))
    # before either is opened; an FTP source entry is its URL
    check_overlap(getattr(src_entry, "location", None) or getattr(src_entry, "url", None),
                  getattr(dst_entry, "location", None) or getattr(dst_entry, "url", None))
    src = open_end(src_entry, source=True)
    try:
        dst = open_end(dst_entry, source=False, writes=options.writes)
    except BaseException:
        src.close()
        raise
    return options, src, dst


def migrate(src: End, dst: End, options: MigrateOptions,
            progress: Progress | None = None) -> MigrationReport:
    """Run one migration between two opened ends, journalled; closes both ends."""
    try:
        if src.identity == dst.identity:
            raise UsageError(f"source and destination are the same location ({src.identity})")
        check_overlap(src.location, dst.location)
        journal = Journal(src.identity, dst.identity)
        try:
            migrator = Migrator(src, dst, options, journal=journal, progress=progress)
            return migrator.run()
        finally:
            journal.close()
    finally:
        src.close()
        dst.close()


def run_migration(config: Config, name: str, progress: Progress, *,
                  dry_run: bool = False) -> MigrationReport:
    """Run the saved migration ``name`` of ``config`` once, with its own options."""
    options, src, dst = open_saved(config, name, dry_run=dry_run)
    return migrate(src, dst, options, progress)
