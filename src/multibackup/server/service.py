"""What the API and the scheduler both do with stored settings, below any HTTP detail.

Destinations, sources, plans and migrations are stored as the tables a config file holds,
and checked by the config file's own rules (:func:`config_from_data`), so a plan made in
the dashboard and one written in TOML mean the same thing and fail the same way. Secrets
are split off before storing and sealed with the server key; :func:`build_config` puts them
back, in memory only, when a run needs them.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from multibackup.config.loader import CREDENTIAL_FORMS, SECRET, config_from_data
from multibackup.config.model import Config
from multibackup.errors import MultibackupError, UsageError
from multibackup.server import models as m
from multibackup.server.keyring import Keyring

#: keys whose values are sealed and never returned once saved
SECRET_KEYS = frozenset(k for k, form in CREDENTIAL_FORMS.items() if form == SECRET)
#: a plan's stored keys (the config file's, less the password, which is sealed)
PLAN_KEYS = ("sources", "destinations", "exclude", "tags", "host", "compression",
             "retention", "retention_per_destination", "hooks")
NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
ORIGIN = "server"


class Invalid(UsageError):
    """Input that breaks a rule; ``field`` names the offending key when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def invalid_from(exc: UsageError, section: str, name: str) -> Invalid:
    """A config-rule error as a field error: 'server: plans.web.schedule: why' → schedule."""
    text = str(exc)
    prefix = f"{ORIGIN}: {section}.{name}."
    if text.startswith(prefix):
        key, _, reason = text[len(prefix):].partition(": ")
        field = re.split(r"[.\[]", key)[0]
        return Invalid(f"{key}: {reason}" if reason else key, field)
    if text.startswith(f"{ORIGIN}: "):
        text = text[len(ORIGIN) + 2:]
    return Invalid(text)


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise Invalid(f"invalid {what} name: use 1 to 100 letters, digits, '-' and '_'", "name")
    return name


def split_secrets(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(what may be shown, what is sealed) of a destination or source table."""
    if not isinstance(config, dict):
        raise Invalid("config must be an object", "config")
    public = {k: v for k, v in config.items() if k not in SECRET_KEYS}
    secrets = {k: v for k, v in config.items() if k in SECRET_KEYS and v not in (None, "")}
    for key, value in secrets.items():
        if not isinstance(value, str):
            raise Invalid(f"{key}: expected a string", key)
    return public, secrets


def _with_secrets(public: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
    return {**public, **{k: {"value": v} for k, v in secrets.items()}}


def check_destination(name: str, public: dict[str, Any], secrets: dict[str, str]) -> Any:
    """The config-model Destination, or Invalid naming the field."""
    try:
        cfg = config_from_data({"destinations": {name: _with_secrets(public, secrets)}}, ORIGIN)
    except UsageError as exc:
        raise invalid_from(exc, "destinations", name) from None
    return cfg.destinations[name]


def check_source(name: str, public: dict[str, Any], secrets: dict[str, str]) -> Any:
    try:
        cfg = config_from_data({"sources": {name: _with_secrets(public, secrets)}}, ORIGIN)
    except UsageError as exc:
        raise invalid_from(exc, "sources", name) from None
    return cfg.sources[name]


def plan_table(plan: m.Plan, password: str | None) -> dict[str, Any]:
    """The plan as a config-file table (with its password when running)."""
    table = {k: v for k, v in (plan.config or {}).items() if k in PLAN_KEYS and v is not None}
    if plan.schedule:
        table["schedule"] = plan.schedule
    table["password"] = password if password is not None else "unused"
    return table


def _tables(db: Session, keyring: Keyring | None, org: int, model: type[Any],
            ) -> dict[str, dict[str, Any]]:
    rows = db.scalars(select(model).where(model.organisation_id == org)).all()
    out = {}
    for row in rows:
        secrets = keyring.open(row.secrets) if keyring is not None else {
            k: "unused" for k in _sealed_keys(row)}
        out[row.name] = _with_secrets(row.config or {}, secrets)
    return out


def _sealed_keys(row: Any) -> list[str]:
    return list((row.config or {}).get("__secret_keys__", []))


def check_plan(db: Session, org: int, name: str, table: dict[str, Any]) -> Any:
    """The config-model Plan for a plan table, checked against the organisation's
    destinations and sources as they are now."""
    data = {"destinations": _tables(db, None, org, m.Destination),
            "sources": _tables(db, None, org, m.Source),
            "plans": {name: table}}
    try:
        return config_from_data(_strip_markers(data), ORIGIN).plans[name]
    except UsageError as exc:
        raise invalid_from(exc, "plans", name) from None


def check_migration(db: Session, org: int, name: str, table: dict[str, Any]) -> Any:
    """The config-model Migration for a ``[migrations.NAME]`` table, checked against the
    organisation's destinations and (for FTP ends) sources."""
    data = {"destinations": _tables(db, None, org, m.Destination),
            "sources": _tables(db, None, org, m.Source),
            "migrations": {name: table}}
    try:
        return config_from_data(_strip_markers(data), ORIGIN).migrations[name]
    except UsageError as exc:
        raise invalid_from(exc, "migrations", name) from None


def build_config(db: Session, keyring: Keyring, org: int, *, plan: m.Plan | None = None,
                 migration: m.Migration | None = None) -> Config:
    """The organisation's settings as a Config, secrets unsealed, for one plan or migration."""
    data: dict[str, Any] = {"destinations": _tables(db, keyring, org, m.Destination),
                            "sources": _tables(db, keyring, org, m.Source)}
    if plan is not None:
        data["plans"] = {plan.name: plan_table(plan, keyring.open(plan.secrets).get("password"))}
    if migration is not None:
        data["migrations"] = {migration.name: {**(migration.config or {})}}
    try:
        return config_from_data(_strip_markers(data), ORIGIN)
    except UsageError as exc:
        text = str(exc).removeprefix(f"{ORIGIN}: ")
        raise UsageError(f"the saved settings no longer hold together: {text}") from None


def _strip_markers(data: dict[str, Any]) -> dict[str, Any]:
    for section in ("destinations", "sources"):
        for table in data.get(section, {}).values():
            table.pop("__secret_keys__", None)
    return data


def public_config(row: Any) -> dict[str, Any]:
    return {k: v for k, v in (row.config or {}).items() if k != "__secret_keys__"}


def store_config(row: Any, keyring: Keyring, public: dict[str, Any],
                 secrets: dict[str, str]) -> None:
    """Save a destination or source table: the shown part as JSON, secrets sealed."""
    row.config = {**public, "__secret_keys__": sorted(secrets)}
    row.secrets = keyring.seal(secrets) if secrets else None


def users_of(db: Session, org: int, kind: str, name: str) -> list[str]:
    """Plans and migrations of the organisation that name this destination or source."""
    used = []
    for plan in db.scalars(select(m.Plan).where(m.Plan.organisation_id == org)):
        cfg = plan.config or {}
        if name in (cfg.get("destinations") if kind == "destination" else cfg.get("sources")
                    ) or []:
            used.append(f"plan {plan.name!r}")
    is_destination = db.scalar(select(m.Destination.id).where(
        m.Destination.organisation_id == org, m.Destination.name == name)) is not None
    if kind == "destination" or not is_destination:  # a name is a destination first
        for mig in db.scalars(select(m.Migration).where(m.Migration.organisation_id == org)):
            if name in ((mig.config or {}).get("source"), (mig.config or {}).get("destination")):
                used.append(f"migration {mig.name!r}")
    return used


@dataclass
class Probe:
    ok: bool
    latency_ms: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "latency_ms": self.latency_ms, "error": self.error}


def _bounded(work: Any, timeout: float) -> Probe:
    """Run a connection test in a thread so a black-holed host cannot hang the request."""
    result: list[Probe] = []

    def target() -> None:
        started = time.monotonic()
        try:
            work()
        except MultibackupError as exc:
            result.append(Probe(False, error=str(exc)))
        except OSError as exc:
            result.append(Probe(False, error=" ".join(str(exc.strerror or exc).split())))
        except Exception as exc:  # a library's own error type: one line, never a trace
            result.append(Probe(False, error=" ".join(str(exc).split())[:300]
                                or type(exc).__name__))
        else:
            result.append(Probe(True, latency_ms=round((time.monotonic() - started) * 1000, 1)))

    thread = threading.Thread(target=target, daemon=True, name="probe")
    thread.start()
    thread.join(timeout)
    if not result:
        return Probe(False, error=f"no answer within {timeout:.0f} s")
    return result[0]


def probe_destination(dest: Any, timeout: float = 20.0) -> Probe:
    """Can the destination be reached and listed with these credentials?"""
    def work() -> None:
        store = dest.open_store(retries=0)
        try:
            for _ in store.list("keys/"):
                break
        finally:
            close = getattr(store, "close", None)
            if close is not None:
                close()
    return _bounded(work, timeout)


def probe_source(src: Any, timeout: float = 20.0) -> Probe:
    """Can the source be reached and its top level listed?"""
    def work() -> None:
        source = src.open()
        try:
            source.list_dir("")
        finally:
            source.close()
    return _bounded(work, timeout)
