"""Opening a repository that lives on several destinations.

The destinations of a mirror must be copies of one repository. Opening checks that before
anything is written: a destination whose config does not open with the repository's key
and that shares no key slot with the others holds another repository and is refused. A
destination that is still empty can be given the key slots and config, which makes it an
empty copy that ``sync`` then fills.
"""

from __future__ import annotations

from collections.abc import Iterable

from multibackup.backends.base import ObjectInfo, ObjectStore
from multibackup.engine.progress import Progress
from multibackup.engine.replicate import Replicator, Survey
from multibackup.errors import (
    IntegrityError,
    MultibackupError,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    UsageError,
    WrongPassword,
)
from multibackup.repository import keys
from multibackup.repository.blob import open_file
from multibackup.repository.crypto import Cipher
from multibackup.repository.repository import CONFIG, RepoConfig, Repository
from multibackup.store.lag import LagRecord
from multibackup.store.mirror import DestinationState, MirrorStore


def open_repository(store: ObjectStore, password: str,
                    cache_dir: str | None = None) -> Repository:
    """Open a repository on one store or on a mirror (checked as described above)."""
    if isinstance(store, MirrorStore):
        return open_mirrored(store, password, cache_dir)
    return Repository.open(store, password, cache_dir=cache_dir)


def open_mirrored(mirror: MirrorStore, password: str, cache_dir: str | None) -> Repository:
    """Open a mirrored repository after checking its destinations hold one repository."""
    primary: Repository | None = None
    configs: list[tuple[DestinationState, bytes]] = []
    refused: WrongPassword | None = None  # by one copy's keys: another copy's may open
    for dest in mirror.read_order():
        if dest.failed is not None:
            continue  # the probe found it unreachable
        try:
            raw = dest.store.get(CONFIG)
        except ObjectNotFound:
            continue
        except StoreError as exc:
            mirror.mark_failed(dest, exc)
            continue
        configs.append((dest, raw))
        if primary is None:
            try:
                primary = Repository.open(dest.store, password)
            except IntegrityError:
                continue  # a damaged config here; another copy may open
            except WrongPassword as exc:
                # a key missing or damaged on this copy (or a key added while it was
                # down): the password is wrong only if no copy's keys take it
                refused = exc
            except StoreError as exc:
                mirror.mark_failed(dest, exc)
    if primary is None and configs:
        # no copy opens on its own (its key slots gone, another's config damaged): the
        # mirror as a whole may, a slot from one copy and the config from another
        try:
            primary = Repository.open(mirror, password)
        except (WrongPassword, IntegrityError):
            pass
    if primary is None and refused is not None:
        raise refused
    if primary is None:
        if not configs and not mirror.live:
            raise StoreError(f"no destination is reachable; first: {mirror.destinations[0].failed}")
        if not configs:
            raise RepositoryNotFound(
                f"no repository at {mirror.description} (run 'multibackup init' first)")
        raise IntegrityError("the repository config is damaged on every destination")
    ours = {i.key for i in primary.store.list(keys.PREFIX)}
    for dest, raw in configs:
        try:
            RepoConfig.decode(open_file(primary.cipher, b"config", raw, "config"))
            continue
        except MultibackupError:
            pass
        theirs = {i.key for i in dest.store.list(keys.PREFIX)}
        if not ours & theirs:
            raise UsageError(f"{dest.description} holds a different repository than "
                             f"{primary.store.description}: the destinations of a mirror "
                             "must be copies of one repository")
    primary.close()
    return Repository(mirror, primary.master, primary.config, primary.key_id,
                      cache_dir=cache_dir)


def bootstrap_empty(mirror: MirrorStore, cipher: Cipher) -> list[str]:
    """Give destinations that hold nothing the key slots and config of the repository.

    A destination newly added to a mirrored set starts empty; with keys and config it is a
    (still empty) copy of the repository that a sync fills. Returns what was initialised.
    """
    done = []
    rep = Replicator(mirror, cipher)
    holders = [d for d in mirror.read_order() if d.failed is None]
    for dest in list(holders):
        try:
            if dest.store.exists(CONFIG) or any(True for _ in dest.store.list(keys.PREFIX)):
                continue
        except StoreError as exc:
            mirror.mark_failed(dest, exc)
            continue
        sources = [d for d in holders if d is not dest]
        slot_keys = sorted({i.key for s in sources for i in _safe_list(s, keys.PREFIX)})
        for key in slot_keys + [CONFIG]:
            dest.store.put(key, rep.fetch_verified(key, sources))
        done.append(dest.description)
    return done


def _safe_list(dest: DestinationState, prefix: str) -> list[ObjectInfo]:
    try:
        return list(dest.store.list(prefix))
    except StoreError:
        return []


def catch_up(repo: Repository, lag: LagRecord | None = None, also: Iterable[str] = (),
             progress: Progress | None = None) -> Survey | None:
    """Before writing to a mirror, catch up each destination recorded as lagging (or
    named in ``also``: just given keys and config) that is reachable: written to as it
    is, it would hold new snapshots whose older packs it missed. One still not in sync
    afterwards is left out of this run's writes (marked failed: it stays recorded as
    lagging). Returns the survey after healing, or None when nothing lagged. ``lag``:
    the record to update (saved), else the stored one."""
    mirror = repo.store
    if not isinstance(mirror, MirrorStore):
        return None
    lag = lag if lag is not None else LagRecord(repo.config.id)
    behind = set(lag.lagging) | set(also)
    if not any(d.description in behind for d in mirror.live):
        return None
    rep = Replicator(mirror, repo.cipher, progress=progress, exclude=lag.excluder())
    survey = rep.heal(rep.survey(read_metadata=False), damaged=True,
                      missed_deletes=lag.missed_deletes())
    for dest, copy in zip(mirror.destinations, survey.copies, strict=True):
        if not copy.in_sync and dest.failed is None and dest.description in behind:
            mirror.mark_failed(dest, "it lags behind the others and could not be caught up")
    clear_healed(lag, survey)
    return survey


def clear_healed(lag: LagRecord, survey: Survey) -> None:
    """After healing: the destinations now in sync lag no more, and absent-entries of
    objects no copy holds are dropped; the record is saved."""
    for copy in survey.copies:
        if copy.in_sync:
            lag.clear(copy.description)
    lag.forget_gone({k for lst in survey.listings for k in (lst or {})})
    lag.save()


def incomplete_copies(repo: Repository, lag: LagRecord | None = None) -> list[str]:
    """The destinations of a mirror that are down or lag behind: a prune computed from
    the others' snapshots would delete packs that snapshots only they hold still need
    (the catch-up would then delete them there too)."""
    if not isinstance(repo.store, MirrorStore):
        return []
    lagging = (lag if lag is not None else LagRecord(repo.config.id)).lagging
    return [d.description for d in repo.store.destinations
            if d.failed is not None or d.description in lagging]
