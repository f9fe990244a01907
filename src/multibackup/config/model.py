"""What a loaded config file holds: destinations, plans and defaults, as frozen objects.

Secrets are held only as references (:class:`SecretRef`) and read when used, so these
objects can be printed, logged and compared without exposing a key or password.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

from multibackup.backends import location as locations
from multibackup.backends.base import ObjectStore
from multibackup.backends.location import Location
from multibackup.config.schedule import Schedule
from multibackup.config.secret import ResolvedCredentials, SecretRef
from multibackup.engine.forget import Policy
from multibackup.errors import UsageError
from multibackup.sources.base import RestoreTarget, TreeSource

#: Config key for each ``Policy`` field (the same words as forget's --keep-* options).
RETENTION_KEYS = {"keep_last": "last", "keep_hourly": "hourly", "keep_daily": "daily",
                  "keep_weekly": "weekly", "keep_monthly": "monthly", "keep_yearly": "yearly",
                  "keep_within": "within", "keep_tags": "tags"}


@dataclass(frozen=True)
class Defaults:
    """``[defaults]``: settings every plan inherits unless it sets its own."""

    password: SecretRef | None = None
    cache_dir: str | None = None
    host: str | None = None


@dataclass(frozen=True)
class Destination:
    """One named place a repository lives: where (``location``) and how to log in.

    ``credentials`` maps backend credential names (``access_key_id``, ``key_file``...) to
    references; ``provider`` is the preset name when the destination was given as one.
    """

    name: str
    location: Location
    credentials: dict[str, SecretRef] = field(default_factory=dict)
    provider: str | None = None

    def describe(self) -> str:
        """The location, safe to print."""
        return self.location.describe()

    def resolve_credentials(self) -> ResolvedCredentials:
        """Read every credential now (env vars, files, commands); errors name the source only."""
        return ResolvedCredentials(
            (key, ref.resolve(f"destination {self.name!r}: {key}"))
            for key, ref in self.credentials.items())

    def open_store(self, retries: int = 4) -> ObjectStore:
        """Open this destination's store with its credentials, read at this moment.

        Without credential keys the store takes them from the environment, as on the
        command line (AWS_ACCESS_KEY_ID...); with any, only the ones given are used.
        """
        credentials = self.resolve_credentials() if self.credentials else None
        return locations.open_store(self.location, retries=retries, credentials=credentials)


@dataclass(frozen=True)
class Source:
    """A non-local source: ``[sources.NAME]``, or a URL written straight into a plan.

    ``credentials`` maps names (``password``, ``key_file``, ``access_key_id``...) to
    references, read only when the source is opened.
    """

    name: str
    url: str
    credentials: dict[str, SecretRef] = field(default_factory=dict)

    def open(self) -> TreeSource:
        """Connect now, with the credentials read at this moment."""
        from multibackup.sources.url import open_source

        return open_source(self.url, self.resolve_credentials())

    def open_target(self) -> RestoreTarget:
        """The same place as a restore target (a database server, a host, a bucket)."""
        from multibackup.sources.url import open_target

        return open_target(self.url, self.resolve_credentials())

    def resolve_credentials(self) -> ResolvedCredentials:
        """Read every credential now; errors name the source only."""
        return ResolvedCredentials((key, ref.resolve(f"source {self.name!r}: {key}"))
                                   for key, ref in self.credentials.items())


@dataclass(frozen=True)
class Hooks:
    """``[plans.NAME.hooks]``: commands run around a plan's backup, each an argv.

    ``before`` runs first; if one fails the backup does not run. ``after`` runs when the
    backup succeeded (also partly), ``failure`` when the run failed (a failed ``before``
    included), ``finally`` always, last — the place to leave maintenance mode.
    """

    before: tuple[tuple[str, ...], ...] = ()
    after: tuple[tuple[str, ...], ...] = ()
    failure: tuple[tuple[str, ...], ...] = ()
    finally_: tuple[tuple[str, ...], ...] = ()
    timeout: int = 600  # seconds per command

    def empty(self) -> bool:
        return not (self.before or self.after or self.failure or self.finally_)


@dataclass(frozen=True)
class Plan:
    """``[plans.NAME]``: what to back up, to which destinations, when, and what to keep.

    ``sources`` are local absolute paths (one snapshot for all of them); ``remote`` are the
    URL sources, each backed up into a snapshot of its own.
    ``retention`` applies to every destination; ``retention_per_destination`` holds the
    effective policy (the plan's with the destination's keys laid over it) for the
    destinations that override it. ``compression`` is used when the plan creates a
    repository. ``password_source`` is the plan's own or the one from ``[defaults]``.
    """

    name: str
    sources: list[str]
    destinations: list[str]
    exclude: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    compression: int | None = None
    schedule: Schedule | None = None
    retention: Policy | None = None
    retention_per_destination: dict[str, Policy] = field(default_factory=dict)
    password_source: SecretRef | None = None
    remote: list[Source] = field(default_factory=list)
    hooks: Hooks = field(default_factory=Hooks)

    def retention_for(self, destination: str) -> Policy | None:
        """The policy forget applies on one destination (None: keep everything)."""
        return self.retention_per_destination.get(destination, self.retention)

    def password(self) -> str:
        """The repository password, read now; never logged."""
        if self.password_source is None:
            raise UsageError(f"plan {self.name!r} has no password: set password_file, "
                             f"password_env or password_command in [plans.{self.name}] "
                             "or [defaults]")
        return self.password_source.resolve(f"plan {self.name!r}: password")


FTP_SCHEMES = ("ftp", "ftps")  # sources a migration may name as an end


@dataclass(frozen=True)
class Migration:
    """``[migrations.NAME]``: a saved ``multibackup migrate`` between two places.

    ``source`` and ``destination`` each name a ``[destinations.NAME]`` entry, or an FTP or
    FTPS ``[sources.NAME]`` entry (see :meth:`Config.migration_end`), which says where and
    how to log in; ``options`` holds the command's options under their long names
    (``max_delete``, ``include``...), already checked, so that the command line can
    override them one by one.
    """

    name: str
    source: str
    destination: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """A loaded config file; ``path`` is the file it came from."""

    path: str
    defaults: Defaults
    destinations: dict[str, Destination]
    plans: dict[str, Plan]
    sources: dict[str, Source] = field(default_factory=dict)
    migrations: dict[str, Migration] = field(default_factory=dict)

    def migration(self, name: str) -> Migration:
        """The named migration, or a one-line error suggesting the closest name."""
        return _lookup(self.migrations, name, "migration", self.path)

    def migration_end(self, name: str) -> Destination | Source:
        """What a migration's ``source`` or ``destination`` names: a destination, else an
        FTP/FTPS source (the loader has checked it is one of these)."""
        found = self.destinations.get(name)
        return found if found is not None else _lookup(self.sources, name, "source", self.path)

    def plan(self, name: str) -> Plan:
        """The named plan, or a one-line error suggesting the closest name."""
        return _lookup(self.plans, name, "plan", self.path)

    def destination(self, name: str) -> Destination:
        """The named destination, or a one-line error suggesting the closest name."""
        return _lookup(self.destinations, name, "destination", self.path)

    def destinations_of(self, plan: Plan) -> list[Destination]:
        """A plan's destinations, in the order it lists them."""
        return [self.destinations[name] for name in plan.destinations]


def _lookup(items: dict[str, Any], name: str, what: str, path: str) -> Any:
    if name in items:
        return items[name]
    raise UsageError(f"unknown {what} {name!r} in {path}{suggest(name, items)}")


def suggest(word: str, known: Any) -> str:
    """' (did you mean 'x'?)' for a near miss, else ' (known: a, b)', or '' if none known."""
    known = sorted(known)
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(known)})" if known else ""


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """A policy as the config keys that are set, e.g. ``{"keep_daily": 7}``."""
    by_field = {f: key for key, f in RETENTION_KEYS.items()}
    return {by_field[f.name]: getattr(policy, f.name) for f in fields(policy)
            if getattr(policy, f.name)}


def describe_plans(config: Config) -> list[dict[str, Any]]:
    """Every plan as plain, secret-free data, for ``plan list`` (text or JSON)."""
    out = []
    for plan in config.plans.values():
        out.append({
            "name": plan.name,
            "sources": list(plan.sources) + [
                s.url if s.name == s.url else f"{s.name} ({s.url})" for s in plan.remote],
            "hooks": {stage: [" ".join(c) for c in getattr(plan.hooks, attr)]
                      for stage, attr in (("before", "before"), ("after", "after"),
                                          ("failure", "failure"), ("finally", "finally_"))
                      if getattr(plan.hooks, attr)},
            "destinations": [{"name": d.name, "location": d.describe()}
                             for d in config.destinations_of(plan)],
            "schedule": plan.schedule.text if plan.schedule else None,
            "schedule_cron": plan.schedule.cron if plan.schedule else None,
            "retention": policy_to_dict(plan.retention) if plan.retention else None,
            "retention_per_destination": {name: policy_to_dict(p) for name, p
                                          in plan.retention_per_destination.items()},
            "exclude": list(plan.exclude),
            "tags": list(plan.tags),
            "host": plan.host,
            "compression": plan.compression,
            "password": plan.password_source.describe() if plan.password_source else None,
        })
    return out
