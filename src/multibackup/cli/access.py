"""How the CLI reaches a repository: password, store (one destination or a mirror), open.

Several ``-r`` options name one repository mirrored on several destinations. Opening it
checks that the destinations really are copies of one repository (a destination holding
another repository is refused, never written to), and write commands give a destination
that is still empty the repository's key slots and config, so it can be caught up.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from multibackup.backends import open_store, parse_location
from multibackup.backends.base import ObjectStore
from multibackup.backends.location import Location
from multibackup.engine.mirrored import bootstrap_empty, open_repository
from multibackup.errors import (
    RepositoryNotFound,
    StoreError,
    UsageError,
)
from multibackup.repository.cache import default_cache_dir
from multibackup.repository.repository import Repository
from multibackup.store.lag import LagRecord
from multibackup.store.mirror import MirrorStore, UnavailableStore


def _read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from None


def get_password(args: argparse.Namespace, confirm: bool = False) -> str:
    """Password from MULTIBACKUP_PASSWORD, --password-file, or a terminal prompt."""
    if args.password_file:
        return _read_secret_file(args.password_file, "password")
    env = os.environ.get("MULTIBACKUP_PASSWORD")
    if env:
        return env
    path = os.environ.get("MULTIBACKUP_PASSWORD_FILE")
    if path:
        return _read_secret_file(path, "password")
    return _prompt("enter password for repository: ", confirm)


def _prompt(text: str, confirm: bool) -> str:
    if not sys.stdin.isatty():
        raise UsageError("no password given: set MULTIBACKUP_PASSWORD, use --password-file, "
                         "or run in a terminal")
    pw = getpass.getpass(text)
    if confirm and getpass.getpass("enter password again: ") != pw:
        raise UsageError("passwords do not match")
    return pw


def get_new_password(args: argparse.Namespace) -> str:
    if args.new_password_file:
        return _read_secret_file(args.new_password_file, "new password")
    env = os.environ.get("MULTIBACKUP_NEW_PASSWORD")
    if env:
        return env
    return _prompt("enter new password: ", True)


def repo_locations(args: argparse.Namespace) -> list[str]:
    repos = args.repo or []
    if isinstance(repos, str):
        repos = [repos]
    if not repos and os.environ.get("MULTIBACKUP_REPOSITORY"):
        repos = [os.environ["MULTIBACKUP_REPOSITORY"]]
    return repos or [""]


def _open(location: Location, create: bool) -> ObjectStore:
    """Open one store; a local directory that does not exist is made only by a command
    that sets up or fills a repository (``create``). Elsewhere opening would create it
    (OpenDAL makes a missing root), and an unmounted disk's mount point would quietly
    turn into a repository on the wrong disk."""
    if location.scheme == "fs":
        if os.path.lexists(location.path) and not os.path.isdir(location.path):
            raise StoreError(f"{location.describe()}: not a directory")
        if not create and not os.path.isdir(location.path):
            raise RepositoryNotFound(f"no repository at {location.describe()} (the directory "
                                     "does not exist)")
    return open_store(location)


def get_store(args: argparse.Namespace, create: bool = False) -> ObjectStore:
    """One store, or a mirror when ``-r`` is given several times (``create``: see
    :func:`_open`)."""
    locations = [parse_location(r, s3_endpoint=args.s3_endpoint, s3_region=args.s3_region,
                                s3_addressing=args.s3_addressing)
                 for r in repo_locations(args)]
    if len(locations) == 1:
        return _open(locations[0], create)
    stores: list[ObjectStore] = []
    missing = 0
    # folders a write command is about to make: a new copy there may be a typo or an
    # unmounted disk, so the note that it was filled says so
    args.made_folders = {loc.describe() for loc in locations
                         if create and loc.scheme == "fs" and not os.path.lexists(loc.path)}
    for loc in locations:
        try:
            stores.append(_open(loc, create))
        except (StoreError, RepositoryNotFound) as exc:  # the others go on; this one failed
            stores.append(UnavailableStore(loc.describe(), StoreError(str(exc))))
            missing += isinstance(exc, RepositoryNotFound)
    if missing == len(locations):  # as for one such directory: exit code 10, not 1
        raise RepositoryNotFound(f"no repository at {', '.join(s.description for s in stores)} "
                                 "(none of the directories exists)")
    mirror = MirrorStore(stores)
    args.mirror = mirror  # the front-end reports per-destination status after the command
    return mirror


def open_repo(args: argparse.Namespace, cache: bool = True,
              bootstrap: bool = False) -> Repository:
    """Open the repository; remote ones get the local cache unless --no-cache.
    ``bootstrap``: a command that writes, and fills an empty or new destination of a
    mirror with the repository's keys and config."""
    # only a mirror's write commands fill a missing or empty destination; one repository
    # that is not there is an error, and its directory is not made (init makes it)
    store = get_store(args, create=bootstrap and len(repo_locations(args)) > 1)
    cache_dir = None
    if cache and not store.is_local and not args.no_cache:
        cache_dir = args.cache_dir or default_cache_dir()
    password = get_password(args)
    repo = open_repository(store, password, cache_dir)
    if isinstance(store, MirrorStore):
        store.hidden = LagRecord(repo.config.id).deleted()
    if isinstance(store, MirrorStore) and bootstrap:
        for desc in bootstrap_empty(store, repo.cipher):
            state = ("did not exist and was made (check the path, or whether a disk is "
                     "mounted there)" if desc in getattr(args, "made_folders", ())
                     else "was empty")
            print(f"note: {desc} {state}: it now holds the repository's keys and "
                  "config, and gets the rest by 'multibackup sync'", file=sys.stderr)
    args.repo_id = repo.config.id
    return repo
