"""Load and check a config file; every mistake is one line: ``file:line: key: reason``.

The whole file is checked when it is loaded (names, types, locations, schedules, retention,
references between plans and destinations), so a typo is reported before any backup runs,
at the line to fix. Secrets are never read here: only where they come from is recorded.
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
from dataclasses import asdict, replace
from typing import Any
from urllib.parse import urlsplit

from multibackup.backends.location import CREDENTIAL_KEYS as BACKEND_CREDENTIALS
from multibackup.backends.location import Location, parse_location
from multibackup.backends.providers import provider_location
from multibackup.config.locator import KeyLocator, KeyPath
from multibackup.config.model import (
    FTP_SCHEMES,
    RETENTION_KEYS,
    Config,
    Defaults,
    Destination,
    Hooks,
    Migration,
    Plan,
    Source,
    suggest,
)
from multibackup.config.schedule import ScheduleError, parse_schedule
from multibackup.config.secret import SecretRef
from multibackup.engine.forget import Policy, parse_duration
from multibackup.errors import UsageError
from multibackup.sources.url import MODULES as SOURCE_MODULES
from multibackup.sources.url import scheme_of

CONFIG_ENV = "MULTIBACKUP_CONFIG"
SYSTEM_CONFIG = "/etc/multibackup/config.toml"

_PASSWORD_KEYS = ("password_file", "password_env", "password_command")
_DEFAULTS_KEYS = (*_PASSWORD_KEYS, "cache_dir", "host")
_PLAN_KEYS = ("sources", "destinations", "exclude", "tags", "host", "compression", "schedule",
              "retention", "retention_per_destination", "hooks", *_PASSWORD_KEYS)
_MIGRATION_KEYS = ("source", "destination", "mode", "delete", "max_delete", "checksum",
                   "transfers", "include", "exclude", "min_size", "max_size",
                   "modified_since", "bwlimit", "server_side_copy")
_HOOK_KEYS = ("before", "after", "failure", "finally", "timeout")
_PLACE_KEYS = ("location", "region", "endpoint", "addressing")

# How each credential may be written: SECRET only as a reference, ID as a string or a
# reference, PATH as a string (a file the backend opens itself). Which kind of store takes
# which credential is the backends' CREDENTIAL_KEYS; a key added there and not listed here
# counts as SECRET until it is.
SECRET, ID, PATH = "secret", "id", "path"
CREDENTIAL_FORMS = {
    "access_key_id": ID, "secret_access_key": SECRET, "session_token": SECRET,  # S3
    "account_name": ID, "account_key": SECRET, "sas_token": SECRET,  # Azure
    "credential": SECRET, "credential_path": PATH,  # GCS
    "username": ID, "password": SECRET,  # WebDAV, SFTP
    "key_file": PATH, "key_passphrase": SECRET, "known_hosts": PATH,  # SFTP
    "host_key_policy": ID,
    "ca_file": PATH,  # FTPS sources
    "tls_ca_file": PATH, "tls_cert_file": PATH, "tls_key_file": PATH,  # Redis sources
}
_CREDENTIALS = tuple(sorted({k for keys in BACKEND_CREDENTIALS.values() for k in keys}))
# Keys besides location and credentials that each kind of location takes.
_PLACE_BY_SCHEME = {"s3": ("region", "endpoint", "addressing"), "azblob": ("endpoint",),
                    "gcs": ("endpoint",)}
_PROVIDER_KEYS = ("provider", "bucket", "prefix", "region", "endpoint", "addressing",
                  "account_id", *sorted(BACKEND_CREDENTIALS["s3"]))
_KIND_NAMES = {"fs": "local paths", "memory": "memory locations", "s3": "S3 locations",
               "azblob": "Azure locations", "gcs": "GCS locations",
               "webdav": "WebDAV locations", "sftp": "SFTP locations"}
_DESTINATION_KEYS = tuple(dict.fromkeys((*_PLACE_KEYS, *_PROVIDER_KEYS, *_CREDENTIALS)))
# [sources.NAME]: a URL and whatever credentials its kind takes (database and FTP passwords,
# SSH keys, a bucket's cloud keys).
_SOURCE_KEYS = ("url", *sorted(CREDENTIAL_FORMS))

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USE_REF = 'write it as { env = "VARIABLE" } or { file = "/path" }, not in the config itself'


def find_config() -> str:
    """The config file to use: $MULTIBACKUP_CONFIG, else the user's, else the system's."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    user = os.path.join(base, "multibackup", "config.toml")
    for candidate in (user, SYSTEM_CONFIG):
        if os.path.exists(candidate):
            return candidate
    raise UsageError(f"no config file: give --config, set {CONFIG_ENV}, or create {user} "
                     f"or {SYSTEM_CONFIG}")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and check a config file (default: :func:`find_config`); raises UsageError."""
    file = find_config() if path is None else os.fspath(path)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{file}:{line}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(file, text, exc) from None
    return _Reader(file, KeyLocator(text)).config(data)


def config_from_data(data: dict[str, Any], origin: str = "server") -> Config:
    """Check config tables given as data (the server's stored rows) by the file's rules.

    Every mistake is one line, ``origin: key: reason``. Secrets may be given as
    ``{"value": "..."}`` (the server decrypts them only to run), and a plan's repository
    password as its ``password`` key, a string.
    """
    return _DataReader(origin).config(data)


def _syntax_error(file: str, text: str, exc: tomllib.TOMLDecodeError) -> UsageError:
    """tomllib's "Reason (at line L, column C)" in the file:line: key: shape."""
    message = str(exc)
    m = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if m:
        line = int(m.group(1))
        reason = f"{message[:m.start()]} (column {m.group(2)})"
    elif message.endswith(" (at end of document)"):
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        reason = message[:-len(" (at end of document)")] + " at the end of the file"
    else:
        line, reason = 1, message
    # tomllib names tables as tuples, "('plans', 'web')": show them as written in the file
    reason = re.sub(r"\(((?:'[^']*', )*'[^']*'),?\)",
                    lambda m: _dotted(tuple(ast.literal_eval(f"[{m.group(1)}]"))), reason)
    key = _key_on_line(text, line)
    where = f"{key}: " if key else ""
    return UsageError(f"{file}:{line}: {where}invalid TOML: {reason[:1].lower()}{reason[1:]}")


def _key_on_line(text: str, line: int) -> str:
    """Best guess at the key written on a line of a file that does not parse."""
    table = ""
    for n, row in enumerate(text.splitlines()[:line], start=1):
        header = re.match(r"\s*\[\[?\s*([^\]#]+?)\s*\]", row)
        if header:
            table = header.group(1)
            if n == line:
                return table
            continue
        if n == line:
            key = re.match(r"\s*([A-Za-z0-9_\-.\"' ]+?)\s*=", row)
            if key:
                return f"{table}.{key.group(1)}" if table else key.group(1)
    return table


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _NAME.match(part) else '"' + part.replace('"', '\\"') + '"'
            out += f".{name}" if out else name
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


class _Reader:
    """Checks the parsed data against the schema, with the locator for line numbers."""

    def __init__(self, file: str, locator: KeyLocator) -> None:
        self.file = file
        self.locator = locator

    def error(self, path: KeyPath, message: str, at: KeyPath | None = None) -> UsageError:
        line = self.locator.line_of(at or path)
        return UsageError(f"{self.file}:{line}: {_dotted(path)}: {message}")

    # ---- typed access --------------------------------------------------------------

    def table(self, value: Any, path: KeyPath, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a table, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                raise self.error((*path, key), "unknown key" + suggest(key, allowed))
        return value

    def names(self, value: Any, path: KeyPath, what: str) -> dict[str, Any]:
        """A table of named tables ([destinations.NAME], [plans.NAME])."""
        if not isinstance(value, dict):
            raise self.error(path, f"expected a table of {what}s, got {_kind(value)}")
        for name, item in value.items():
            if not _NAME.match(name):
                raise self.error((*path, name), f"invalid {what} name: use letters, digits, "
                                                "'-' and '_'")
            if not isinstance(item, dict):
                raise self.error((*path, name), f"expected a table, got {_kind(item)}")
        return value

    def string(self, table: dict[str, Any], path: KeyPath, key: str,
               required: bool = False) -> str | None:
        if key not in table:
            if required:
                raise self.error((*path, key), "missing (required)", at=path)
            return None
        value = table[key]
        if not isinstance(value, str):
            raise self.error((*path, key), f"expected a string, got {_kind(value)}")
        if not value.strip():
            raise self.error((*path, key), "must not be empty")
        return value

    def strings(self, table: dict[str, Any], path: KeyPath, key: str,
                required: bool = False) -> list[str]:
        if key not in table:
            if required:
                raise self.error((*path, key), "missing (required)", at=path)
            return []
        value = table[key]
        if not isinstance(value, list):
            raise self.error((*path, key), f"expected an array of strings, got {_kind(value)}")
        if required and not value:
            raise self.error((*path, key), "must not be empty")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error((*path, key, i), f"expected a string, got {_kind(item)}")
            if not item.strip():
                raise self.error((*path, key, i), "must not be empty")
        return list(value)

    def integer(self, table: dict[str, Any], path: KeyPath, key: str, lo: int,
                hi: int | None = None) -> int | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error((*path, key), f"expected an integer, got {_kind(value)}")
        if value < lo or (hi is not None and value > hi):
            bound = f"from {lo} to {hi}" if hi is not None else f"{lo} or more"
            raise self.error((*path, key), f"{value} is out of range: use {bound}")
        return value

    def path_value(self, table: dict[str, Any], path: KeyPath, key: str,
                   echo: bool = True) -> str | None:
        """A local path: ~ expanded, and absolute, since the working directory varies.

        ``echo=False`` keeps the text out of the error: someone may have written the
        password itself where its file belongs.
        """
        text = self.string(table, path, key)
        if text is None:
            return None
        expanded = os.path.expanduser(text)
        if not os.path.isabs(expanded):
            raise self.error((*path, key), f"{text!r} is not an absolute path" if echo
                             else "must be an absolute path")
        return expanded

    def argv(self, value: Any, path: KeyPath) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(path, "expected an array: the program and its arguments "
                                   "(run without a shell)")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error((*path, i), "expected a non-empty string")
        return tuple(value)

    def reference(self, value: Any, path: KeyPath, how: str) -> SecretRef:
        """A credential: a { env | file | command } table, or a plain string unless SECRET."""
        if isinstance(value, str):
            if how == SECRET:
                raise self.error(path, f"secrets must not be written in the config: {_USE_REF}")
            if not value.strip():
                raise self.error(path, "must not be empty")
            if how == PATH:
                key = str(path[-1])
                return SecretRef("value", self.path_value({key: value}, path[:-1], key) or "")
            return SecretRef("value", value)
        if how == PATH:
            raise self.error(path, f"expected a path (a string), got {_kind(value)}")
        if not isinstance(value, dict):
            raise self.error(path, f"expected {{ env = \"VARIABLE\" }} or {{ file = \"/path\" }}, "
                                   f"got {_kind(value)}")
        self.table(value, path, ("env", "file", "command"))
        if len(value) != 1:
            raise self.error(path, "give exactly one of env, file or command")
        kind, source = next(iter(value.items()))
        if kind == "command":
            return SecretRef("command", self.argv(source, (*path, kind)))
        if kind == "env":
            return SecretRef("env", self.env_name(value, path, "env"))
        return SecretRef("file", self.path_value(value, path, "file", echo=False) or "")

    def env_name(self, table: dict[str, Any], path: KeyPath, key: str) -> str:
        name = self.string(table, path, key) or ""
        if not _ENV_NAME.match(name):  # not echoed: it may be the secret written by mistake
            raise self.error((*path, key), "not an environment variable name (letters, "
                                           "digits and '_'; the value itself never goes here)")
        return name

    def password(self, table: dict[str, Any], path: KeyPath) -> SecretRef | None:
        given = [k for k in _PASSWORD_KEYS if k in table]
        if len(given) > 1:
            raise self.error((*path, given[1]), f"give only one of {', '.join(given)}")
        if not given:
            return None
        key = given[0]
        if key == "password_command":
            return SecretRef("command", self.argv(table[key], (*path, key)))
        if key == "password_env":
            return SecretRef("env", self.env_name(table, path, key))
        return SecretRef("file", self.path_value(table, path, key, echo=False) or "")

    # ---- sections ------------------------------------------------------------------

    def config(self, data: dict[str, Any]) -> Config:
        self.table(data, (), ("defaults", "destinations", "sources", "plans", "migrations"))
        defaults = self.defaults(data.get("defaults", {}))
        raw_destinations = self.names(data.get("destinations", {}), ("destinations",),
                                      "destination")
        destinations = {name: self.destination(name, table)
                        for name, table in raw_destinations.items()}
        raw_sources = self.names(data.get("sources", {}), ("sources",), "source")
        sources = {name: self.source(name, table) for name, table in raw_sources.items()}
        raw_plans = self.names(data.get("plans", {}), ("plans",), "plan")
        plans = {name: self.plan(name, table, defaults, destinations, sources)
                 for name, table in raw_plans.items()}
        raw_migrations = self.names(data.get("migrations", {}), ("migrations",), "migration")
        migrations = {name: self.migration(name, table, destinations, sources)
                      for name, table in raw_migrations.items()}
        return Config(self.file, defaults, destinations, plans, sources, migrations)

    def migration(self, name: str, table: dict[str, Any], destinations: dict[str, Destination],
                  sources: dict[str, Source]) -> Migration:
        """``[migrations.NAME]``: two ends and ``migrate``'s options. An end names a
        destination, or an FTP/FTPS source (FTP can hold no repository, so it is no
        destination kind, yet it is where many sites live and where some must go)."""
        from multibackup.engine.migrate import MODES, parse_since, parse_size

        path: KeyPath = ("migrations", name)
        self.table(table, path, _MIGRATION_KEYS)
        ends = []
        for key in ("source", "destination"):
            target = self.string(table, path, key, required=True) or ""
            if target not in destinations:
                other = sources.get(target)
                if other is None:
                    raise self.error((*path, key), f"unknown destination {target!r}"
                                     + suggest(target, destinations))
                kind = scheme_of(other.url)
                if kind not in FTP_SCHEMES:
                    raise self.error((*path, key), f"{target!r} is a {kind or 'local'}:// source: a "
                                     "migration's ends are destinations, or FTP/FTPS sources")
            ends.append(target)
        if ends[0] == ends[1]:
            raise self.error((*path, "destination"), "the same destination as the source")
        mode = self.string(table, path, "mode")
        if mode is not None and mode not in MODES:
            raise self.error((*path, "mode"), f"unknown mode {mode!r}" + suggest(mode, MODES))
        for key in ("delete", "checksum", "server_side_copy"):
            if key in table and not isinstance(table[key], bool):
                raise self.error((*path, key), f"expected true or false, got {_kind(table[key])}")
        for key, parse in (("min_size", parse_size), ("max_size", parse_size),
                           ("bwlimit", parse_size), ("modified_since", parse_since)):
            text = self.string(table, path, key)
            if text is not None:
                try:
                    parse(text)
                except UsageError as exc:
                    raise self.error((*path, key), str(exc)) from None
        options = {k: v for k, v in {
            "mode": mode, "max_delete": self.integer(table, path, "max_delete", 0),
            "transfers": self.integer(table, path, "transfers", 1, 256),
            "include": self.strings(table, path, "include") or None,
            "exclude": self.strings(table, path, "exclude") or None,
            **{k: table.get(k) for k in ("delete", "checksum", "server_side_copy", "min_size",
                                         "max_size", "bwlimit", "modified_since")},
        }.items() if v is not None}
        return Migration(name, ends[0], ends[1], options)

    def source(self, name: str, table: dict[str, Any]) -> Source:
        path: KeyPath = ("sources", name)
        self.table(table, path, _SOURCE_KEYS)
        url = self.string(table, path, "url", required=True) or ""
        self.source_url(url, (*path, "url"))
        credentials = {key: self.reference(table[key], (*path, key),
                                           CREDENTIAL_FORMS.get(key, SECRET))
                       for key in table if key != "url"}
        return Source(name, url, credentials)

    def source_url(self, url: str, at: KeyPath) -> None:
        """A source URL's own mistakes (no password in it, a known form) at its line."""
        try:
            has_password = urlsplit(url).password is not None
        except ValueError:
            has_password = False
        if has_password:
            raise self.error(at, "a password must not be written in the URL: give "
                                 'password = { env = "VARIABLE" } in [sources.NAME]')
        scheme = scheme_of(url)
        if scheme is None:
            raise self.error(at, f"{url!r} is not a URL (scheme://...)")
        if scheme == "file":
            raise self.error(at, "a file:// source is a local path: give the path itself")
        if scheme not in SOURCE_MODULES:
            try:
                parse_location(url)
            except UsageError as exc:
                raise self.error(at, str(exc)) from None

    def hooks(self, value: Any, path: KeyPath) -> Hooks:
        table = self.table(value, path, _HOOK_KEYS)
        stages = {}
        for key in ("before", "after", "failure", "finally"):
            raw = table.get(key, [])
            if not isinstance(raw, list):
                raise self.error((*path, key), f"expected a list of commands, got {_kind(raw)}")
            cmds = []
            for i, cmd in enumerate(raw):
                at = (*path, key, i)
                if isinstance(cmd, str):
                    if not cmd.strip():
                        raise self.error((*path, key), "empty command", at=at)
                    cmds.append(("/bin/sh", "-c", cmd))
                else:
                    cmds.append(self.argv(cmd, at))
            stages[key] = tuple(cmds)
        timeout = self.integer(table, path, "timeout", 1)
        return Hooks(before=stages["before"], after=stages["after"], failure=stages["failure"],
                     finally_=stages["finally"], timeout=timeout or 600)

    def defaults(self, value: Any) -> Defaults:
        path: KeyPath = ("defaults",)
        table = self.table(value, path, _DEFAULTS_KEYS)
        return Defaults(password=self.password(table, path),
                        cache_dir=self.path_value(table, path, "cache_dir"),
                        host=self.string(table, path, "host"))

    def destination(self, name: str, table: dict[str, Any]) -> Destination:
        path: KeyPath = ("destinations", name)
        self.table(table, path, _DESTINATION_KEYS)
        if "location" in table and "provider" in table:
            raise self.error((*path, "provider"), "give either location or provider, not both")
        if "provider" in table:
            location = self.provider(table, path)
            allowed, kind = _PROVIDER_KEYS, f"provider {table['provider']!r}"
        elif "location" in table:
            location = self.location(table, path)
            allowed = ("location", *_PLACE_BY_SCHEME.get(location.scheme, ()),
                       *sorted(BACKEND_CREDENTIALS.get(location.scheme, ())))
            kind = _KIND_NAMES.get(location.scheme, f"{location.scheme} locations")
        else:
            raise self.error((*path, "location"), "missing (required): give location "
                                                  "(or provider with bucket)", at=path)
        for key in table:
            if key not in allowed:
                takes = ", ".join(k for k in allowed if k not in ("location", "provider"))
                raise self.error((*path, key), f"not used by {kind} (they take: "
                                               f"{takes or 'nothing more'})")
        credentials = {key: self.reference(table[key], (*path, key),
                                           CREDENTIAL_FORMS.get(key, SECRET))
                       for key in table if key in _CREDENTIALS}
        return Destination(name, location, credentials, provider=table.get("provider"))

    def location(self, table: dict[str, Any], path: KeyPath) -> Location:
        text = self.string(table, path, "location", required=True) or ""
        at = (*path, "location")
        try:
            has_password = "://" in text and urlsplit(text).password is not None
        except ValueError:
            has_password = False
        if has_password:  # not echoed, unlike other location errors
            raise self.error(at, "a password must not be written in the location: give "
                                 'password = { env = "VARIABLE" } or { file = "/path" }')
        if "://" not in text and not text.startswith("s3:"):
            local = os.path.expanduser(text.removeprefix("local:"))
            if not os.path.isabs(local):
                raise self.error(at, f"{text!r} is not an absolute path")
            text = "local:" + local
        place = {k: self.string(table, path, k) for k in ("region", "endpoint", "addressing")}
        try:
            location = parse_location(text, s3_endpoint=place["endpoint"],
                                      s3_region=place["region"],
                                      s3_addressing=place["addressing"])
        except UsageError as exc:
            raise self.error(at, str(exc)) from None
        if place["endpoint"] and location.scheme in ("azblob", "gcs"):
            endpoint = place["endpoint"].rstrip("/")
            if not endpoint.startswith(("http://", "https://")):
                raise self.error((*path, "endpoint"), f"invalid endpoint {endpoint!r}: "
                                                      "expected http(s)://host")
            location = replace(location, endpoint=endpoint)
        return location

    def provider(self, table: dict[str, Any], path: KeyPath) -> Location:
        provider = self.string(table, path, "provider") or ""
        bucket = self.string(table, path, "bucket", required=True) or ""
        prefix = table.get("prefix", "")
        if not isinstance(prefix, str):
            raise self.error((*path, "prefix"), f"expected a string, got {_kind(prefix)}")
        try:
            return provider_location(
                provider, bucket, prefix, region=self.string(table, path, "region"),
                endpoint=self.string(table, path, "endpoint"),
                addressing=self.string(table, path, "addressing"),
                account_id=self.string(table, path, "account_id"))
        except UsageError as exc:
            raise self.error((*path, "provider"), str(exc)) from None

    def plan(self, name: str, table: dict[str, Any], defaults: Defaults,
             destinations: dict[str, Destination], named: dict[str, Source]) -> Plan:
        path: KeyPath = ("plans", name)
        self.table(table, path, _PLAN_KEYS)
        given = self.strings(table, path, "sources", required=True)
        sources: list[str] = []
        remote: list[Source] = []
        seen: list[str] = []
        for i, source in enumerate(given):
            at = (*path, "sources", i)
            if scheme_of(source) is not None:
                self.source_url(source, at)
                remote.append(Source(source, source))
                key = source
            elif os.path.isabs(os.path.expanduser(source)):
                key = os.path.normpath(os.path.expanduser(source))
                sources.append(key)
            elif source in named:
                remote.append(named[source])
                key = named[source].url
            else:
                hint = suggest(source, named) if named else ""
                raise self.error((*path, "sources"), f"{source!r} is neither an absolute path, "
                                 f"a URL nor a source in [sources]{hint}", at=at)
            if key in seen:
                raise self.error((*path, "sources"), f"{source!r} is listed twice", at=at)
            seen.append(key)
        targets = self.strings(table, path, "destinations", required=True)
        for i, target in enumerate(targets):
            at = (*path, "destinations", i)
            if target not in destinations:
                raise self.error((*path, "destinations"), f"unknown destination {target!r}"
                                 + suggest(target, destinations), at=at)
            if target in targets[:i]:
                raise self.error((*path, "destinations"), f"{target!r} is listed twice", at=at)
        schedule = None
        text = self.string(table, path, "schedule")
        if text is not None:
            try:
                schedule = parse_schedule(text)
            except ScheduleError as exc:
                raise self.error((*path, "schedule"), str(exc)) from None
        retention = None
        if "retention" in table:
            retention = self.retention(table["retention"], (*path, "retention"), None)
        per_destination = {}
        if "retention_per_destination" in table:
            per_path = (*path, "retention_per_destination")
            raw = table["retention_per_destination"]
            if not isinstance(raw, dict):
                raise self.error(per_path, f"expected a table, got {_kind(raw)}")
            for target, value in raw.items():
                if target not in targets:
                    raise self.error((*per_path, target), f"{target!r} is not one of this "
                                     f"plan's destinations ({', '.join(targets)})")
                per_destination[target] = self.retention(value, (*per_path, target), retention)
        hooks = self.hooks(table["hooks"], (*path, "hooks")) if "hooks" in table else Hooks()
        return Plan(name=name, sources=sources, destinations=targets, remote=remote,
                    hooks=hooks,
                    exclude=self.strings(table, path, "exclude"),
                    tags=self.strings(table, path, "tags"),
                    host=self.string(table, path, "host") or defaults.host,
                    compression=self.integer(table, path, "compression", 0, 22),
                    schedule=schedule, retention=retention,
                    retention_per_destination=per_destination,
                    password_source=self.password(table, path) or defaults.password)

    def retention(self, value: Any, path: KeyPath, base: Policy | None) -> Policy:
        """A policy; with ``base``, its keys are laid over the plan's policy."""
        table = self.table(value, path, tuple(RETENTION_KEYS))
        values = asdict(base) if base is not None else {}
        for key, attr in RETENTION_KEYS.items():
            if key == "keep_within":
                within = self.string(table, path, key)
                if within is not None:
                    try:
                        parse_duration(within)
                    except UsageError as exc:
                        raise self.error((*path, key), str(exc)) from None
                    values[attr] = within
            elif key == "keep_tags":
                if key in table:
                    values[attr] = self.strings(table, path, key)
            else:
                count = self.integer(table, path, key, 0)
                if count is not None:
                    values[attr] = count
        policy = Policy(**values)
        if policy.empty():
            raise self.error(path, "keeps nothing: give at least one keep_* above 0")
        return policy


class _DataReader(_Reader):
    """The file's checks for config given as data: no lines to point at, secret values."""

    def __init__(self, origin: str) -> None:
        super().__init__(origin, KeyLocator(""))

    def error(self, path: KeyPath, message: str, at: KeyPath | None = None) -> UsageError:
        return UsageError(f"{self.file}: {_dotted(path)}: {message}" if path
                          else f"{self.file}: {message}")

    def reference(self, value: Any, path: KeyPath, how: str) -> SecretRef:
        if isinstance(value, dict) and set(value) == {"value"} and how != PATH:
            secret = value["value"]
            if not isinstance(secret, str) or not secret:
                raise self.error(path, "must not be empty")
            return SecretRef("value", secret)
        return super().reference(value, path, how)

    def plan(self, name: str, table: dict[str, Any], defaults: Defaults,
             destinations: dict[str, Destination], named: dict[str, Source]) -> Plan:
        table = dict(table)
        password = table.pop("password", None)
        plan = super().plan(name, table, defaults, destinations, named)
        if password is None:
            return plan
        if not isinstance(password, str) or not password:
            raise self.error(("plans", name, "password"), "must not be empty")
        return replace(plan, password_source=SecretRef("value", password))
